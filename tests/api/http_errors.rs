//! Bad requests and what each gets (`protocol.md` section 2): the exact status and the whole
//! `{"msg","status"}` envelope, so a changed message is a decision, not an accident.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// One bad (or borderline) request: where it goes, its body, and the whole expected answer.
struct Case {
    what: &'static str,
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    /// The expected body: an envelope for errors, `{"status":200}` or a list for successes.
    expect: Value,
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

const TOKEN: &str = "/user/token";
const QUIT: &str = "/user/device_quit";
const ONLINE: &str = "/user/onlinestatus";
const ADD: &str = "/user/systemuids_add";
const REMOVE: &str = "/user/systemuids_remove";

fn cases() -> Vec<Case> {
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

#[tokio::test]
async fn each_bad_input_gets_its_status_and_envelope() {
    let app = spawn_app().await;
    let mut failures = Vec::new();
    for case in cases() {
        let answer = app
            .request(Method::POST, case.path, Some(case.body), &[])
            .await;
        if answer.pair() != (case.status, case.expect.clone()) {
            failures.push(format!(
                "{}: got {} {}, expected {} {}",
                case.what, answer.status, answer.body, case.status, case.expect
            ));
        }
        if answer.content_type.as_deref() != Some("application/json") {
            failures.push(format!(
                "{}: Content-Type {:?}",
                case.what, answer.content_type
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Nothing rejected left a trace: only the uids of accepted requests have tokens, and no
    // system uid was added.
    app.view_caught_up().await;
    let state = app.server().view().load_state().await.expect("view loads");
    let mut with_tokens: Vec<String> = state
        .tokens
        .iter()
        .map(|(uid, _, _)| uid.to_string())
        .collect();
    with_tokens.sort();
    with_tokens.dedup();
    let multibyte: String = "é".repeat(127) + "x";
    let mut expected = vec!["u1".to_string(), "u".repeat(255), multibyte];
    expected.sort();
    assert_eq!(with_tokens, expected);
    assert!(state.system_uids.is_empty());
    assert_eq!(app.system_uids().await, json!([]));
}

#[tokio::test]
async fn a_two_mib_body_is_413_with_the_envelope() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"uid":"u1","token":"{}","device_flag":1}}"#,
        "t".repeat(2 << 20)
    );
    for path in [TOKEN, QUIT, ONLINE, ADD, REMOVE] {
        let answer = app
            .request(Method::POST, path, Some(huge.clone().into_bytes()), &[])
            .await;
        assert_eq!(
            answer.pair(),
            (413, envelope(413, "body larger than 1048576 bytes")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_body_limit_admits_exactly_its_size() {
    let app = spawn_app_with(&["--max-body-bytes", "100"]).await;
    let body = |len: usize| {
        let base = r#"{"uid":"u1","token":"t","device_flag":1}"#;
        // Padding with spaces keeps the JSON valid at any length.
        format!("{base}{}", " ".repeat(len - base.len()))
    };
    let at_limit = app
        .request(Method::POST, TOKEN, Some(body(100).into_bytes()), &[])
        .await;
    assert_eq!(at_limit.pair(), (200, json!({"status": 200})));
    let over = app
        .request(Method::POST, TOKEN, Some(body(101).into_bytes()), &[])
        .await;
    assert_eq!(
        over.pair(),
        (413, envelope(413, "body larger than 100 bytes"))
    );
    let list = |len: usize| format!(r#"["u1"]{}"#, " ".repeat(len - 6));
    let at_limit = app
        .request(Method::POST, ONLINE, Some(list(100).into_bytes()), &[])
        .await;
    assert_eq!(at_limit.pair(), (200, json!([])));
    let over = app
        .request(Method::POST, ONLINE, Some(list(101).into_bytes()), &[])
        .await;
    assert_eq!(
        over.pair(),
        (413, envelope(413, "body larger than 100 bytes"))
    );
}

/// A chunked body has no length to check up front: the limit holds as the chunks arrive, on
/// the onlinestatus hot path (read by hand, a uid split across chunks) and on the router's
/// routes alike.
#[tokio::test]
async fn the_body_limit_holds_for_chunked_bodies() {
    let app = spawn_app_with(&["--max-body-bytes", "100"]).await;
    let token = app
        .request(
            Method::POST,
            TOKEN,
            Some(br#"{"uid":"u1","token":"t","device_flag":1}"#.to_vec()),
            &[],
        )
        .await;
    assert_eq!(token.status, 200);
    let _online = connected(&app, "u1", "t", 1, "d1").await;
    let pad = " ".repeat(94);
    // (path, the chunks, the answer)
    type Case<'a> = (&'a str, Vec<&'a [u8]>, (u16, Value));
    let cases: [Case; 5] = [
        (
            ONLINE,
            vec![b"[\"u", b"1\"", b"]"],
            (200, json!([{"uid": "u1", "device_flag": 1, "online": 1}])),
        ),
        (
            ONLINE,
            vec![b"[\"u1\"]", pad.as_bytes()],
            (200, json!([{"uid": "u1", "device_flag": 1, "online": 1}])),
        ),
        (
            ONLINE,
            vec![b"[\"u1\"]", pad.as_bytes(), b" "],
            (413, envelope(413, "body larger than 100 bytes")),
        ),
        (
            ONLINE,
            vec![b"[\"u1\",", b"5]"],
            (400, envelope(400, "uids[1] must be a string")),
        ),
        (
            QUIT,
            vec![br#"{"uid":"u2","#, br#""device_flag":-1}"#, pad.as_bytes()],
            (413, envelope(413, "body larger than 100 bytes")),
        ),
    ];
    for (i, (path, chunks, expected)) in cases.into_iter().enumerate() {
        let answer = app.raw_http(&chunked_post(path, &chunks)).await;
        assert_eq!(answer.pair(), expected, "case {i}: {path}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_the_envelope() {
    let app = spawn_app().await;
    for (method, path, status, msg) in [
        (Method::GET, "/nope", 404, "not found"),
        (Method::POST, "/user/nope", 404, "not found"),
        (Method::GET, "/", 404, "not found"),
        (Method::GET, "/user/token", 405, "method not allowed"),
        (Method::PUT, "/user/device_quit", 405, "method not allowed"),
        (Method::GET, "/user/onlinestatus", 405, "method not allowed"),
        (Method::POST, "/user/systemuids", 405, "method not allowed"),
        (
            Method::GET,
            "/user/systemuids_add",
            405,
            "method not allowed",
        ),
        (
            Method::DELETE,
            "/user/systemuids_remove",
            405,
            "method not allowed",
        ),
        (Method::POST, "/healthz", 405, "method not allowed"),
        (Method::POST, "/readyz", 405, "method not allowed"),
    ] {
        let answer = app.request(method.clone(), path, None, &[]).await;
        assert_eq!(
            answer.pair(),
            (status, envelope(status, msg)),
            "{method} {path}"
        );
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/json"),
            "{method} {path}"
        );
    }
    // A 405 names the methods the path takes (RFC 9110 15.5.6), the hot path's POST too,
    // though the router never serves it.
    for (method, path, allow) in [
        (Method::GET, "/user/onlinestatus", "POST"),
        (Method::PUT, "/user/token", "POST"),
        (Method::POST, "/user/systemuids", "GET,HEAD"),
    ] {
        let answer = app.request(method.clone(), path, None, &[]).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.allow.as_deref(), Some(allow), "{method} {path}");
    }
}

/// Every API route, with a body that succeeds once authorized.
fn api_routes() -> Vec<(Method, &'static str, Option<&'static str>, Value)> {
    vec![
        (
            Method::POST,
            TOKEN,
            Some(r#"{"uid":"u1","token":"t","device_flag":1}"#),
            json!({"status": 200}),
        ),
        (
            Method::POST,
            QUIT,
            Some(r#"{"uid":"u2","device_flag":-1}"#),
            json!({"status": 200}),
        ),
        (Method::POST, ONLINE, Some(r#"["u1"]"#), json!([])),
        (Method::GET, "/user/systemuids", None, json!(["s1"])),
        (
            Method::POST,
            ADD,
            Some(r#"{"uids":["s1"]}"#),
            json!({"status": 200}),
        ),
        (
            Method::POST,
            REMOVE,
            Some(r#"{"uids":["s2"]}"#),
            json!({"status": 200}),
        ),
    ]
}

/// The 401's message: it names both ways the token may go.
pub const UNAUTHORIZED: &str = r#"unauthorized: missing or wrong manager token; send it in the "token" header or as "Authorization: Bearer <token>""#;

#[tokio::test]
async fn a_401_names_the_header_the_manager_token_goes_in() {
    let app = spawn_app_with(&["--manager-token", "m4nager-secret"]).await;
    let expected = format!(
        r#"{{"msg":{},"status":401}}"#,
        serde_json::to_string(UNAUTHORIZED).unwrap()
    );
    // The hot path answers its 401 itself, every other path through the front door: both
    // say the same, in the contract's envelope, its keys in the contract's order.
    for (method, path, body) in [
        (Method::POST, ONLINE, Some(br#"["u1"]"#.to_vec())),
        (Method::GET, "/user/sessions?uid=u1", None),
        (Method::POST, TOKEN, Some(b"{}".to_vec())),
    ] {
        for headers in [
            &[][..],
            &[("Authorization", "Bearer wrong")][..],
            &[("token", "wrong")][..],
        ] {
            let resp = app
                .http
                .request(method.clone(), app.url(path))
                .body(body.clone().unwrap_or_default());
            let resp = headers
                .iter()
                .fold(resp, |r, (k, v)| r.header(*k, *v))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} {headers:?}");
            let text = resp.text().await.unwrap();
            assert_eq!(text, expected, "{method} {path} {headers:?}");
        }
    }
}

#[tokio::test]
async fn the_manager_token_guards_every_api_route_but_not_the_probes() {
    let app = spawn_app_with(&["--manager-token", "m4nager-secret"]).await;
    let unauthorized = (401, envelope(401, UNAUTHORIZED));
    // (HTTP strips a header value's surrounding whitespace, so "m4nager-secret " is no test.)
    let wrong: [&[(&str, &str)]; 6] = [
        &[],
        &[("token", "wrong")],
        &[("token", "")],
        &[("token", "m4nager-secreT")],
        &[("token", "m4nager-secret2")],
        &[("Authorization", "Bearer m4nager-secreT")],
    ];
    for (method, path, body, _) in api_routes() {
        for headers in wrong {
            let answer = app
                .request(
                    method.clone(),
                    path,
                    body.map(|b| b.as_bytes().to_vec()),
                    headers,
                )
                .await;
            assert_eq!(answer.pair(), unauthorized, "{method} {path} {headers:?}");
        }
    }
    // Nothing unauthorized reached the state.
    let listed = app
        .request(
            Method::GET,
            "/user/systemuids",
            None,
            &[("token", "m4nager-secret")],
        )
        .await;
    assert_eq!(listed.pair(), (200, json!([])));
    // Even a bad body is refused for its missing token first.
    let answer = app
        .request(Method::POST, TOKEN, Some(b"{".to_vec()), &[])
        .await;
    assert_eq!(answer.pair(), unauthorized);

    for path in ["/healthz", "/readyz"] {
        let answer = app.request(Method::GET, path, None, &[]).await;
        assert_eq!(answer.pair(), (200, json!({"status": 200})), "{path}");
    }
    // Every request but the probes' carries the token (protocol.md section 2), even one no
    // route serves: without it, the API tells nothing of its paths and methods.
    for (method, path) in [
        (Method::GET, "/user/nope"),
        (Method::GET, "/"),
        (Method::GET, TOKEN),
        (Method::GET, ONLINE),
        (Method::DELETE, "/user/systemuids"),
    ] {
        let answer = app.request(method.clone(), path, None, &[]).await;
        assert_eq!(answer.pair(), unauthorized, "{method} {path}");
        assert_eq!(
            answer.allow, None,
            "{method} {path}: a 401 names no methods"
        );
        let answer = app
            .request(method.clone(), path, None, &[("token", "m4nager-secret")])
            .await;
        assert!(
            [404, 405].contains(&answer.status),
            "{method} {path} with the token: {:?}",
            answer.pair()
        );
    }
    // The probes' paths take no token whatever the method.
    let answer = app.request(Method::POST, "/healthz", None, &[]).await;
    assert_eq!(answer.pair(), (405, envelope(405, "method not allowed")));
    // The right token works on every route (in this order: the add precedes the list).
    let mut routes = api_routes();
    routes.sort_by_key(|(_, path, _, _)| *path != ADD);
    for (method, path, body, expect) in routes {
        let answer = app
            .request(
                method.clone(),
                path,
                body.map(|b| b.as_bytes().to_vec()),
                &[("token", "m4nager-secret")],
            )
            .await;
        assert_eq!(answer.pair(), (200, expect), "{method} {path}");
    }
}
