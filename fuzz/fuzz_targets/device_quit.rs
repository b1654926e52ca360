//! The body of `POST /user/device_quit`, through `wkuser::http::parse_device_quit`, which the
//! handler serves.
//!
//! Asserts: no panic; an error is a 400 envelope; a success holds exactly the body's uid (valid)
//! and flag (-1 = every flag, else 0..=255), and a body written back from it parses the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wkuser::domain::{Command, QuitScope, Uid};
use wkuser::http::parse_device_quit;
use wkuser_fuzz::assert_400;

fuzz_target!(|data: &[u8]| {
    match parse_device_quit(data) {
        Err(e) => {
            assert_400(e);
        }
        Ok(Command::QuitDevice { uid, scope }) => {
            let body: Value = serde_json::from_slice(data).expect("accepted, so JSON");
            Uid::check(uid.as_str()).expect("a valid uid");
            assert_eq!(body["uid"], json!(uid.as_str()));
            let flag = match scope {
                QuitScope::All => -1,
                QuitScope::One(f) => i64::from(f.0),
            };
            assert_eq!(body["device_flag"].as_i64(), Some(flag));
            let back = json!({"uid": uid.as_str(), "device_flag": flag}).to_string();
            match parse_device_quit(back.as_bytes()) {
                Ok(Command::QuitDevice { uid: u2, scope: s2 }) => {
                    assert_eq!((u2, s2), (uid, scope))
                }
                other => panic!("written back, refused: {other:?}"),
            }
        }
        Ok(other) => panic!("not a QuitDevice: {other:?}"),
    }
});
