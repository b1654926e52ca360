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
    let requested = uids.len();
    // About a row for every fourth uid: one allocation for most answers.
    let mut out = Vec::with_capacity(64 + requested * 16);
    out.push(b'[');
    // A uid listed twice is answered once. Offline uids write nothing, so only the online
    // ones (a small part of a request) need remembering.
    let mut answered = Answered::new(requested);
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

/// The online uids answered so far: a short list on the stack, then a set sized once for the
/// whole request.
struct Answered<'a> {
    list: [&'a str; Answered::LIST_MAX],
    len: usize,
    set: Option<ahash::HashSet<&'a str>>,
    requested: usize,
}

impl<'a> Answered<'a> {
    const LIST_MAX: usize = 16;

    fn new(requested: usize) -> Self {
        Answered {
            list: [""; Self::LIST_MAX],
            len: 0,
            set: None,
            requested,
        }
    }

    /// Records `uid`; false when it was answered before.
    fn first_time(&mut self, uid: &'a str) -> bool {
        if let Some(set) = &mut self.set {
            return set.insert(uid);
        }
        if self.list[..self.len].contains(&uid) {
            return false;
        }
        if self.len < Self::LIST_MAX {
            self.list[self.len] = uid;
            self.len += 1;
        } else {
            let mut set =
                ahash::HashSet::with_capacity_and_hasher(self.requested, Default::default());
            set.extend(self.list.iter().copied());
            set.insert(uid);
            self.set = Some(set);
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Connected;
    use crate::domain::{DeviceFlag, DeviceId, DeviceLevel, Event, NodeId, SessionId};

    #[test]
    fn duplicates_are_answered_once_past_the_short_list_too() {
        let presence = Presence::new();
        let uids: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        for uid in &uids {
            presence.apply(&Event::Connected(Connected {
                session_id: SessionId::new(),
                uid: Uid::parse(uid).unwrap(),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse("d").unwrap(),
                node_id: NodeId(1),
                peer: String::new(),
            }));
        }
        // Every uid twice, the second time after all the others, plus an offline one.
        let request: Vec<&str> = uids
            .iter()
            .chain(uids.iter())
            .map(String::as_str)
            .chain(["nobody"])
            .collect();
        let answer: serde_json::Value =
            serde_json::from_slice(&render(&presence, request.into_iter())).unwrap();
        let expected: Vec<serde_json::Value> = uids
            .iter()
            .map(|u| serde_json::json!({"uid": u, "device_flag": 1, "online": 1}))
            .collect();
        assert_eq!(answer, serde_json::Value::Array(expected));
    }
}
