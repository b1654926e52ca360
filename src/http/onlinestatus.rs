//! `/user/onlinestatus`: which of these uids are online, on which device flags. The hot path.
//!
//! Promises `protocol.md` section 2: one row per online (uid, flag), uids in request order, a uid
//! listed twice answered once, offline uids left out, `[]` for `[]`; answered from memory only.
//! A plain body (what application servers send) is read by a hand-written scanner into strings
//! borrowed from it; anything else goes through serde, which gives the same answer and explains
//! errors. The uids are looked up in one batch and the answer is written straight into one
//! buffer. Must never: touch the disk or SQL, or allocate per looked-up uid on the common path.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::body::{json, uid_error};
use super::error::ApiError;
use super::ApiContext;
use crate::domain::{DeviceFlag, Uid};
use crate::presence::online::CHUNK;
use crate::presence::Presence;

#[derive(Deserialize)]
struct BorrowedUid<'a>(#[serde(borrow)] Cow<'a, str>);

/// Reads a `/user/onlinestatus` body (a JSON array of at most `max_uids` uids) into the uids,
/// each valid, in request order (duplicates kept: [`render`] answers each once), borrowed from
/// `body` unless escaped; or the 400 naming the problem. Pure; the handler serves exactly this
/// (and `fuzz/` fuzzes it, checking that both paths below agree).
pub fn parse_online_status(body: &[u8], max_uids: usize) -> Result<Vec<Cow<'_, str>>, ApiError> {
    match scan_plain_uids(body, max_uids) {
        Some(uids) => Ok(uids),
        None => parse_with_serde(body, max_uids),
    }
}

/// Per byte inside a uid's JSON string, on the fast path: 0 for a byte that is a valid uid
/// byte as it is, non-zero for anything the fast path leaves to serde (an escape, a byte a uid
/// may not hold as such, the bytes of non-ASCII characters): the uid table, plus the backslash
/// that starts a JSON escape.
static STRING_BYTE: [u8; 256] = {
    let mut t = crate::domain::UID_BYTE_CLASS;
    t[b'\\' as usize] = 1;
    t
};

/// The fast path, for the bodies application servers send: `[` uids `]`, each uid printable
/// ASCII with nothing escaped, JSON whitespace anywhere between. Every uid it accepts is valid
/// as it stands in the body, so it is borrowed without a copy or a second check. `None` for
/// anything else (an escape, a non-ASCII or invalid uid, too many uids, malformed JSON): the
/// serde path then answers, so both paths give the same answer to every body.
pub fn scan_plain_uids(body: &[u8], max_uids: usize) -> Option<Vec<Cow<'_, str>>> {
    let mut uids = Vec::with_capacity((body.len() / 8).min(max_uids));
    scan_plain(body, max_uids, |uid| uids.push(Cow::Borrowed(uid)))?;
    Some(uids)
}

/// The scanner behind [`scan_plain_uids`]: calls `each` with every uid in order, then says
/// whether the whole body was plain (if not, what `each` saw means nothing).
fn scan_plain<'a>(body: &'a [u8], max_uids: usize, mut each: impl FnMut(&'a str)) -> Option<()> {
    let text = std::str::from_utf8(body).ok()?;
    let bytes = text.as_bytes();
    let skip_ws = |mut at: usize| {
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
            at += 1;
        }
        at
    };
    let mut at = skip_ws(0);
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    at = skip_ws(at + 1);
    if bytes.get(at) == Some(&b']') {
        return (skip_ws(at + 1) == bytes.len()).then_some(());
    }
    let mut count = 0;
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let start = at + 1;
        // The closing quote is the first one: an escaped quote needs a backslash before it,
        // and a backslash sends the body to serde below.
        let end = start + memchr::memchr(b'"', &bytes[start..])?;
        let plain = bytes[start..end]
            .iter()
            .fold(0u8, |acc, &b| acc | STRING_BYTE[b as usize]);
        if plain != 0 {
            return None;
        }
        let uid = &text[start..end];
        if uid.is_empty()
            || uid.len() > crate::domain::MAX_UID_BYTES
            || uid == crate::domain::RESERVED_UID
            || count == max_uids
        {
            return None;
        }
        each(uid);
        count += 1;
        at = skip_ws(end + 1);
        match bytes.get(at)? {
            b',' => at = skip_ws(at + 1),
            b']' => return (skip_ws(at + 1) == bytes.len()).then_some(()),
            _ => return None,
        }
    }
}

