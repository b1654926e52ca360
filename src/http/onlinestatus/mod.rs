//! `/user/onlinestatus`: which of these uids are online, on which device flags. The hot path.
//!
//! Promises `protocol.md` section 2: one row per online (uid, flag), uids in request order, a uid
//! listed twice answered once, offline uids left out, `[]` for `[]`; answered from memory only.
//! The body is read by [`scan`]; the uids are looked up in one batch and the answer is written
//! straight into one buffer here. Must never: touch the disk or SQL, or allocate per looked-up
//! uid on the common path.

mod scan;

use std::borrow::Cow;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::body::Body;
use super::error::Envelope;
use super::openapi::{UidList, UidSchema};
use super::{ApiContext, ApiState};
use crate::domain::DeviceFlag;
use crate::presence::online::CHUNK;
use crate::presence::Presence;
use scan::scan_plain;
pub use scan::{parse_online_status, parse_with_serde, scan_plain_uids};

/// `POST /user/onlinestatus` as the router would serve it. The server never gets here:
/// [`super::front`] answers every such request before the router sees it. The route exists so
/// that the router knows POST is the path's method (its 405 for the others names it), and it
/// answers exactly as the front does should anything ever route a request here.
#[utoipa::path(
    post,
    path = "/user/onlinestatus",
    tag = "users",
    request_body(content = UidList, content_type = "application/json", description = "The uids to look up; read as JSON whatever the Content-Type"),
    responses(
        (status = 200, description = "One row per online (uid, flag), uids in request order, offline uids left out, a uid listed twice answered once", body = Vec<OnlineRow>),
        (status = 400, description = "Malformed JSON, an entry that is not a valid uid (the message names it), or too many", body = Envelope),
    )
)]
pub async fn routed(State(state): State<ApiState>, body: Body) -> Response {
    answer(&state, &body.0)
}

// The document's description of a row; `render` writes the rows itself.
/// One online (uid, device flag).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OnlineRow {
    #[schema(value_type = UidSchema)]
    uid: String,
    #[schema(minimum = 0, maximum = 255)]
    device_flag: u8,
    /// Always 1: offline uids are left out.
    #[schema(minimum = 1, maximum = 1)]
    online: u8,
}

/// The answer to a body that was read whole (by [`super::front`], which serves this route).
pub fn answer(context: &ApiContext, body: &[u8]) -> Response {
    let (max, presence) = (
        context.limits.max_uids_per_request,
        context.write.presence(),
    );
    // Nearly every request: a plain body of at most a chunk of uids, read into an array on
    // the stack rather than pushed to a vector, which showed in profiles of this path.
    let mut plain = [PlainUid(""); CHUNK];
    let mut n = 0;
    let read = scan_plain(body, max.min(CHUNK), |uid| {
        if let Some(slot) = plain.get_mut(n) {
            *slot = PlainUid(uid);
            n += 1;
        }
    });
    if read.is_some() {
        return super::raw_json(StatusCode::OK, render(presence, &plain[..n]));
    }
    match parse_online_status(body, max) {
        Ok(uids) => super::raw_json(StatusCode::OK, render(presence, &uids)),
        Err(e) => e.into_response(),
    }
}

/// A uid as a request named it, written back in the answer as a JSON string.
pub trait RequestedUid: AsRef<str> {
    /// Appends the uid as a JSON string. A uid holds no control characters, so a quote and a
    /// backslash are all it may need escaped; nearly every uid has neither and is copied.
    fn write_json(&self, out: &mut Vec<u8>) {
        let uid = self.as_ref();
        if uid.bytes().any(|b| b == b'"' || b == b'\\') {
            serde_json::to_writer(&mut *out, uid).expect("writing to a Vec cannot fail");
        } else {
            write_quoted(out, uid);
        }
    }
}

impl RequestedUid for Cow<'_, str> {}
impl RequestedUid for String {}
impl RequestedUid for &str {}

/// A uid the plain scanner read: it holds neither a quote nor a backslash (the first quote
/// ends it, a backslash is not plain), so it is written back as it is, without a look.
#[derive(Clone, Copy)]
struct PlainUid<'a>(&'a str);

impl AsRef<str> for PlainUid<'_> {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl RequestedUid for PlainUid<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_quoted(out, self.0);
    }
}

fn write_quoted(out: &mut Vec<u8>, uid: &str) {
    out.extend_from_slice(b"\"");
    out.extend_from_slice(uid.as_bytes());
    out.extend_from_slice(b"\"");
}

/// Writes the answer for `uids` (already valid) as JSON.
pub fn render<S: RequestedUid>(presence: &Presence, uids: &[S]) -> Vec<u8> {
    // Room for a row for every second uid (a row is about 50 bytes): one allocation for
    // most answers.
    let mut out = Vec::with_capacity(64 + uids.len() * 26);
    out.push(b'[');
    presence.for_each_online(uids, |i, flag| {
        let first = out.len() == 1;
        write_row(&mut out, first, &uids[i], flag);
    });
    out.push(b']');
    out
}

/// `{"uid":…,"device_flag":…,"online":1}`, the keys in the contract's order, after a comma
/// unless it is the `first` row.
fn write_row(out: &mut Vec<u8>, first: bool, uid: &impl RequestedUid, flag: DeviceFlag) {
    let head: &[u8] = if first { b"{\"uid\":" } else { b",{\"uid\":" };
    out.extend_from_slice(head);
    uid.write_json(out);
    out.extend_from_slice(b",\"device_flag\":");
    out.extend_from_slice(decimal(flag.0, &mut [0; 3]));
    out.extend_from_slice(b",\"online\":1}");
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u8, buf: &mut [u8; 3]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + n % 10;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Connected;
    use crate::domain::{DeviceId, DeviceLevel, Event, NodeId, SessionId, Uid};

    #[test]
    fn device_flags_are_written_in_decimal() {
        for n in [0u8, 7, 10, 99, 100, 255] {
            assert_eq!(decimal(n, &mut [0; 3]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn duplicates_are_answered_once_among_many_online_uids() {
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
            serde_json::from_slice(&render(&presence, &request)).unwrap();
        let expected: Vec<serde_json::Value> = uids
            .iter()
            .map(|u| serde_json::json!({"uid": u, "device_flag": 1, "online": 1}))
            .collect();
        assert_eq!(answer, serde_json::Value::Array(expected));
    }
}
