//! Several real `wkuser serve` processes on one PostgreSQL database (protocol.md section 6):
//! one log, read your writes across nodes, kicks that reach the socket wherever it is.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// A node of the cluster on `db`, with its own (unused) data directory.
async fn node(db: &TestDatabase, id: u64, data: &tempfile::TempDir) -> Node {
    let dir = data.path().join(format!("node{id}"));
    let node_id = id.to_string();
    start_node_with(
        &dir,
        "info",
        &["--database-url", &db.url, "--node-id", &node_id],
    )
    .await
}

async fn post(node: &Node, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", node.api))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Connects to `node`'s gateway as the EasySDK does; returns the socket and the answer.
async fn connect(node: &Node, uid: &str, token: &str, flag: u8, device: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    let frame = easy_connect(uid, token, device, flag, now_ms(), "c1");
    ws.send(Message::text(frame)).await.unwrap();
    let answer = next_json(&mut ws).await.expect("an answer to connect");
    (ws, answer)
}

#[tokio::test]
async fn a_token_set_on_one_node_admits_a_connect_on_another_and_a_quit_kicks_it_there() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let a = node(&db, 1, &data).await;
    let b = node(&db, 2, &data).await;
    let c = node(&db, 3, &data).await;

    // Acknowledged on A, then at once a connect on B: no wait in between.
    let set = json!({"uid": "u1", "token": "t1", "device_flag": 1, "device_level": 0});
    assert_eq!(
        post(&a, "/user/token", set).await,
        (200, json!({"status": 200}))
    );
    let (mut on_b, answer) = connect(&b, "u1", "t1", 1, "phone").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");

    // A sees the session B holds.
    eventually(
        "u1 online as A sees it",
        async || post(&a, "/user/onlinestatus", json!(["u1"])).await,
        |seen| *seen == (200, json!([{"uid": "u1", "device_flag": 1, "online": 1}])),
    )
    .await;

    // A device quit answered by A kicks the socket that B holds, as section 3.5 says.
    let quit = json!({"uid": "u1", "device_flag": 1});
    assert_eq!(post(&a, "/user/device_quit", quit).await.0, 200);
    assert_eq!(next_text(&mut on_b).await, kick_text("device quit"));
    assert_eq!(expect_close(&mut on_b).await, 1000);

    // C refuses the cleared token at once.
    let (_, refused) = connect(&c, "u1", "t1", 1, "phone").await;
    assert_eq!(refused, auth_fail("c1"));
    for n in [a, b, c] {
        n.sigterm_and_wait().await;
    }
}

#[tokio::test]
async fn a_master_connect_on_one_node_replaces_the_master_session_held_by_another() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let b = node(&db, 1, &data).await;
    let c = node(&db, 2, &data).await;
    let set = json!({"uid": "m", "token": "tm", "device_flag": 1, "device_level": 1});
    assert_eq!(post(&b, "/user/token", set).await.0, 200);
    let (mut on_c, answer) = connect(&c, "m", "tm", 1, "laptop-1").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    let (_on_b, answer) = connect(&b, "m", "tm", 1, "laptop-2").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    assert_eq!(
        next_text(&mut on_c).await,
        kick_text("login in other device")
    );
    assert_eq!(expect_close(&mut on_c).await, 1000);
    for n in [b, c] {
        n.sigterm_and_wait().await;
    }
}

#[tokio::test]
async fn a_node_stops_with_its_own_sessions_closed_and_leaves_the_others_open() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let a = node(&db, 1, &data).await;
    let b = node(&db, 2, &data).await;
    for (uid, n) in [("on-a", &a), ("on-b", &b)] {
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        assert_eq!(post(n, "/user/token", set).await.0, 200);
    }
    let (_ws_a, answer) = connect(&a, "on-a", "t", 1, "d").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    let (mut ws_b, answer) = connect(&b, "on-b", "t", 1, "d").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    b.sigterm_and_wait().await;
    assert_eq!(expect_close(&mut ws_b).await, 1001);
    // B recorded its own session's end; A's stays open, and A learns of B's close.
    eventually(
        "only on-a online as A sees it",
        async || post(&a, "/user/onlinestatus", json!(["on-a", "on-b"])).await,
        |seen| *seen == (200, json!([{"uid": "on-a", "device_flag": 1, "online": 1}])),
    )
    .await;
    // A node started again on the database finds every user where the others left them.
    let b = node(&db, 2, &data).await;
    let (status, online) = post(&b, "/user/onlinestatus", json!(["on-a", "on-b"])).await;
    assert_eq!(
        (status, online),
        (200, json!([{"uid": "on-a", "device_flag": 1, "online": 1}]))
    );
    for n in [a, b] {
        n.sigterm_and_wait().await;
    }
}
