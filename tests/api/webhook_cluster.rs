//! The webhook with several real `wkuser serve` processes on one PostgreSQL database: one node
//! delivers at a time; a node lost to kill -9 gets offline entries for its sessions
//! (`node_lost`), and delivery passes to another node, which resumes from the shared cursor,
//! resending exactly the batch that was in flight.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use wkuser::domain::{CloseReason, Event, Seq};

use crate::helpers::*;
use crate::webhook_receiver::{assert_same_entries, expected_entries, Receiver};

async fn webhook_node(
    db: &TestDatabase,
    id: u64,
    data: &tempfile::TempDir,
    receiver: &Receiver,
) -> Node {
    let dir = data.path().join(format!("node{id}"));
    let (node_id, url) = (id.to_string(), receiver.url());
    start_node_with(
        &dir,
        "info",
        &[
            "--database-url",
            &db.url,
            "--node-id",
            &node_id,
            "--node-lease",
            "2s",
            "--webhook-url",
            &url,
        ],
    )
    .await
}

async fn stats(node: &Node) -> Value {
    reqwest::get(format!("{}/stats", node.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn connect(node: &Node, uid: &str, device: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    let frame = easy_connect(uid, "t", device, 1, now_ms(), "c1");
    ws.send(Message::text(frame)).await.unwrap();
    let answer = next_json(&mut ws).await.expect("an answer to connect");
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    ws
}

#[tokio::test]
async fn a_killed_delivering_node_hands_delivery_over_and_its_sessions_get_offline_entries() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(None).await;
    let http = reqwest::Client::new();
    // The first node started takes the turn; the second waits for it.
    let a = webhook_node(&db, 1, &data, &receiver).await;
    eventually(
        "node 1 delivering",
        async || stats(&a).await,
        |s| s["webhook_pending"].is_u64(),
    )
    .await;
    let b = webhook_node(&db, 2, &data, &receiver).await;
    for uid in ["u1", "u2"] {
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        a.post_ok(&http, "/user/token", set).await;
    }
    // Sessions on both nodes: two devices of u1 on A, one on B; u2 on B.
    let _on_a = [connect(&a, "u1", "a1").await, connect(&a, "u1", "a2").await];
    let _on_b = [connect(&b, "u1", "b1").await];
    receiver.wait_taken(3).await;
    let seen_by_b = stats(&b).await;
    assert_eq!(
        seen_by_b["webhook_pending"],
        Value::Null,
        "B does not deliver: {seen_by_b}"
    );

    // A takes the next batch to the receiver and dies before it hears the 200.
    let held = receiver.hold_next();
    let _u2 = connect(&b, "u2", "b2").await;
    let batch = tokio::time::timeout(Duration::from_secs(10), held.arrived)
        .await
        .expect("the batch arrives")
        .unwrap();
    a.sigkill().await;
    let _ = held.release.send(());

    // B takes the turn, sends that batch again exactly, then A's sessions end as node_lost.
    eventually(
        "node 2 delivering",
        async || stats(&b).await,
        |s| s["webhook_pending"].is_u64(),
    )
    .await;
    let taken = receiver.wait_taken(6).await;
    let again = receiver
        .batches()
        .into_iter()
        .filter(|x| (x.from, x.to) == (batch.from, batch.to))
        .count();
    assert_eq!(
        again, 2,
        "the batch in flight is resent exactly by the next node"
    );
    eventually(
        "nothing pending on node 2",
        async || stats(&b).await,
        |s| s["webhook_pending"] == 0,
    )
    .await;
    b.sigterm_and_wait().await;

    let log = wkuser::ops::shared::open_shared_log(&db.url).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    log.close().await;
    let lost = events
        .iter()
        .filter(|r| matches!(&r.event, Event::Disconnected(d) if d.reason == CloseReason::NodeLost))
        .count();
    assert_eq!(lost, 2, "A's two sessions closed as node_lost");
    let expected = expected_entries(&events);
    assert_same_entries(&receiver.taken(), &expected);
    // u1's two sessions on A end with counts over the whole system: B's session still open
    // until B stopped.
    assert!(
        taken[4..6].iter().all(|e| e.starts_with("u1-1-0-")),
        "{taken:?}"
    );
}

#[tokio::test]
async fn delivery_resumes_by_itself_after_the_database_is_killed_and_restarted() {
    let mut pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(None).await;
    let hook = receiver.url();
    let mut nodes = Vec::new();
    for id in ["1", "2"] {
        let dir = data.path().join(id);
        let args = [
            "--database-url",
            url.as_str(),
            "--node-id",
            id,
            "--node-lease",
            "60s",
            "--webhook-url",
            hook.as_str(),
        ];
        nodes.push(start_node_with(&dir, "info", &args).await);
    }
    let http = reqwest::Client::new();
    for uid in ["u1", "u2"] {
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        nodes[0].post_ok(&http, "/user/token", set).await;
    }
    let mut first = connect(&nodes[0], "u1", "d1").await;
    receiver.wait_taken(1).await;

    pg.kill9().await;
    pg.restart().await;
    // Once the nodes can write again: more sessions come and go, on both nodes.
    eventually(
        "a mutation acknowledged again",
        async || {
            let set = json!({"uid": "u3", "token": "t", "device_flag": 1, "device_level": 0});
            let resp = http
                .post(format!("{}/user/token", nodes[1].api))
                .body(set.to_string())
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        },
        |status| *status == 200,
    )
    .await;
    let mut second = connect(&nodes[1], "u2", "d2").await;
    let mut third = connect(&nodes[0], "u3", "d3").await;
    // Every session ends while both nodes run: a stop hands delivery from node to node, and
    // the last node's stop need not win it back before it exits (its entries then wait, in
    // the log, for the next start).
    for ws in [&mut first, &mut second, &mut third] {
        ws.close(None).await.unwrap();
    }
    receiver.wait_taken(6).await;
    for n in nodes {
        n.sigterm_and_wait().await;
    }
    let log = wkuser::ops::shared::open_shared_log(&url).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    log.close().await;
    let expected = expected_entries(&events);
    assert_eq!(expected.len(), 6, "three sessions, each started and ended");
    assert_same_entries(&receiver.taken(), &expected);
}