/// The general path: any JSON, escapes and all, with an error that says what is wrong.
pub fn parse_with_serde(body: &[u8], max_uids: usize) -> Result<Vec<Cow<'_, str>>, ApiError> {
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

/// The answer to a body that was read whole (by [`super::front`], which serves this route).
pub fn answer(context: &ApiContext, body: &[u8]) -> Response {
    let (max, presence) = (
        context.limits.max_uids_per_request,
        context.service.presence(),
    );
    // Nearly every request: a plain body of at most a chunk of uids, read into an array on
    // the stack (pushing to a vector alone was 2% of the server's time here, in a profile).
    let mut plain = [""; CHUNK];
    let mut n = 0;
    let read = scan_plain(body, max.min(CHUNK), |uid| {
        if let Some(slot) = plain.get_mut(n) {
            *slot = uid;
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

/// Writes the answer for `uids` (already valid) as JSON.
pub fn render<S: AsRef<str>>(presence: &Presence, uids: &[S]) -> Vec<u8> {
    // Room for a row for every second uid (a row is about 50 bytes): one allocation for
    // most answers.
    let mut out = Vec::with_capacity(64 + uids.len() * 26);
    out.push(b'[');
    presence.for_each_online(uids, |i, flag| {
        let first = out.len() == 1;
        write_row(&mut out, first, uids[i].as_ref(), flag);
    });
    out.push(b']');
    out
}

/// `{"uid":…,"device_flag":…,"online":1}`, the keys in the contract's order, after a comma
/// unless it is the `first` row.
fn write_row(out: &mut Vec<u8>, first: bool, uid: &str, flag: DeviceFlag) {
    let head: &[u8] = if first { b"{\"uid\":" } else { b",{\"uid\":" };
    out.extend_from_slice(head);
    // A uid holds no control characters, so a quote and a backslash are all JSON escapes;
    // nearly every uid has neither and is copied as it is.
    if uid.bytes().any(|b| b == b'"' || b == b'\\') {
        serde_json::to_writer(&mut *out, uid).expect("writing to a Vec cannot fail");
    } else {
        out.extend_from_slice(b"\"");
        out.extend_from_slice(uid.as_bytes());
        out.extend_from_slice(b"\"");
    }
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

    /// Bodies at the edges of the scanner: what it takes must equal the serde path's answer,
    /// and what it leaves must still get serde's answer through `parse_online_status`.
    #[test]
    fn the_scanner_agrees_with_serde_or_leaves_the_body_to_it() {
        let long = format!("[\"{}\"]", "x".repeat(255));
        let too_long = format!("[\"{}\"]", "x".repeat(256));
        let cases: &[(&str, bool)] = &[
            ("[]", true),
            (" \t\r\n[ ]\n", true),
            (r#"["a"]"#, true),
            (r#"[ "a" , "b","a" ]"#, true),
            (r#"["u!$%'()*+-./:;<=>?[]^_`{|}~"]"#, true),
            (&long, true),
            (r#"["a\"b"]"#, false),
            (r#"["a\u0041"]"#, false),
            (r#"["ü"]"#, false),
            (r#"["a b"]"#, false),
            (r#"["a@b"]"#, false),
            (r#"[""]"#, false),
            (&too_long, false),
            (r#"["____system"]"#, false),
            (r#"["a","b","c","d"]"#, false),
            (r#"["a",]"#, false),
            (r#"["a" "b"]"#, false),
            (r#"["a"] x"#, false),
            (r#"["a""#, false),
            (r#"[1]"#, false),
            (r#"{"a":1}"#, false),
            ("", false),
        ];
        for (body, plain) in cases {
            let fast = scan_plain_uids(body.as_bytes(), 3);
            assert_eq!(fast.is_some(), *plain, "{body}");
            let served = parse_online_status(body.as_bytes(), 3).map_err(|e| e.to_string());
            let slow = parse_with_serde(body.as_bytes(), 3).map_err(|e| e.to_string());
            assert_eq!(served, slow, "{body}");
            if let Some(fast) = fast {
                assert_eq!(Ok(fast), slow, "{body}");
            }
        }
    }

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
