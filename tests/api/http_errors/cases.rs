//! The table of bad (and borderline) requests of `protocol.md` section 2, each with the whole
//! answer it must get: one row per rule, so that a new limit or message is one line here.

use serde_json::{json, Value};

use crate::helpers::*;

/// One bad (or borderline) request: where it goes, its body, and the whole expected answer.
pub(super) struct Case {
    pub what: &'static str,
    pub path: &'static str,
    pub body: Vec<u8>,
    pub status: u16,
    /// The expected body: an envelope for errors, `{"status":200}` or a list for successes.
    pub expect: Value,
}

fn bad(what: &'static str, path: &'static str, body: impl Into<Vec<u8>>, msg: &str) -> Case {
    Case {
        what,
        path,
        body: body.into(),
        status: 400,
        expect: envelope(400, msg),
    }
}

fn ok(what: &'static str, path: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        what,
        path,
        body: body.into(),
        status: 200,
        expect: json!({"status": 200}),
    }
}

fn token_body(uid: &str, token: &str) -> String {
    json!({"uid": uid, "token": token, "device_flag": 1}).to_string()
}

pub(super) const TOKEN: &str = "/user/token";
pub(super) const QUIT: &str = "/user/device_quit";
pub(super) const ONLINE: &str = "/user/onlinestatus";
pub(super) const ADD: &str = "/user/systemuids_add";
pub(super) const REMOVE: &str = "/user/systemuids_remove";

