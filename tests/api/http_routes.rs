//! Every route's success path (`protocol.md` section 2), checked through what the server does
//! with the request (the memory state, a WebSocket connect, the listing), not only its answer.
//! Each route is called with no `Content-Type`, with a form type (as `curl -d` sends) and with
//! `application/json`: all are parsed as JSON.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wkuser::domain::{DeviceFlag, DeviceLevel, TokenHash, TokenSlot};

use crate::helpers::*;

/// The three ways a client labels a JSON body.
const CONTENT_TYPES: [Option<&str>; 3] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
];

/// The answer of every mutation.
fn ok200() -> (u16, Value) {
    (200, json!({"status": 200}))
}

fn hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

fn slot(app: &TestApp, uid: &str, flag: u8) -> Option<TokenSlot> {
    app.server()
        .write_path()
        .presence()
        .with_user(uid, |s| s.token(DeviceFlag(flag)))
}

fn active(token: &str, level: DeviceLevel) -> Option<TokenSlot> {
    Some(TokenSlot::Active {
        hash: hash(token),
        level,
    })
}

fn kick(reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "disconnect", "params": {"reasonCode": 12, "reason": reason}})
}

#[tokio::test]
async fn token_sets_the_hash_and_level_whatever_the_content_type() {
    let app = spawn_app().await;
    for (i, ct) in CONTENT_TYPES.into_iter().enumerate() {
        let uid = format!("user-{i}");
        let token = format!("tok-{i}");
        let body = json!({"uid": uid, "token": token, "device_flag": i + 1, "device_level": 1});
        let answer = app.post_typed("/user/token", &body.to_string(), ct).await;
        assert_eq!(answer.pair(), ok200(), "{ct:?}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            slot(&app, &uid, i as u8 + 1),
            active(&token, DeviceLevel::Master),
            "{ct:?}"
        );
        let (_ws, answer) = app.ws_connect(&uid, &token, i as u8 + 1, "dev-a").await;
        assert_connected(&answer);
    }

    // device_level absent or null: slave (0).
    for body in [
        json!({"uid": "lvl", "token": "t-absent", "device_flag": 1}),
        json!({"uid": "lvl", "token": "t-null", "device_flag": 2, "device_level": null}),
        json!({"uid": "lvl", "token": "t-zero", "device_flag": 3, "device_level": 0}),
    ] {
        assert_eq!(app.post("/user/token", &body).await, ok200(), "{body}");
    }
    assert_eq!(slot(&app, "lvl", 1), active("t-absent", DeviceLevel::Slave));
    assert_eq!(slot(&app, "lvl", 2), active("t-null", DeviceLevel::Slave));
    assert_eq!(slot(&app, "lvl", 3), active("t-zero", DeviceLevel::Slave));
    assert_eq!(slot(&app, "lvl", 4), None);

    // A new token replaces the old one: only the new one admits.
    app.set_token("lvl", "t-renewed", 1, 0).await;
    assert_eq!(
        slot(&app, "lvl", 1),
        active("t-renewed", DeviceLevel::Slave)
    );
    let (_old, answer) = app.ws_connect("lvl", "t-absent", 1, "dev-old").await;
    assert_eq!(answer, auth_fail("c-dev-old"));
    let (_new, answer) = app.ws_connect("lvl", "t-renewed", 1, "dev-new").await;
    assert_connected(&answer);
    // A token of one flag does not admit another flag.
    let (_other, answer) = app.ws_connect("lvl", "t-renewed", 9, "dev-9").await;
    assert_eq!(answer, auth_fail("c-dev-9"));
}

