//! The query strings of `GET /user/sessions` and `GET /events`, through
//! `wkuser::http::parse_sessions_query` and `parse_events_query`, which the handlers serve.
//!
//! Asserts: no panic; an error is a 400 envelope; a success holds a valid uid and a limit in
//! range, and a query written back from it parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wkuser::domain::Uid;
use wkuser::http::{parse_events_query, parse_sessions_query};
use wkuser_fuzz::assert_400;

fuzz_target!(|data: &[u8]| {
    // axum hands the handlers the raw query as a `&str`.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match parse_sessions_query(Some(raw)) {
        Err(e) => {
            assert_400(e);
        }
        Ok(q) => {
            Uid::check(q.uid.as_str()).expect("a valid uid");
            assert!((1..=1000).contains(&q.limit));
            let mut pairs = vec![
                ("uid", q.uid.as_str().to_owned()),
                ("limit", q.limit.to_string()),
            ];
            if let Some(b) = q.before {
                pairs.push(("before", b.to_string()));
            }
            let back = serde_urlencoded::to_string(&pairs).unwrap();
            let again = parse_sessions_query(Some(&back)).expect("written back, accepted");
            assert_eq!(
                (again.uid, again.limit, again.before),
                (q.uid, q.limit, q.before)
            );
        }
    }
    match parse_events_query(Some(raw)) {
        Err(e) => {
            assert_400(e);
        }
        Ok(q) => {
            if let Some(u) = &q.uid {
                Uid::check(u.as_str()).expect("a valid uid");
            }
            assert!((1..=1000).contains(&q.limit));
            assert!(q.after.0 <= i64::MAX as u64);
            let mut pairs = vec![
                ("after", q.after.0.to_string()),
                ("limit", q.limit.to_string()),
            ];
            if let Some(u) = &q.uid {
                pairs.push(("uid", u.as_str().to_owned()));
            }
            let back = serde_urlencoded::to_string(&pairs).unwrap();
            let again = parse_events_query(Some(&back)).expect("written back, accepted");
            assert_eq!(
                (again.uid, again.after, again.limit),
                (q.uid, q.after, q.limit)
            );
        }
    }
});
