//! The manager token: when one is configured, every API request carries it in the `token`
//! header (upstream's convention).
//!
//! Promises: the comparison takes the same time whatever the guess (both sides are hashed to
//! 32 bytes, then compared in constant time, so not even the length leaks). Must never: log
//! the header.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::ApiState;

/// The configured manager token, kept only as its digest.
#[derive(Clone)]
pub struct ManagerToken([u8; 32]);

impl ManagerToken {
    pub fn new(token: &str) -> Self {
        ManagerToken(Sha256::digest(token.as_bytes()).into())
    }

    pub fn admits(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&digest).into()
    }
}

pub async fn require_manager_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.manager_token {
        let presented = request.headers().get("token").map(|v| v.as_bytes());
        if !presented.is_some_and(|p| expected.admits(p)) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}
