//! `/user/systemuids`, `/user/systemuids_add`, `/user/systemuids_remove`: the application's
//! trusted accounts.
//!
//! Promises: add and remove are idempotent and durable before `{"status":200}`; the list is
//! answered sorted, from memory. Must never: accept `____system` or an invalid uid.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::body::{object, Body};
use super::error::{ApiError, Envelope};
use super::openapi::{Acknowledged, UidList, UidSchema};
use super::{json_response, ok, ApiState};
use crate::domain::{Command, Uid};

// The document's description of the body; `parse_system_uids` reads it.
/// The uids to add or remove, each validated.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SystemUidsBody {
    #[schema(value_type = UidList)]
    uids: Vec<String>,
}

/// Reads a `/user/systemuids_add` or `_remove` body (`{"uids":[...]}`, at most `max_uids`) into
/// its uids, each validated, or the 400 naming the wrong one. Pure; the handlers serve exactly
/// this (and `fuzz/` fuzzes it).
pub fn parse_system_uids(body: &[u8], max_uids: usize) -> Result<Vec<Uid>, ApiError> {
    object(body)?.uid_list("uids", max_uids)
}

#[utoipa::path(
    get,
    path = "/user/systemuids",
    tag = "users",
    responses((status = 200, description = "The system uids, sorted (`[]` when none)", body = Vec<UidSchema>))
)]
pub async fn list(State(state): State<ApiState>) -> Response {
    json_response(StatusCode::OK, &state.write.presence().system_uids())
}

#[utoipa::path(
    post,
    path = "/user/systemuids_add",
    tag = "users",
    request_body(content = SystemUidsBody, content_type = "application/json", description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "Added (idempotent), durable", body = Acknowledged),
        (status = 400, description = "Malformed JSON, a wrong uid (the message names it), or too many", body = Envelope),
        (status = 500, description = "The event log cannot be used right now; nothing was changed", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn add(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    change(state, body, true).await
}

#[utoipa::path(
    post,
    path = "/user/systemuids_remove",
    tag = "users",
    request_body(content = SystemUidsBody, content_type = "application/json", description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "Removed (idempotent), durable", body = Acknowledged),
        (status = 400, description = "Malformed JSON, a wrong uid (the message names it), or too many", body = Envelope),
        (status = 500, description = "The event log cannot be used right now; nothing was changed", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn remove(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    change(state, body, false).await
}

async fn change(state: ApiState, body: Body, adding: bool) -> Result<Response, ApiError> {
    let uids = parse_system_uids(&body.0, state.limits.max_uids_per_request)?;
    let command = if adding {
        Command::AddSystemUids { uids }
    } else {
        Command::RemoveSystemUids { uids }
    };
    state.write.execute_detached(command).await?;
    Ok(ok())
}
