//! `/healthz` (the process answers) and `/readyz` (recovery is over and the gateway accepts
//! connections). Neither needs the manager token, so probes need no secret.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::Response;

use super::error::ApiError;
use super::{ok, ApiState};

pub async fn healthz() -> Response {
    ok()
}

pub async fn readyz(State(state): State<ApiState>) -> Result<Response, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(ok())
    } else {
        Err(ApiError::Unavailable("not ready"))
    }
}
