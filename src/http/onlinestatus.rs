//! `/user/onlinestatus`: which of these uids are online, on which device flags. The hot path.
//!
//! Promises `protocol.md` section 2: one row per online (uid, flag), uids in request order, a uid
//! listed twice answered once, offline uids left out, `[]` for `[]`; answered from memory only.
//! The body is parsed into borrowed strings (no allocation per uid unless it has escapes) and the
//! answer is written straight into one buffer. Must never: touch the disk or SQL, or allocate per
//! looked-up uid on the common path.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::body::{json, uid_error, Body};
use super::error::ApiError;
use super::ApiState;
use crate::domain::Uid;
use crate::presence::Presence;

#[derive(Deserialize)]
struct BorrowedUid<'a>(#[serde(borrow)] Cow<'a, str>);

/// Reads a `/user/onlinestatus` body (a JSON array of at most `max_uids` uids) into the uids,
/// each valid, in request order (duplicates kept: [`render`] answers each once), borrowed from
/// `body` unless escaped; or the 400 naming the problem. Pure; the handler serves exactly this
/// (and `fuzz/` fuzzes it).
pub fn parse_online_status(body: &[u8], max_uids: usize) -> Result<Vec<Cow<'_, str>>, ApiError> {
    let uids: Vec<BorrowedUid<'_>> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Err(explain(body, max_uids)),
    };
    if uids.len() > max_uids {
        return Err(too_many(uids.len(), max_uids));
    }
    for (i, u) in uids.iter().enumerate() {
        Uid::check(&u.0).map_err(|e| uid_error(&format!("uids[{i}]"), e))?;
    }
    // Same layout: collected in place, no allocation.
    Ok(uids.into_iter().map(|u| u.0).collect())
}

pub async fn online_status(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Response, ApiError> {
    let uids = parse_online_status(&body.0, state.limits.max_uids_per_request)?;
    let out = render(state.service.presence(), uids.iter().map(|u| u.as_ref()));
    Ok(super::raw_json(StatusCode::OK, out))
}

/// Writes the answer for `uids` (already valid) as JSON.
pub fn render<'a>(presence: &Presence, uids: impl ExactSizeIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + uids.len() * 8);
    out.push(b'[');
    // A uid listed twice is answered once. Offline uids write nothing, so only the online
    // ones (a small part of a request) need remembering.
    let mut answered = Answered::default();
    for uid in uids {
        let mut emit = None;
        presence.for_each_online_flag(uid, |flag| {
            if !*emit.get_or_insert_with(|| answered.first_time(uid)) {
                return;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"uid\":");
            serde_json::to_writer(&mut out, uid).expect("writing to a Vec cannot fail");
            out.extend_from_slice(b",\"device_flag\":");
            push_u8(&mut out, flag.0);
            out.extend_from_slice(b",\"online\":1}");
        });
    }
    out.push(b']');
    out
}

/// The online uids answered so far: a short list, a set once it grows.
#[derive(Default)]
struct Answered<'a> {
    list: Vec<&'a str>,
    set: Option<ahash::HashSet<&'a str>>,
}

impl<'a> Answered<'a> {
    const LIST_MAX: usize = 16;

    /// Records `uid`; false when it was answered before.
    fn first_time(&mut self, uid: &'a str) -> bool {
        match &mut self.set {
            Some(set) => set.insert(uid),
            None if self.list.contains(&uid) => false,
            None => {
                self.list.push(uid);
                if self.list.len() > Self::LIST_MAX {
                    self.set = Some(self.list.drain(..).collect());
                }
                true
            }
        }
    }
}

fn push_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10) % 10);
    }
    out.push(b'0' + n % 10);
}

fn too_many(n: usize, max: usize) -> ApiError {
    ApiError::bad(format!(
        "{n} uids requested; at most {max} are allowed per request"
    ))
}

/// The slow path: the body did not parse as a list of strings; say exactly why.
fn explain(body: &[u8], max: usize) -> ApiError {
    let value = match json(body) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Value::Array(items) = value else {
        return ApiError::bad("body must be a JSON array of uids");
    };
    if items.len() > max {
        return too_many(items.len(), max);
    }
    match items.iter().position(|v| !v.is_string()) {
        Some(i) => ApiError::bad(format!("uids[{i}] must be a string")),
        None => ApiError::bad("body must be a JSON array of uids"),
    }
}
