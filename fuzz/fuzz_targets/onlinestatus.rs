//! The body of `POST /user/onlinestatus`, through `wkuser::http::parse_online_status` (the
//! hand-written scanner for plain bodies, else serde with its explanation of errors), which
//! the handler serves.
//!
//! Asserts: no panic; an error is a 400 envelope; a success is exactly the body's array of
//! strings (escapes decoded), at most the limit, each a valid uid, and parses the same when
//! written back; whatever the scanner accepts, the serde path accepts with the same uids.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wkuser::domain::Uid;
use wkuser::http::onlinestatus::{parse_with_serde, scan_plain_uids};
use wkuser::http::parse_online_status;
use wkuser_fuzz::assert_400;

/// A small limit, so that the fuzzer reaches the "too many uids" path too.
const MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
    if let Some(fast) = scan_plain_uids(data, MAX) {
        let slow = parse_with_serde(data, MAX).expect("the scanner accepted it");
        assert_eq!(fast, slow);
    }
    match parse_online_status(data, MAX) {
        Err(e) => {
            assert_400(e);
        }
        Ok(uids) => {
            let uids: Vec<String> = uids.into_iter().map(|u| u.into_owned()).collect();
            let body: Vec<String> = serde_json::from_slice(data).expect("accepted, so strings");
            assert_eq!(uids, body);
            assert!(uids.len() <= MAX);
            for u in &uids {
                Uid::check(u).expect("a valid uid");
            }
            let back = serde_json::to_vec(&uids).unwrap();
            let again: Vec<String> = parse_online_status(&back, MAX)
                .expect("written back, accepted")
                .into_iter()
                .map(|u| u.into_owned())
                .collect();
            assert_eq!(again, uids);
        }
    }
});