#[tokio::test]
async fn device_quit_clears_one_flag_or_every_flag_and_kicks() {
    let app = spawn_app().await;
    for flag in [1, 2, 3] {
        app.set_token("q", &format!("t{flag}"), flag, 0).await;
    }
    let (mut ws1, answer) = app.ws_connect("q", "t1", 1, "d1").await;
    assert_connected(&answer);
    let (mut ws2, answer) = app.ws_connect("q", "t2", 2, "d2").await;
    assert_connected(&answer);
    assert_eq!(
        app.online(&["q"]).await,
        json!([{"uid": "q", "device_flag": 1, "online": 1}, {"uid": "q", "device_flag": 2, "online": 1}])
    );

    // One flag: its token is cleared and its connection kicked; the others stay.
    let answer = app
        .post_typed(
            "/user/device_quit",
            r#"{"uid":"q","device_flag":1}"#,
            CONTENT_TYPES[0],
        )
        .await;
    assert_eq!(answer.pair(), ok200());
    assert_eq!(slot(&app, "q", 1), Some(TokenSlot::Cleared));
    assert_eq!(slot(&app, "q", 2), active("t2", DeviceLevel::Slave));
    assert_eq!(next_json(&mut ws1).await, Some(kick("device quit")));
    assert_eq!(close_code(&mut ws1).await, Some(1000));
    assert_eq!(
        app.online(&["q"]).await,
        json!([{"uid": "q", "device_flag": 2, "online": 1}])
    );
    let (_ws, answer) = app.ws_connect("q", "t1", 1, "d1-again").await;
    assert_eq!(answer, auth_fail("c-d1-again"));

    // -1: every flag.
    let answer = app
        .post_typed(
            "/user/device_quit",
            r#"{"uid":"q","device_flag":-1}"#,
            CONTENT_TYPES[1],
        )
        .await;
    assert_eq!(answer.pair(), ok200());
    for flag in [1, 2, 3] {
        assert_eq!(
            slot(&app, "q", flag),
            Some(TokenSlot::Cleared),
            "flag {flag}"
        );
    }
    assert_eq!(next_json(&mut ws2).await, Some(kick("device quit")));
    assert_eq!(close_code(&mut ws2).await, Some(1000));
    assert_eq!(app.online(&["q"]).await, json!([]));
    let (_ws, answer) = app.ws_connect("q", "t3", 3, "d3").await;
    assert_eq!(answer, auth_fail("c-d3"));

    // Idempotent: nothing left to clear answers 200 and records nothing.
    let before = app.server().write_path().log().last_durable();
    for body in [
        r#"{"uid":"q","device_flag":-1}"#,
        r#"{"uid":"q","device_flag":2}"#,
        r#"{"uid":"nobody","device_flag":-1}"#,
        r#"{"uid":"nobody","device_flag":0}"#,
    ] {
        let answer = app
            .post_typed("/user/device_quit", body, CONTENT_TYPES[2])
            .await;
        assert_eq!(answer.pair(), ok200(), "{body}");
    }
    assert_eq!(app.server().write_path().log().last_durable(), before);

    // A new token after a quit admits again.
    app.set_token("q", "t1-new", 1, 0).await;
    let (_ws, answer) = app.ws_connect("q", "t1-new", 1, "d1-new").await;
    assert_connected(&answer);
}

