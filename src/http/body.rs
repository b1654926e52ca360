//! Request bodies: JSON whatever the `Content-Type` (as upstream), bounded in size, and read
//! into named fields with errors that say which field is wrong and how.
//!
//! Promises: a body over the limit is a 413 envelope, malformed JSON or a wrong field a 400
//! envelope naming it; a JSON `null` counts as an absent field. Must never: panic on any input.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::ApiState;
use crate::domain::{Uid, UidError};

/// The raw body, read under the configured limit.
pub struct Body(pub Bytes);

impl FromRequest<ApiState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge(state.limits.max_body_bytes))
            }
            Err(e) => Err(ApiError::bad(format!("cannot read the body: {e}"))),
        }
    }
}

/// `bytes` as JSON, or the 400 saying where it is malformed.
pub fn json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("body is not valid JSON: {e}")))
}

/// `bytes` as a JSON object.
pub fn object(bytes: &[u8]) -> Result<Fields, ApiError> {
    match json(bytes)? {
        Value::Object(map) => Ok(Fields(map)),
        _ => Err(ApiError::bad("body must be a JSON object")),
    }
}

/// The message for a bad uid, naming where it was.
pub fn uid_error(place: &str, e: UidError) -> ApiError {
    ApiError::bad(format!("{place} is not a valid uid: it {e}"))
}

pub fn parse_uid(place: &str, s: &str) -> Result<Uid, ApiError> {
    Uid::parse(s).map_err(|e| uid_error(place, e))
}

/// The fields of a JSON object body.
pub struct Fields(Map<String, Value>);

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn required<'a>(&'a self, name: &str) -> Result<&'a Value, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad(format!("{name} is required")))
    }

    pub fn required_str<'a>(&'a self, name: &str) -> Result<&'a str, ApiError> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| ApiError::bad(format!("{name} must be a string")))
    }

    pub fn uid(&self, name: &str) -> Result<Uid, ApiError> {
        parse_uid(name, self.required_str(name)?)
    }

    /// An integer field; `what` describes its range for the error message.
    pub fn int(&self, name: &str, what: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::bad(format!("{name} must be {what}"))),
        }
    }

    /// A list of uids, at most `max`, each validated.
    pub fn uid_list(&self, name: &str, max: usize) -> Result<Vec<Uid>, ApiError> {
        let Value::Array(items) = self.required(name)? else {
            return Err(ApiError::bad(format!("{name} must be an array of uids")));
        };
        if items.len() > max {
            return Err(ApiError::bad(format!(
                "{name} holds {} uids; at most {max} are allowed",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let place = format!("{name}[{i}]");
                let s = v
                    .as_str()
                    .ok_or_else(|| ApiError::bad(format!("{place} must be a string")))?;
                parse_uid(&place, s)
            })
            .collect()
    }
}
