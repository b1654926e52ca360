//! `/user/onlinestatus`: which of these uids are online, on which device flags. The hot path.
//!
//! Promises `protocol.md` section 2: one row per online (uid, flag), uids in request order, a uid
//! listed twice answered once, offline uids left out, `[]` for `[]`; answered from memory only.
//! A plain body (what application servers send) is read by a hand-written scanner into strings
//! borrowed from it; anything else goes through serde, which gives the same answer and explains
//! errors. The uids are looked up in one batch and the answer is written straight into one
//! buffer. Must never: touch the disk or SQL, or allocate per looked-up uid on the common path.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::body::{json, uid_error, Body};
use super::error::ApiError;
use super::{ApiContext, ApiState};
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
        let end = plain_string_end(bytes, start)?;
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

/// The position of the quote that closes the string starting at `start`, if every byte before
/// it may stand in a uid as it is (`None` otherwise, or when the string does not close). The
/// first quote closes it: an escaped quote needs a backslash before it, and a backslash is not
/// plain. On x86_64 sixteen bytes are classified at once (most uids fit in one block: this
/// took the scanner from 1.0 to 0.7 us per 100 uids in `benches/presence.rs`); the bytes after
/// the last whole block, and every byte elsewhere, one at a time through the table.
fn plain_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = bytes.get(at..at + 16) {
        let block = sse2::Block::classify(block.try_into().expect("sixteen bytes"));
        if block.quotes != 0 {
            let quote = block.quotes.trailing_zeros();
            let before = (1u32 << quote) - 1;
            return (block.unplain & before == 0).then_some(at + quote as usize);
        }
        if block.unplain != 0 {
            return None;
        }
        at += 16;
    }
    for (i, &b) in bytes[at..].iter().enumerate() {
        if b == b'"' {
            return Some(at + i);
        }
        if STRING_BYTE[b as usize] != 0 {
            return None;
        }
    }
    None
}

/// Sixteen bytes at a time with SSE2, which every x86_64 processor has.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// One bit per byte of a block, bit `i` for byte `i`.
    pub struct Block {
        /// The quotes.
        pub quotes: u32,
        /// The bytes [`super::STRING_BYTE`] marks: below 0x21, 0x7f and up, the backslash, and
        /// the printable bytes a uid may not hold (`@ # &`).
        pub unplain: u32,
    }

    impl Block {
        pub fn classify(block: &[u8; 16]) -> Block {
            // SAFETY: SSE2 is part of the x86_64 baseline, so these instructions exist on every
            // processor this code is built for; the load reads exactly the sixteen bytes of
            // `block` (unaligned loads are allowed).
            unsafe {
                let v = _mm_loadu_si128(block.as_ptr().cast());
                let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
                // A signed comparison: below 0x21, and every byte from 0x80 up (negative).
                let low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x21));
                let others = _mm_or_si128(
                    _mm_or_si128(eq(0x7f), eq(b'\\')),
                    _mm_or_si128(_mm_or_si128(eq(b'@'), eq(b'#')), eq(b'&')),
                );
                Block {
                    quotes: _mm_movemask_epi8(eq(b'"')) as u32,
                    unplain: _mm_movemask_epi8(_mm_or_si128(low, others)) as u32,
                }
            }
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

/// `POST /user/onlinestatus` as the router would serve it. The server never gets here:
/// [`super::front`] answers every such request before the router sees it. The route exists so
/// that the router knows POST is the path's method (its 405 for the others names it), and it
/// answers exactly as the front does should anything ever route a request here.
pub async fn routed(State(state): State<ApiState>, body: Body) -> Response {
    answer(&state, &body.0)
}

/// The answer to a body that was read whole (by [`super::front`], which serves this route).
pub fn answer(context: &ApiContext, body: &[u8]) -> Response {
    let (max, presence) = (
        context.limits.max_uids_per_request,
        context.write.presence(),
    );
    // Nearly every request: a plain body of at most a chunk of uids, read into an array on
    // the stack (pushing to a vector alone was 2% of the server's time here, in a profile).
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
            // Around the sixteen-byte blocks: a quote or a bad byte in the first, second, or
            // last partial block.
            (
                r#"["aaaaaaaaaaaaaaa","aaaaaaaaaaaaaaaa","aaaaaaaaaaaaaaaaa"]"#,
                true,
            ),
            (r#"["aaaaaaaaaaaaaaaaaaaa@b"]"#, false),
            (r#"["aaaaaaaaaaaaaa@"]"#, false),
            (
                r#"["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b"]"#,
                false,
            ),
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

    /// The block classes match the byte table bit for bit, whatever the neighbours.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_block_classes_agree_with_the_byte_table() {
        for b in 0..=255u8 {
            for around in 0..=255u8 {
                for at in [0, 5, 15] {
                    let mut bytes = [around; 16];
                    bytes[at] = b;
                    let block = sse2::Block::classify(&bytes);
                    for (i, &byte) in bytes.iter().enumerate() {
                        let bit = |mask: u32| mask >> i & 1 == 1;
                        assert_eq!(bit(block.unplain), STRING_BYTE[byte as usize] != 0);
                        assert_eq!(bit(block.quotes), byte == b'"');
                    }
                }
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