#[tokio::test]
async fn onlinestatus_keeps_order_answers_once_and_leaves_out_offline() {
    let app = spawn_app().await;
    app.set_token("ua", "ta3", 3, 0).await;
    app.set_token("ua", "ta1", 1, 0).await;
    app.set_token("ub", "tb", 2, 0).await;
    app.set_token("uc", "tc", 1, 0).await; // registered, never connected
    let mut sockets = Vec::new();
    for (uid, token, flag, dev) in [
        ("ua", "ta3", 3, "a3"),
        ("ub", "tb", 2, "b2"),
        ("ua", "ta1", 1, "a1"),
        ("ub", "tb", 2, "b2-second"), // a second device of one flag: still one row
    ] {
        let (ws, answer) = app.ws_connect(uid, token, flag, dev).await;
        assert_connected(&answer);
        sockets.push(ws);
    }
    let request = json!(["ub", "nobody", "ua", "uc", "ub", "ua"]).to_string();
    let expected = json!([
        {"uid": "ub", "device_flag": 2, "online": 1},
        {"uid": "ua", "device_flag": 1, "online": 1},
        {"uid": "ua", "device_flag": 3, "online": 1},
    ]);
    for ct in CONTENT_TYPES {
        let answer = app.post_typed("/user/onlinestatus", &request, ct).await;
        assert_eq!(answer.pair(), (200, expected.clone()), "{ct:?}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
        let answer = app.post_typed("/user/onlinestatus", "[]", ct).await;
        assert_eq!(answer.pair(), (200, json!([])), "{ct:?}");
    }
    assert_eq!(
        app.online(&["ua", "ua"]).await,
        json!([{"uid": "ua", "device_flag": 1, "online": 1}, {"uid": "ua", "device_flag": 3, "online": 1}])
    );
    assert_eq!(app.online(&["nobody", "uc"]).await, json!([]));
    // Long requests, at and past the 256 uids the server reads on the stack: the answer does
    // not depend on the path (online uids first, last, and repeated across the boundary).
    for len in [256, 257, 600] {
        let mut uids: Vec<String> = (0..len).map(|i| format!("off{i}")).collect();
        uids[0] = "ub".into();
        uids[len - 1] = "ua".into();
        uids[len / 2] = "ua".into();
        uids[len - 2] = "ub".into();
        let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
        assert_eq!(
            app.online(&refs).await,
            json!([
                {"uid": "ub", "device_flag": 2, "online": 1},
                {"uid": "ua", "device_flag": 1, "online": 1},
                {"uid": "ua", "device_flag": 3, "online": 1},
            ]),
            "{len} uids"
        );
    }
    // A uid with an escape in its JSON is matched by its value.
    app.set_token("é\"q", "te", 4, 0).await;
    let (_ws, answer) = app.ws_connect("é\\\"q", "te", 4, "e4").await;
    assert_connected(&answer);
    let answer = app
        .post_typed("/user/onlinestatus", r#"["\u00e9\"q"]"#, None)
        .await;
    assert_eq!(
        answer.pair(),
        (200, json!([{"uid": "é\"q", "device_flag": 4, "online": 1}]))
    );
}

#[tokio::test]
async fn systemuids_are_listed_sorted_and_add_remove_are_idempotent() {
    let app = spawn_app().await;
    let answer = app
        .request(reqwest::Method::GET, "/user/systemuids", None, &[])
        .await;
    assert_eq!(answer.pair(), (200, json!([])));
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));

    let add = r#"{"uids":["zeta","alpha","Mid","中文","alpha"]}"#;
    for ct in CONTENT_TYPES {
        let answer = app.post_typed("/user/systemuids_add", add, ct).await;
        assert_eq!(answer.pair(), ok200(), "{ct:?}");
    }
    assert_eq!(
        app.system_uids().await,
        json!(["Mid", "alpha", "zeta", "中文"])
    );

    // Adding what is there, removing what is not: 200, and nothing recorded.
    let log = app.server().write_path().log().clone();
    let before = log.last_durable();
    for (path, body) in [
        ("/user/systemuids_add", r#"{"uids":["alpha","zeta"]}"#),
        ("/user/systemuids_add", r#"{"uids":[]}"#),
        ("/user/systemuids_remove", r#"{"uids":["ghost"]}"#),
        ("/user/systemuids_remove", r#"{"uids":[]}"#),
    ] {
        assert_eq!(
            app.post_typed(path, body, None).await.pair(),
            ok200(),
            "{path} {body}"
        );
    }
    assert_eq!(log.last_durable(), before);

    let remove = r#"{"uids":["zeta","ghost","Mid"]}"#;
    for ct in CONTENT_TYPES {
        let answer = app.post_typed("/user/systemuids_remove", remove, ct).await;
        assert_eq!(answer.pair(), ok200(), "{ct:?}");
    }
    assert_eq!(log.last_durable().0, before.0 + 1, "one removal recorded");
    assert_eq!(app.system_uids().await, json!(["alpha", "中文"]));

    let answer = app
        .post_typed("/user/systemuids_add", r#"{"uids":["beta"]}"#, None)
        .await;
    assert_eq!(answer.pair(), ok200());
    assert_eq!(app.system_uids().await, json!(["alpha", "beta", "中文"]));
    let answer = app
        .post_typed(
            "/user/systemuids_remove",
            r#"{"uids":["alpha","beta","中文"]}"#,
            None,
        )
        .await;
    assert_eq!(answer.pair(), ok200());
    assert_eq!(app.system_uids().await, json!([]));
}

#[tokio::test]
async fn probes_answer_without_a_token() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let answer = app.request(reqwest::Method::GET, path, None, &[]).await;
        assert_eq!(answer.pair(), ok200(), "{path}");
        assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    }
}
