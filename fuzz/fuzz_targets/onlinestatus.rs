//! The body of `POST /user/onlinestatus`, through `wkuser::http::parse_online_status` (the
//! borrowing fast path and its slow explanation of errors), which the handler serves.
//!
//! Asserts: no panic; an error is a 400 envelope; a success is exactly the body's array of
//! strings (escapes decoded), at most the limit, each a valid uid, and parses the same when
//! written back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wkuser::domain::Uid;
use wkuser::http::parse_online_status;
use wkuser_fuzz::assert_400;

/// A small limit, so that the fuzzer reaches the "too many uids" path too.
const MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
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
