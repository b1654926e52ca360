//! Reading a `/user/onlinestatus` body into its uids.
//!
//! Owns the two readers: a hand-written scanner for the plain bodies application servers send
//! (uids borrowed from the body, no copy, no second check), and serde for anything else, which
//! gives the same answer and explains errors. Promises: both give the same uids for every body
//! the scanner takes (a unit test and `fuzz/` check it); every uid returned is valid. Must
//! never: allocate per uid on the plain path, or panic on any body.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::domain::Uid;
use crate::http::body::{json, uid_error};
use crate::http::error::ApiError;

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
pub(super) fn scan_plain<'a>(
    body: &'a [u8],
    max_uids: usize,
    mut each: impl FnMut(&'a str),
) -> Option<()> {
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
/// plain. On x86_64 sixteen bytes are classified at once (most uids fit in one block; the
/// `presence` bench measures the gain); the bytes after
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
}