pub(super) fn cases() -> Vec<Case> {
    let long_uid = "u".repeat(256);
    let max_uid = "u".repeat(255);
    let long_token = "t".repeat(4097);
    let max_token = "t".repeat(4096);
    let uids_10000: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
    let uids_10001: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let bad_uid = |place: &str, why: &str| format!("{place} is not a valid uid: it {why}");
    let length = "must be 1 to 255 bytes";
    let whitespace = "must not contain whitespace or control characters";
    let forbidden = "must not contain '@', '#' or '&'";
    let reserved = "must not be ____system, which is reserved";
    let flag_rule = "device_flag must be an integer from 0 to 255";
    let quit_rule = "device_flag must be an integer from -1 to 255 (-1: every flag)";
    vec![
        // The body itself.
        bad(
            "malformed JSON",
            TOKEN,
            r#"{"uid":"u1","#,
            "body is not valid JSON: EOF while parsing a value at line 1 column 12",
        ),
        bad(
            "empty body",
            TOKEN,
            "",
            "body is not valid JSON: EOF while parsing a value at line 1 column 0",
        ),
        bad(
            "invalid UTF-8 in a string",
            TOKEN,
            &b"{\"uid\":\"u\xff\",\"token\":\"t\",\"device_flag\":1}"[..],
            "body is not valid JSON: invalid unicode code point at line 1 column 10",
        ),
        bad(
            "nesting deeper than the parser allows",
            TOKEN,
            format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
            "body is not valid JSON: recursion limit exceeded at line 1 column 128",
        ),
        bad(
            "nesting deeper than the parser allows (onlinestatus)",
            ONLINE,
            format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
            "body is not valid JSON: recursion limit exceeded at line 1 column 128",
        ),
        bad(
            "trailing garbage",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1} x"#,
            "body is not valid JSON: trailing characters at line 1 column 42",
        ),
        bad(
            "array for an object",
            TOKEN,
            "[]",
            "body must be a JSON object",
        ),
        bad(
            "malformed JSON (quit)",
            QUIT,
            "{uid:1}",
            "body is not valid JSON: key must be a string at line 1 column 2",
        ),
        // /user/token: types.
        bad(
            "uid as number",
            TOKEN,
            r#"{"uid":7,"token":"t","device_flag":1}"#,
            "uid must be a string",
        ),
        bad(
            "device_flag as string",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":"1"}"#,
            flag_rule,
        ),
        bad(
            "device_flag as float",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1.5}"#,
            flag_rule,
        ),
        bad(
            "token as number",
            TOKEN,
            r#"{"uid":"u1","token":12345,"device_flag":1}"#,
            "token must be a string",
        ),
        bad(
            "device_level as string",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1,"device_level":"1"}"#,
            "device_level must be 0 or 1",
        ),
        // /user/token: missing and null.
        bad(
            "missing uid",
            TOKEN,
            r#"{"token":"t","device_flag":1}"#,
            "uid is required",
        ),
        bad(
            "missing token",
            TOKEN,
            r#"{"uid":"u1","device_flag":1}"#,
            "token is required",
        ),
        bad(
            "missing device_flag",
            TOKEN,
            r#"{"uid":"u1","token":"t"}"#,
            "device_flag is required",
        ),
        bad(
            "null uid",
            TOKEN,
            r#"{"uid":null,"token":"t","device_flag":1}"#,
            "uid is required",
        ),
        bad(
            "null token",
            TOKEN,
            r#"{"uid":"u1","token":null,"device_flag":1}"#,
            "token is required",
        ),
        bad(
            "null device_flag",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":null}"#,
            "device_flag is required",
        ),
        ok(
            "null device_level counts as absent",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1,"device_level":null}"#,
        ),
        // /user/token: lengths.
        bad(
            "empty uid",
            TOKEN,
            token_body("", "t"),
            &bad_uid("uid", length),
        ),
        bad(
            "256-byte uid",
            TOKEN,
            token_body(&long_uid, "t"),
            &bad_uid("uid", length),
        ),
        ok("255-byte uid", TOKEN, token_body(&max_uid, "t")),
        ok(
            "255-byte multibyte uid",
            TOKEN,
            token_body(
                &"é".repeat(127).chars().chain(['x']).collect::<String>(),
                "t",
            ),
        ),
        bad(
            "256-byte multibyte uid",
            TOKEN,
            token_body(&"é".repeat(128), "t"),
            &bad_uid("uid", length),
        ),
        bad(
            "empty token",
            TOKEN,
            token_body("u1", ""),
            "token must be 1 to 4096 bytes",
        ),
        bad(
            "4097-byte token",
            TOKEN,
            token_body("u1", &long_token),
            "token must be 1 to 4096 bytes",
        ),
        ok("4096-byte token", TOKEN, token_body("u1", &max_token)),
        // /user/token: uid characters.
        bad(
            "@ in uid",
            TOKEN,
            token_body("a@b", "t"),
            &bad_uid("uid", forbidden),
        ),
        bad(
            "# in uid",
            TOKEN,
            token_body("a#b", "t"),
            &bad_uid("uid", forbidden),
        ),
        bad(
            "& in uid",
            TOKEN,
            token_body("a&b", "t"),
            &bad_uid("uid", forbidden),
        ),
        bad(
            "space in uid",
            TOKEN,
            token_body("a b", "t"),
            &bad_uid("uid", whitespace),
        ),
        bad(
            "tab in uid",
            TOKEN,
            token_body("a\tb", "t"),
            &bad_uid("uid", whitespace),
        ),
        bad(
            "ideographic space in uid",
            TOKEN,
            token_body("a\u{3000}b", "t"),
            &bad_uid("uid", whitespace),
        ),
        bad(
            "reserved uid",
            TOKEN,
            token_body("____system", "t"),
            &bad_uid("uid", reserved),
        ),
        // /user/token: flag and level ranges.
        bad(
            "device_flag 256",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":256}"#,
            flag_rule,
        ),
        bad(
            "device_flag -1 (only device_quit takes it)",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":-1}"#,
            flag_rule,
        ),
        bad(
            "device_flag -2",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":-2}"#,
            flag_rule,
        ),
        ok(
            "device_flag 255",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":255}"#,
        ),
        bad(
            "device_level 2",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1,"device_level":2}"#,
            "device_level must be 0 or 1",
        ),
        bad(
            "device_level -1",
            TOKEN,
            r#"{"uid":"u1","token":"t","device_flag":1,"device_level":-1}"#,
            "device_level must be 0 or 1",
        ),
        // /user/device_quit.
        bad(
            "quit: missing uid",
            QUIT,
            r#"{"device_flag":1}"#,
            "uid is required",
        ),
        bad(
            "quit: missing device_flag",
            QUIT,
            r#"{"uid":"u1"}"#,
            "device_flag is required",
        ),
        bad(
            "quit: null device_flag",
            QUIT,
            r#"{"uid":"u1","device_flag":null}"#,
            "device_flag is required",
        ),
        bad(
            "quit: device_flag as string",
            QUIT,
            r#"{"uid":"u1","device_flag":"-1"}"#,
            quit_rule,
        ),
        bad(
            "quit: device_flag -2",
            QUIT,
            r#"{"uid":"u1","device_flag":-2}"#,
            quit_rule,
        ),
        bad(
            "quit: device_flag 256",
            QUIT,
            r#"{"uid":"u1","device_flag":256}"#,
            quit_rule,
        ),
        ok(
            "quit: device_flag -1",
            QUIT,
            r#"{"uid":"u1","device_flag":-1}"#,
        ),
        ok(
            "quit: nothing registered",
            QUIT,
            r#"{"uid":"nobody","device_flag":3}"#,
        ),
        bad(
            "quit: invalid uid",
            QUIT,
            r#"{"uid":"a&b","device_flag":1}"#,
            &bad_uid("uid", forbidden),
        ),
        bad(
            "quit: reserved uid",
            QUIT,
            r#"{"uid":"____system","device_flag":1}"#,
            &bad_uid("uid", reserved),
        ),
        // /user/onlinestatus.
        bad(
            "onlinestatus: 10,001 uids",
            ONLINE,
            json!(uids_10001).to_string(),
            "10001 uids requested; at most 10000 are allowed per request",
        ),
        Case {
            what: "onlinestatus: 10,000 uids",
            path: ONLINE,
            body: json!(uids_10000).to_string().into(),
            status: 200,
            expect: json!([]),
        },
        bad(
            "onlinestatus: a number among the uids",
            ONLINE,
            r#"["u1",2,"u3"]"#,
            "uids[1] must be a string",
        ),
        bad(
            "onlinestatus: a null among the uids",
            ONLINE,
            r#"["u1",null]"#,
            "uids[1] must be a string",
        ),
        bad(
            "onlinestatus: an object body",
            ONLINE,
            r#"{"uids":["u1"]}"#,
            "body must be a JSON array of uids",
        ),
        bad(
            "onlinestatus: a string body",
            ONLINE,
            r#""u1""#,
            "body must be a JSON array of uids",
        ),
        bad(
            "onlinestatus: malformed JSON",
            ONLINE,
            r#"["u1""#,
            "body is not valid JSON: EOF while parsing a list at line 1 column 5",
        ),
        bad(
            "onlinestatus: invalid uid",
            ONLINE,
            r#"["u1","a b"]"#,
            &bad_uid("uids[1]", whitespace),
        ),
        bad(
            "onlinestatus: reserved uid",
            ONLINE,
            r#"["____system"]"#,
            &bad_uid("uids[0]", reserved),
        ),
        bad(
            "onlinestatus: 256-byte uid",
            ONLINE,
            json!([long_uid]).to_string(),
            &bad_uid("uids[0]", length),
        ),
        // /user/systemuids_add and _remove.
        bad(
            "systemuids_add: reserved uid",
            ADD,
            r#"{"uids":["ok","____system"]}"#,
            &bad_uid("uids[1]", reserved),
        ),
        bad(
            "systemuids_add: invalid uid",
            ADD,
            r#"{"uids":["a#b"]}"#,
            &bad_uid("uids[0]", forbidden),
        ),
        bad(
            "systemuids_add: missing uids",
            ADD,
            r#"{}"#,
            "uids is required",
        ),
        bad(
            "systemuids_add: uids not an array",
            ADD,
            r#"{"uids":"u1"}"#,
            "uids must be an array of uids",
        ),
        bad(
            "systemuids_add: a number among the uids",
            ADD,
            r#"{"uids":["u1",5]}"#,
            "uids[1] must be a string",
        ),
        bad(
            "systemuids_add: 10,001 uids",
            ADD,
            json!({"uids": uids_10001}).to_string(),
            "uids holds 10001 uids; at most 10000 are allowed",
        ),
        bad(
            "systemuids_add: an array body",
            ADD,
            r#"["u1"]"#,
            "body must be a JSON object",
        ),
        bad(
            "systemuids_remove: reserved uid",
            REMOVE,
            r#"{"uids":["____system"]}"#,
            &bad_uid("uids[0]", reserved),
        ),
        bad(
            "systemuids_remove: malformed JSON",
            REMOVE,
            r#"{"uids":[}"#,
            "body is not valid JSON: expected value at line 1 column 10",
        ),
    ]
}
