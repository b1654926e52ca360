//! The view's columns read back into the domain's types, for every engine.
//!
//! Owns what a stored value must be to be read: a uid that parses, a flag in range, a known
//! close reason. Promises: a value this build cannot read is reported as
//! [`ViewError::Malformed`], naming the column and the value, never guessed at. Must never:
//! query a database (each engine reads its rows and hands the values here).

use super::ViewError;
use crate::domain::*;

pub(crate) fn malformed(what: impl std::fmt::Display) -> ViewError {
    ViewError::Malformed(what.to_string())
}

/// The migration writes the checkpoint's one row: a view without it is malformed, not empty.
pub(crate) fn no_checkpoint() -> ViewError {
    malformed("projector_checkpoint has no row")
}

pub(crate) fn uid_col(s: &str) -> Result<Uid, ViewError> {
    Uid::parse(s).map_err(|e| malformed(format_args!("uid {s:?}: {e}")))
}

pub(crate) fn flag_col(n: i64) -> Result<DeviceFlag, ViewError> {
    DeviceFlag::parse(n).ok_or_else(|| malformed(format_args!("device_flag {n}")))
}

pub(crate) fn level_col(n: i64) -> Result<DeviceLevel, ViewError> {
    DeviceLevel::parse(n).ok_or_else(|| malformed(format_args!("device_level {n}")))
}

pub(crate) fn session_col(s: &str) -> Result<SessionId, ViewError> {
    SessionId::parse(s).ok_or_else(|| malformed(format_args!("session_id {s:?}")))
}

pub(crate) fn device_col(s: &str) -> Result<DeviceId, ViewError> {
    DeviceId::parse(s).ok_or_else(|| malformed(format_args!("device_id {s:?}")))
}

pub(crate) fn reason_col(s: Option<String>) -> Result<Option<CloseReason>, ViewError> {
    s.map(|r| CloseReason::parse(&r).ok_or_else(|| malformed(format_args!("reason {r:?}"))))
        .transpose()
}

/// A token slot from its stored hash (`None`: cleared by a device quit) and level.
pub(crate) fn token_slot(hash: Option<String>, level: i64) -> Result<TokenSlot, ViewError> {
    Ok(match hash {
        None => TokenSlot::Cleared,
        Some(h) => TokenSlot::Active {
            hash: TokenHash::from_hex(&h).ok_or_else(|| malformed("token_hash"))?,
            level: level_col(level)?,
        },
    })
}
