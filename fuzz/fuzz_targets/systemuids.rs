//! The body of `POST /user/systemuids_add` and `_remove`, through
//! `wkuser::http::parse_system_uids`, which both handlers serve.
//!
//! Asserts: no panic; an error is a 400 envelope; a success is exactly the body's `uids`, at
//! most the limit, each valid (never `____system`), and parses the same when written back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wkuser::domain::{Uid, RESERVED_UID};
use wkuser::http::parse_system_uids;
use wkuser_fuzz::assert_400;

/// A small limit, so that the fuzzer reaches the "too many uids" path too.
const MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
    match parse_system_uids(data, MAX) {
        Err(e) => {
            assert_400(e);
        }
        Ok(uids) => {
            let body: Value = serde_json::from_slice(data).expect("accepted, so JSON");
            let listed: Vec<&str> = uids.iter().map(Uid::as_str).collect();
            assert_eq!(body["uids"], json!(listed));
            assert!(uids.len() <= MAX);
            for u in &listed {
                Uid::check(u).expect("a valid uid");
                assert_ne!(*u, RESERVED_UID);
            }
            let back = json!({ "uids": listed }).to_string();
            let again = parse_system_uids(back.as_bytes(), MAX).expect("written back, accepted");
            assert_eq!(again, uids);
        }
    }
});
