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

/// The types a row of either engine hands over for the session columns.
pub(crate) trait SessionRow: sqlx::Row
where
    usize: sqlx::ColumnIndex<Self>,
{
}

impl SessionRow for sqlx::sqlite::SqliteRow {}
impl SessionRow for sqlx::postgres::PgRow {}

/// A history row: `session_id, device_flag, device_level, device_id, node_id, peer,
/// connected_at, disconnected_at, reason`, the session ids as text.
pub(crate) fn session_record<R>(row: &R, uid: &Uid) -> Result<super::SessionRecord, ViewError>
where
    R: SessionRow,
    usize: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::SessionRecord {
        session_id: session_col(row.try_get(0)?)?,
        uid: uid.clone(),
        device_flag: flag_col(row.try_get(1)?)?,
        device_level: level_col(row.try_get(2)?)?,
        device_id: device_col(row.try_get(3)?)?,
        node_id: NodeId(row.try_get::<i64, _>(4)? as u64),
        peer: row.try_get(5)?,
        connected_at: row.try_get(6)?,
        disconnected_at: row.try_get(7)?,
        reason: reason_col(row.try_get(8)?)?,
    })
}

/// An open session's row for memory: `session_id, uid, device_flag, device_level, device_id,
/// node_id`, the session ids as text.
pub(crate) fn open_session<R>(row: &R) -> Result<(Uid, OpenSession), ViewError>
where
    R: SessionRow,
    usize: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok((
        uid_col(row.try_get(1)?)?,
        OpenSession {
            session_id: session_col(row.try_get(0)?)?,
            device_flag: flag_col(row.try_get(2)?)?,
            device_level: level_col(row.try_get(3)?)?,
            device_id: device_col(row.try_get(4)?)?,
            node_id: NodeId(row.try_get::<i64, _>(5)? as u64),
        },
    ))
}
