//! A frame after connect (`protocol.md` 3.3), through `wkuser::gateway::parse_inbound`, the
//! decoder every session runs on every text frame.
//!
//! Asserts: no panic; a request carries the input's method and its id unchanged (a string or a
//! number); a notification comes only from an object with no `id` key at all; an unparsable
//! frame's id is one the client sent (string or number) or null; and the classification matches
//! the contract, read independently from the JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wkuser::gateway::{parse_inbound, Inbound};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_inbound(text);
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        assert_eq!(parsed, Inbound::Unparsable { id: Value::Null }, "{text}");
        return;
    };
    let jsonrpc_ok = map.get("jsonrpc").is_none_or(|v| v == &json!("2.0"));
    let method = map.get("method").and_then(Value::as_str);
    let id = map.get("id");
    let echoable = id.filter(|v| v.is_string() || v.is_number());
    match &parsed {
        Inbound::Request { id: got, method: m } => {
            assert!(jsonrpc_ok, "{text}");
            assert_eq!(Some(m.as_str()), method, "{text}");
            assert_eq!(
                Some(got),
                echoable,
                "the id must be echoed unchanged: {text}"
            );
        }
        Inbound::Notification { method: m } => {
            assert!(jsonrpc_ok, "{text}");
            assert_eq!(Some(m.as_str()), method, "{text}");
            assert!(
                id.is_none(),
                "a frame with an id is not a notification: {text}"
            );
        }
        Inbound::Unparsable { id: got } => {
            assert!(
                !jsonrpc_ok || method.is_none() || (id.is_some() && echoable.is_none()),
                "a well-formed frame was refused: {text}"
            );
            assert!(got.is_null() || Some(got) == echoable, "{text}");
        }
    }
});
