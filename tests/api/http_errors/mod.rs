//! Bad requests and what each gets (`protocol.md` section 2): the exact status and the whole
//! `{"msg","status"}` envelope, so a changed message is a decision, not an accident.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

mod cases;
use cases::{cases, ADD, ONLINE, QUIT, REMOVE, TOKEN};

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
