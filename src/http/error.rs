//! The HTTP error type: every failure of the API renders itself as the contract's envelope,
//! `{"msg":"<for a person>","status":N}`, with the same N as the HTTP status.
//!
//! Promises: no internals in a message (storage errors are logged, not shown). Must never:
//! answer an error in any other shape, or panic.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::log::LogError;
use crate::view::ViewError;
use crate::write::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Begins with the contract's `unauthorized` and names both places the token may go
    /// (`protocol.md` section 9): a caller who sent it elsewhere (a query parameter, another
    /// scheme) learns where it goes, and nothing about the token itself.
    #[error(
        "unauthorized: missing or wrong manager token; send it in the {:?} header or as \"Authorization: {} <token>\"",
        super::auth::HEADER,
        super::auth::BEARER
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

/// Every error: `{"msg":"<for a person>","status":N}`, N the HTTP status; the keys in the
/// contract's order.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorEnvelope)]
pub struct Envelope<'a> {
    /// What is wrong, for a person (never internals).
    #[schema(min_length = 1)]
    msg: &'a str,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = self.to_string();
        let mut response = super::json_response(
            status,
            &Envelope {
                msg: &msg,
                status: status.as_u16(),
            },
        );
        if let ApiError::Unauthorized = self {
            // RFC 9110 11.6.1: a 401 names a scheme the server takes. The `token` header has
            // no scheme of its own; the message names it.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="wkuser""#),
            );
        }
        response
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
