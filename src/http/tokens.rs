//! `/user/token` and `/user/device_quit`: what an application server says about a user's
//! devices.
//!
//! Promises `protocol.md` section 2: fields validated with errors that name them, `{"status":200}`
//! only after the events are durable, kicks carried out by the write path. Must never: keep,
//! log or echo the token (it is hashed here and dropped).

use axum::extract::State;
use axum::response::Response;

use super::body::{object, Body};
use super::error::{ApiError, Envelope};
use super::openapi::{Acknowledged, UidSchema};
use super::{ok, ApiState};
use crate::domain::{Command, DeviceFlag, DeviceLevel, QuitScope, Token};

// The document's description of the body; `parse_set_token` reads the body itself (field by
// field, for messages that name the field), never into this type.
/// Sets the token and level of (uid, device_flag). Unknown fields are ignored; a null counts
/// as absent; integers must be written as integers (`1.0` is refused).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SetTokenBody {
    #[schema(value_type = UidSchema)]
    uid: String,
    /// The device's token: kept only as its hash.
    #[schema(min_length = 1, max_length = 4096)]
    token: String,
    #[schema(minimum = 0, maximum = 255)]
    device_flag: i64,
    /// 0 slave (several devices of the flag together), 1 master (one; sets kick the others).
    /// Absent or null: 0.
    #[schema(minimum = 0, maximum = 1)]
    device_level: Option<i64>,
}

// The document's description of the body; `parse_device_quit` reads it.
/// Clears the token of (uid, device_flag), or of every flag, and kicks their sessions.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeviceQuitBody {
    #[schema(value_type = UidSchema)]
    uid: String,
    /// One flag, or -1 for every flag of the uid.
    #[schema(minimum = -1, maximum = 255)]
    device_flag: i64,
}

/// Reads a `/user/token` body into its [`Command::SetToken`] (the token hashed, then dropped),
/// or the 400 naming the wrong field. Pure; the handler serves exactly this (and `fuzz/`
/// fuzzes it).
pub fn parse_set_token(body: &[u8]) -> Result<Command, ApiError> {
    let fields = object(body)?;
    let uid = fields.uid("uid")?;
    let token = Token::parse(fields.required_str("token")?)
        .ok_or_else(|| ApiError::bad("token must be 1 to 4096 bytes"))?;
    let flag_rule = "an integer from 0 to 255";
    let device_flag = fields
        .int("device_flag", flag_rule)?
        .ok_or_else(|| ApiError::bad("device_flag is required"))
        .and_then(|n| {
            DeviceFlag::parse(n)
                .ok_or_else(|| ApiError::bad(format!("device_flag must be {flag_rule}")))
        })?;
    let device_level = match fields.int("device_level", "0 or 1")? {
        None => DeviceLevel::Slave,
        Some(n) => {
            DeviceLevel::parse(n).ok_or_else(|| ApiError::bad("device_level must be 0 or 1"))?
        }
    };
    Ok(Command::SetToken {
        uid,
        device_flag,
        device_level,
        token_hash: token.hash(),
    })
}

/// Reads a `/user/device_quit` body into its [`Command::QuitDevice`], or the 400 naming the
/// wrong field. Pure; the handler serves exactly this (and `fuzz/` fuzzes it).
pub fn parse_device_quit(body: &[u8]) -> Result<Command, ApiError> {
    let fields = object(body)?;
    let uid = fields.uid("uid")?;
    let rule = "an integer from -1 to 255 (-1: every flag)";
    let scope = fields
        .int("device_flag", rule)?
        .ok_or_else(|| ApiError::bad("device_flag is required"))
        .and_then(|n| {
            QuitScope::parse(n).ok_or_else(|| ApiError::bad(format!("device_flag must be {rule}")))
        })?;
    Ok(Command::QuitDevice { uid, scope })
}

#[utoipa::path(
    post,
    path = "/user/token",
    tag = "users",
    request_body(content = SetTokenBody, content_type = "application/json", description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "Durable: the token is set (a master-level one kicked the uid and flag's sessions)", body = Acknowledged),
        (status = 400, description = "Malformed JSON or a wrong field (the message names it)", body = Envelope),
        (status = 500, description = "The event log cannot be used right now; nothing was changed", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn set_token(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    state
        .write
        .execute_detached(parse_set_token(&body.0)?)
        .await?;
    Ok(ok())
}

#[utoipa::path(
    post,
    path = "/user/device_quit",
    tag = "users",
    request_body(content = DeviceQuitBody, content_type = "application/json", description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "Durable: the token is cleared and the flag's sessions kicked (idempotent)", body = Acknowledged),
        (status = 400, description = "Malformed JSON or a wrong field (the message names it)", body = Envelope),
        (status = 500, description = "The event log cannot be used right now; nothing was changed", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn device_quit(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    state
        .write
        .execute_detached(parse_device_quit(&body.0)?)
        .await?;
    Ok(ok())
}
