//! Several real `wkuser serve` processes on one PostgreSQL (protocol.md section 6): one log,
//! read your writes across nodes, kicks that reach the socket wherever it is, a dead or frozen
//! node's sessions ended.
//!
//! Each test starts its own throwaway PostgreSQL ([`ThrowawayPostgres`]), as the issue asks:
//! the nodes of one test share nothing with another test's, not even a server.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// A node of the cluster on the database at `url`, with its own (unused) data directory.
async fn node(url: &str, id: u64, data: &tempfile::TempDir) -> Node {
    let dir = data.path().join(format!("node{id}"));
    let node_id = id.to_string();
    start_node_with(
        &dir,
        "info",
        &["--database-url", url, "--node-id", &node_id],
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
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let a = node(&url, 1, &data).await;
    let b = node(&url, 2, &data).await;
    let c = node(&url, 3, &data).await;

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
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let b = node(&url, 1, &data).await;
    let c = node(&url, 2, &data).await;
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
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let a = node(&url, 1, &data).await;
    let b = node(&url, 2, &data).await;
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
    let b = node(&url, 2, &data).await;
    let (status, online) = post(&b, "/user/onlinestatus", json!(["on-a", "on-b"])).await;
    assert_eq!(
        (status, online),
        (200, json!([{"uid": "on-a", "device_flag": 1, "online": 1}]))
    );
    for n in [a, b] {
        n.sigterm_and_wait().await;
    }
}

/// A node of the cluster with a short lease, so that a lost node is noticed quickly.
async fn node_leased(url: &str, id: u64, data: &tempfile::TempDir, lease: &str) -> Node {
    let dir = data.path().join(format!("node{id}"));
    let node_id = id.to_string();
    start_node_with(
        &dir,
        "info",
        &[
            "--database-url",
            url,
            "--node-id",
            &node_id,
            "--node-lease",
            lease,
        ],
    )
    .await
}

async fn get(node: &Node, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", node.api)).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every event of the shared log, read through `node`'s API.
async fn all_events(node: &Node) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = get(node, &format!("/events?after={after}&limit=1000")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        let Some(last) = events.last() else {
            return out;
        };
        after = last["seq"].as_u64().unwrap();
        out.extend(events);
    }
}

/// The lease of the nodes whose peer is killed: short, so that the loss is noticed quickly.
const LOST_LEASE_MS: i64 = 2_000;

#[tokio::test]
async fn a_killed_node_s_sessions_are_closed_as_node_lost_exactly_once_by_racing_survivors() {
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let lease = format!("{LOST_LEASE_MS}ms");
    let a = node_leased(&url, 1, &data, &lease).await;
    let b = node_leased(&url, 2, &data, &lease).await;
    let c = node_leased(&url, 3, &data, &lease).await;
    let uids: Vec<String> = (0..100).map(|i| format!("held{i}")).collect();
    let mut sockets = Vec::new();
    for uid in &uids {
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        assert_eq!(post(&a, "/user/token", set).await.0, 200);
        let (ws, answer) = connect(&c, uid, "t", 1, "d").await;
        assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
        sockets.push(ws);
    }
    let asked = json!(uids);
    eventually(
        "A seeing every session C holds",
        async || post(&a, "/user/onlinestatus", asked.clone()).await,
        |(_, online)| online.as_array().is_some_and(|rows| rows.len() == 100),
    )
    .await;
    let (_, nodes) = get(&a, "/cluster/nodes").await;
    assert_eq!(nodes[2]["node_id"], 3, "{nodes}");
    assert_eq!(nodes[2]["sessions_open"], 100, "{nodes}");
    assert_eq!(nodes[2]["alive"], true, "{nodes}");

    // The moment of the kill by this machine's clock, which stamps `recorded_at` on every
    // node too: taken before the signal, so the bound below counts from no later than the kill.
    let killed_at = now_ms();
    c.sigkill().await;
    // Both survivors look every fifth of the lease; each closes what it finds open.
    for n in [&a, &b] {
        eventually(
            "the killed node's sessions gone everywhere",
            async || post(n, "/user/onlinestatus", asked.clone()).await,
            |seen| *seen == (200, json!([])),
        )
        .await;
    }
    let events = all_events(&a).await;
    let mut closes = std::collections::HashMap::<String, Vec<String>>::new();
    for e in events.iter().filter(|e| e["type"] == "Disconnected") {
        closes
            .entry(e["data"]["session_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["data"]["reason"].as_str().unwrap().to_owned());
    }
    assert_eq!(closes.len(), 100, "one close per session");
    for (session, reasons) in &closes {
        assert_eq!(reasons, &vec!["node_lost".to_owned()], "session {session}");
    }
    // Within lease + 2 s of the kill (protocol.md 6.4), by each close's own time in the log:
    // the lease ran out at most one lease after the kill, and a survivor noticed and closed.
    let bound = LOST_LEASE_MS + 2_000;
    let after_kill: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "Disconnected")
        .map(|e| e["recorded_at"].as_i64().unwrap() - killed_at)
        .collect();
    let (first, last) = (after_kill.iter().min(), after_kill.iter().max());
    let by_a = events
        .iter()
        .filter(|e| e["type"] == "Disconnected" && e["node_id"] == 1)
        .count();
    eprintln!(
        "node_lost: closes {first:?}..{last:?} ms after the kill; {by_a} by A, {} by B",
        after_kill.len() - by_a
    );
    assert!(
        first.is_some_and(|&ms| ms >= 0),
        "no session of a live node is closed: the first close {first:?} ms after the kill"
    );
    assert!(
        last.is_some_and(|&ms| ms <= bound),
        "every session closed within lease + 2 s ({bound} ms) of the kill: the last {last:?} ms after it"
    );
    let (_, nodes) = get(&a, "/cluster/nodes").await;
    assert_eq!(nodes[2]["alive"], false, "{nodes}");
    assert_eq!(nodes[2]["sessions_open"], 0, "{nodes}");
    for n in [a, b] {
        n.sigterm_and_wait().await;
    }
}

#[tokio::test]
async fn a_node_frozen_past_its_lease_closes_its_sockets_and_brings_no_session_back() {
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let a = node_leased(&url, 1, &data, "1s").await;
    let b = node_leased(&url, 2, &data, "1s").await;
    let set = json!({"uid": "frozen", "token": "t", "device_flag": 1, "device_level": 0});
    assert_eq!(post(&a, "/user/token", set).await.0, 200);
    let (mut ws, answer) = connect(&b, "frozen", "t", 1, "d").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    eventually(
        "A seeing the session B holds",
        async || post(&a, "/user/onlinestatus", json!(["frozen"])).await,
        |seen| {
            *seen
                == (
                    200,
                    json!([{"uid": "frozen", "device_flag": 1, "online": 1}]),
                )
        },
    )
    .await;

    b.signal("STOP");
    eventually(
        "the frozen node's session closed by its peer",
        async || post(&a, "/user/onlinestatus", json!(["frozen"])).await,
        |seen| *seen == (200, json!([])),
    )
    .await;
    b.signal("CONT");
    // Resumed, it finds its lease run out: it closes the socket as going away.
    assert_eq!(expect_close(&mut ws).await, 1001);
    // It never brings the session back, and serves again under a new lease.
    let (_, online) = post(&a, "/user/onlinestatus", json!(["frozen"])).await;
    assert_eq!(online, json!([]));
    let (mut again, _) = eventually(
        "the resumed node taking connects again",
        async || connect(&b, "frozen", "t", 1, "d").await,
        |(_, answer)| answer["result"]["reasonCode"] == 1,
    )
    .await;
    assert_pings(&mut again).await;
    let events = all_events(&a).await;
    let reasons: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "Disconnected")
        .map(|e| &e["data"]["reason"])
        .collect();
    assert_eq!(reasons, vec!["node_lost"], "one close, by the peer");
    for n in [a, b] {
        n.sigterm_and_wait().await;
    }
}

#[tokio::test]
async fn a_second_live_node_with_the_same_id_is_refused() {
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let a = node_leased(&url, 7, &data, "1s").await;
    let dir = data.path().join("twin");
    let refused = serve_refused(
        &dir,
        &[
            "--database-url",
            &url,
            "--node-id",
            "7",
            "--node-lease",
            "1s",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("node id 7 is held by a live node"), "{err}");
    a.sigterm_and_wait().await;
    // Stopped cleanly, it gave the lease up: the id is free at once.
    let again = node_leased(&url, 7, &data, "1s").await;
    again.sigterm_and_wait().await;
}

#[tokio::test]
async fn two_nodes_deciding_for_one_uid_at_once_leave_one_master_session() {
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let a = node(&url, 1, &data).await;
    let b = node(&url, 2, &data).await;
    let set = json!({"uid": "race", "token": "t", "device_flag": 1, "device_level": 1});
    assert_eq!(post(&a, "/user/token", set).await.0, 200);
    let mut connects = tokio::task::JoinSet::new();
    for i in 0..24 {
        let target = if i % 2 == 0 {
            a.ws.clone()
        } else {
            b.ws.clone()
        };
        connects.spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(&target).await.unwrap();
            let frame = easy_connect("race", "t", &format!("dev{i}"), 1, now_ms(), "c1");
            ws.send(Message::text(frame)).await.unwrap();
            let answer = next_json(&mut ws).await;
            (ws, answer)
        });
    }
    let mut held = Vec::new();
    while let Some(done) = connects.join_next().await {
        held.push(done.unwrap());
    }
    // Every connect is recorded, each replacing the master before it: one is left open.
    let events = eventually(
        "every connect in the log as A reads it",
        async || all_events(&a).await,
        |events| events.iter().filter(|e| e["type"] == "Connected").count() == 24,
    )
    .await;

    let opened = events.iter().filter(|e| e["type"] == "Connected").count();
    let closed = events
        .iter()
        .filter(|e| e["type"] == "Disconnected")
        .count();
    let answers: Vec<&Option<Value>> = held
        .iter()
        .map(|(_, answer)| answer)
        .filter(|a| a.as_ref().is_none_or(|a| a["result"]["reasonCode"] != 1))
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| format!("{}:{}:{}", e["seq"], e["type"], e["node_id"]))
        .collect();
    assert_eq!(opened, 24, "{answers:?} {kinds:?}");
    assert_eq!(opened - closed, 1, "exactly one master session open");
    for n in [a, b] {
        n.sigterm_and_wait().await;
    }
}
