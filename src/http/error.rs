//! The HTTP error type: every failure of the API renders itself as the contract's envelope,
//! `{"msg":"<for a person>","status":N}`, with the same N as the HTTP status.
//!
//! Promises: no internals in a message (storage errors are logged, not shown). Must never:
//! answer an error in any other shape, or panic.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::log::LogError;
use crate::view::ViewError;
use crate::write::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Says which header it wants: a caller who sent the token elsewhere (`Authorization`, a
    /// query parameter) learns where it goes, and nothing about the token itself.
    #[error(
        "missing or wrong manager token: send it in the {:?} header",
        super::auth::HEADER
    )]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Cannot serve this now, and the caller may retry: not ready (`/readyz`).
    #[error("{0}")]
    Unavailable(&'static str),
    /// An internal failure (`protocol.md` section 2: 500), the event log's included; the
    /// message says what a caller can do about it, never what failed inside.
    #[error("{0}")]
    Internal(&'static str),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The envelope, in the contract's key order.
#[derive(Serialize)]
struct Envelope<'a> {
    msg: &'a str,
    status: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = self.to_string();
        super::json_response(
            status,
            &Envelope {
                msg: &msg,
                status: status.as_u16(),
            },
        )
    }
}

/// The contract's answer while the shared database cannot be reached (protocol.md 6.5).
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable, retry later";

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        tracing::error!(error = %e, "request failed on the event log");
        // In doubt, the database went away with the answer: retry later too, and never "nothing
        // was changed", which may be false.
        if let LogError::Unavailable(_) | LogError::InDoubt(_) = e {
            return ApiError::Unavailable(STORAGE_UNAVAILABLE);
        }
        // The contract's internal failure. Said so that it holds for a read served from the
        // log (`/events`) as for a write: nothing was changed either way (a write is
        // acknowledged only once durable, and a failed batch is taken back).
        ApiError::Internal(
            "the event log cannot be used right now; nothing was changed, retry later",
        )
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Log(e) => e.into(),
            WriteError::Rejected(r) => ApiError::BadRequest(r.to_string()),
            WriteError::Fenced => ApiError::Unavailable(STORAGE_UNAVAILABLE),
        }
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> Self {
        tracing::error!(error = %e, "request failed on the SQL view");
        if let ViewError::Unavailable(_) = e {
            return ApiError::Unavailable(STORAGE_UNAVAILABLE);
        }
        ApiError::Internal("internal error")
    }
}
