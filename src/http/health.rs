//! `/healthz` (the process answers) and `/readyz` (recovery is over, the gateway accepts
//! connections, and a shared database is reachable). Neither needs the manager token, so
//! probes need no secret.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::Response;

use super::error::{ApiError, Envelope};
use super::openapi::Acknowledged;
use super::{ok, ApiState};

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operating",
    responses((status = 200, description = "The process answers", body = Acknowledged))
)]
pub async fn healthz() -> Response {
    ok()
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operating",
    responses(
        (status = 200, description = "Recovered, accepting connections, the shared database reachable", body = Acknowledged),
        (status = 503, description = "Not ready", body = Envelope),
    )
)]
pub async fn readyz(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let reachable = state
        .storage_reachable
        .as_ref()
        .is_none_or(|r| r.load(Ordering::Acquire));
    if state.ready.load(Ordering::Acquire) && reachable {
        Ok(ok())
    } else {
        Err(ApiError::Unavailable("not ready"))
    }
}
