//! The body of `POST /user/token`, through `wkuser::http::parse_set_token`, which the handler
//! serves.
//!
//! Asserts: no panic; an error is a 400 envelope whose message does not depend on (so never
//! echoes) the token; a success holds exactly the body's fields, valid (the hash is the token's
//! SHA-256), and a body written back from it parses to the same command.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wkuser::domain::{Command, DeviceLevel, Uid};
use wkuser::http::parse_set_token;
use wkuser_fuzz::{assert_400, with_field_blanked};

fuzz_target!(|data: &[u8]| {
    match parse_set_token(data) {
        Err(e) => {
            let msg = assert_400(e);
            if let Some(blanked) = with_field_blanked(data, "token") {
                let again = parse_set_token(&blanked).map(|_| ()).map_err(assert_400);
                assert_eq!(again, Err(msg), "the message depends on the token");
            }
        }
        Ok(Command::SetToken {
            uid,
            device_flag,
            device_level,
            token_hash,
        }) => {
            let body: Value = serde_json::from_slice(data).expect("accepted, so JSON");
            Uid::check(uid.as_str()).expect("a valid uid");
            assert_eq!(body["uid"], json!(uid.as_str()));
            let token = body["token"].as_str().expect("a string token");
            assert!((1..=4096).contains(&token.len()));
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            assert_eq!(token_hash.0, hash);
            assert_eq!(body["device_flag"].as_i64(), Some(i64::from(device_flag.0)));
            let level = match device_level {
                DeviceLevel::Slave => 0,
                DeviceLevel::Master => 1,
            };
            assert_eq!(body["device_level"].as_i64().unwrap_or(0), level);
            let back = json!({"uid": uid.as_str(), "token": token,
                "device_flag": device_flag.0, "device_level": level});
            match parse_set_token(back.to_string().as_bytes()) {
                Ok(Command::SetToken {
                    uid: u2,
                    device_flag: f2,
                    device_level: l2,
                    token_hash: h2,
                }) => {
                    assert_eq!((u2, f2, l2), (uid, device_flag, device_level));
                    assert_eq!(h2.0, token_hash.0);
                }
                other => panic!("written back, refused: {other:?}"),
            }
        }
        Ok(other) => panic!("not a SetToken: {other:?}"),
    }
});
