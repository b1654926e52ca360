//! The first frame of a WebSocket (`protocol.md` 3.2), through `wkuser::gateway::parse_first`,
//! the decoder the gateway runs on it.
//!
//! Asserts: no panic; the class (connect, bad connect, refused) is the contract's, read
//! independently from the JSON; a connect holds params the session may rely on (it unwraps the
//! token's validity) and re-validates when written back as a frame; the reason given for a
//! refusal does not depend on the token, so never echoes it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use wkuser::domain::{DeviceId, Token, Uid};
use wkuser::gateway::{parse_first, FirstFrame};

fuzz_target!(|data: &[u8]| {
    // A text frame is UTF-8 (tungstenite refuses others before the decoder sees them).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // serde_json's private raw-value key makes a `Value` parse the string it holds as the
    // object instead; the gateway's reader takes it as any unknown key (the one place the two
    // part, by design), so this oracle says nothing of texts that hold it.
    if text.contains("$serde_json::private::RawValue") {
        return;
    }
    let parsed = parse_first(text);
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let is_request = object.as_ref().is_some_and(|m| {
        m.get("jsonrpc").is_none_or(|v| v == "2.0")
            && m.get("method").is_some_and(|v| v == "connect")
            && m.get("id").is_some_and(Value::is_string)
    });
    match &parsed {
        FirstFrame::Refused(_) => assert!(!is_request, "a connect request was refused: {text}"),
        FirstFrame::BadConnect { id, .. } | FirstFrame::Connect { id, .. } => {
            assert!(is_request, "not a connect request, yet answered: {text}");
            assert_eq!(
                object.as_ref().unwrap()["id"],
                json!(id),
                "the id must be echoed"
            );
        }
    }
    if let FirstFrame::Connect { id, params } = &parsed {
        let p = object.as_ref().unwrap()["params"]
            .as_object()
            .expect("params is an object");
        Uid::check(params.uid.as_str()).expect("a connect's uid is valid");
        assert_eq!(p["uid"], json!(params.uid.as_str()));
        let token = p["token"].as_str().expect("an accepted connect's token is a string");
        // The hash carried on is the hash of the token the frame holds.
        assert_eq!(
            Token::parse(token).map(|t| t.hash()),
            Some(params.presented)
        );
        if let Some(d) = &params.device_id {
            assert_eq!(DeviceId::parse(d.as_str()).as_ref(), Some(d));
        }
        // Written back as the EasySDK would send it, it parses to the same params.
        let mut again = Map::new();
        again.insert("uid".into(), json!(params.uid.as_str()));
        again.insert("token".into(), json!(token));
        again.insert("deviceFlag".into(), json!(params.device_flag.0));
        if let Some(d) = &params.device_id {
            again.insert("deviceId".into(), json!(d.as_str()));
        }
        if let Some(t) = params.client_timestamp {
            again.insert("clientTimestamp".into(), json!(t));
        }
        let frame = json!({"method": "connect", "params": again, "id": id}).to_string();
        let FirstFrame::Connect {
            id: id2,
            params: p2,
        } = parse_first(&frame)
        else {
            panic!("a connect written back is refused: {frame}");
        };
        assert_eq!(&id2, id);
        assert_eq!(p2.uid, params.uid);
        assert_eq!(p2.presented, params.presented);
        assert_eq!(p2.device_flag, params.device_flag);
        assert_eq!(p2.device_id, params.device_id);
        assert_eq!(p2.client_timestamp, params.client_timestamp);
    }
    // The reason of a bad connect must not depend on the token's content.
    if let (FirstFrame::BadConnect { why, .. }, Some(map)) = (&parsed, &object) {
        let mut map = map.clone();
        if let Some(Value::Object(p)) = map.get_mut("params") {
            if let Some(Value::String(token)) = p.get("token") {
                let blank = "Z".repeat(token.len());
                p.insert("token".into(), Value::String(blank));
                let blanked = Value::Object(map).to_string();
                match parse_first(&blanked) {
                    FirstFrame::BadConnect { why: why2, .. } => assert_eq!(&why2, why),
                    other => panic!("blanking the token changed {why:?} into {other:?}"),
                }
            }
        }
    }
});
