//! What the server log says about a refused connect: why (no token for this flag, token
//! cleared, mismatch, bad params) and on which device, by its name, and never a token, even at
//! the most verbose level.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, start_node_logging};

async fn connect(ws_url: &str, uid: &str, token: &str, flag: u8) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let frame = json!({"method": "connect", "id": "c", "params": {"uid": uid, "token": token, "deviceFlag": flag}});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("no answer: {other:?}"),
    }
}

#[tokio::test]
async fn refused_connects_are_explained_in_the_log_without_any_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_logging(dir.path(), "trace,sled=info,sqlx=info").await;
    let http = reqwest::Client::new();
    let secret = "tok-secret-3f9a7c";
    let body = json!({"uid": "u1", "token": secret, "device_flag": 1, "device_level": 1});
    node.post_ok(&http, "/user/token", body).await;

    let auth_fail =
        json!({"jsonrpc": "2.0", "id": "c", "error": {"code": 2, "message": "auth fail"}});
    assert_eq!(
        connect(&node.ws, "u1", "wrong-secret-8d2b", 1).await,
        auth_fail
    );
    assert_eq!(connect(&node.ws, "u1", secret, 2).await, auth_fail);
    assert_eq!(connect(&node.ws, "u1", "", 1).await, auth_fail);
    assert_eq!(
        connect(&node.ws, "u1", secret, 1).await["result"]["reasonCode"],
        1
    );
    let quit = json!({"uid": "u1", "device_flag": -1});
    node.post_ok(&http, "/user/device_quit", quit).await;
    assert_eq!(connect(&node.ws, "u1", secret, 1).await, auth_fail);

    // The log lines reach the pipe a moment after the answers: wait for the last one.
    let said = eventually(
        "the log to explain the last refusal",
        async || node.stderr.lock().join("\n"),
        |said| said.contains("token cleared by a device quit"),
    )
    .await;
    for why in [
        "token mismatch",
        "no token registered for this device flag",
        "token must be 1 to 4096 bytes",
        "token cleared by a device quit",
    ] {
        assert!(said.contains(why), "the log should say {why:?}:\n{said}");
    }
    // Device flags by the names a person reads (`protocol.md` section 1), not as numbers.
    for (why, device) in [
        ("token mismatch", "device_flag=iOS"),
        (
            "no token registered for this device flag",
            "device_flag=Android",
        ),
    ] {
        assert!(
            said.lines().any(|l| l.contains(why) && l.contains(device)),
            "the log should say {why:?} with {device:?}:\n{said}"
        );
    }
    for token in [secret, "wrong-secret-8d2b"] {
        let leaks: Vec<&str> = said.lines().filter(|l| l.contains(token)).collect();
        assert!(
            leaks.is_empty(),
            "a token reached the log:\n{}",
            leaks.join("\n")
        );
    }
    node.sigterm_and_wait().await;
}
