//! `/user/systemuids`, `/user/systemuids_add`, `/user/systemuids_remove`: the application's
//! trusted accounts.
//!
//! Promises: add and remove are idempotent and durable before `{"status":200}`; the list is
//! answered sorted, from memory. Must never: accept `____system` or an invalid uid.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::body::{object, Body};
use super::error::ApiError;
use super::{json_response, ok, ApiState};
use crate::domain::{Command, Uid};

/// Reads a `/user/systemuids_add` or `_remove` body (`{"uids":[...]}`, at most `max_uids`) into
/// its uids, each validated, or the 400 naming the wrong one. Pure; the handlers serve exactly
/// this (and `fuzz/` fuzzes it).
pub fn parse_system_uids(body: &[u8], max_uids: usize) -> Result<Vec<Uid>, ApiError> {
    object(body)?.uid_list("uids", max_uids)
}

#[utoipa::path(get, path = "/user/systemuids")]
pub async fn list(State(state): State<ApiState>) -> Response {
    json_response(StatusCode::OK, &state.write.presence().system_uids())
}

#[utoipa::path(post, path = "/user/systemuids_add")]
pub async fn add(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    change(state, body, true).await
}

#[utoipa::path(post, path = "/user/systemuids_remove")]
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
