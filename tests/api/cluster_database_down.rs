//! Several nodes while their PostgreSQL is killed (kill -9) and started again (protocol.md 6.5):
//! mutations answer 503, connects get code 15, `/readyz` 503, reads from memory keep
//! answering; every acknowledged event survives; the nodes recover by themselves.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

async fn post(api: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{api}{path}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn status_of(api: &str, path: &str) -> u16 {
    reqwest::get(format!("{api}{path}"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The answer to a connect; a node whose database is away answers once its wait for a
/// connection ends, so this waits longer than the usual frame.
async fn connect_answer(ws_url: &str, uid: &str, token: &str) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let frame = easy_connect(uid, token, "d", 1, now_ms(), "c1");
    ws.send(Message::text(frame)).await.unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .expect("an answer to connect within 20 s");
    match answer {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("no answer to connect: {other:?}"),
    }
}

#[tokio::test]
async fn while_the_database_is_down_writes_wait_and_the_nodes_recover_by_themselves() {
    let mut pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
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
        ];
        nodes.push(start_node_with(&dir, "info", &args).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let uid = format!("before{i}");
        let api = if i % 2 == 0 { &a.api } else { &b.api };
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        assert_eq!(post(api, "/user/token", set).await.0, 200);
        acknowledged.push(uid);
    }

    pg.kill9().await;
    let unavailable = json!({"msg": "storage unavailable, retry later", "status": 503});
    let set = json!({"uid": "during", "token": "t", "device_flag": 1, "device_level": 0});
    eventually(
        "a mutation answered 503 while the database is down",
        async || post(&a.api, "/user/token", set.clone()).await,
        |seen| *seen == (503, unavailable.clone()),
    )
    .await;
    eventually(
        "/readyz 503 while the database is down",
        async || status_of(&b.api, "/readyz").await,
        |status| *status == 503,
    )
    .await;
    let refused = connect_answer(&b.ws, "before1", "t").await;
    assert_eq!(refused["error"]["code"], 15, "{refused}");
    // Reads from memory keep answering.
    let (status, _) = post(&a.api, "/user/onlinestatus", json!(["before0"])).await;
    assert_eq!(status, 200);

    pg.restart().await;
    for n in [a, b] {
        eventually(
            "ready again once the database is back",
            async || status_of(&n.api, "/readyz").await,
            |status| *status == 200,
        )
        .await;
    }
    let set = json!({"uid": "after", "token": "t2", "device_flag": 1, "device_level": 0});
    eventually(
        "a mutation acknowledged again",
        async || post(&a.api, "/user/token", set.clone()).await.0,
        |status| *status == 200,
    )
    .await;
    acknowledged.push("after".into());
    let ok = connect_answer(&b.ws, "after", "t2").await;
    assert_eq!(ok["result"]["reasonCode"], 1, "{ok}");

    // Every acknowledged token is in the log once, and the seqs are dense.
    let (status, page) = {
        let resp = reqwest::get(format!("{}/events?after=0&limit=1000", a.api))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "dense seqs: {events:?}");
    }
    for uid in &acknowledged {
        let times = events
            .iter()
            .filter(|e| e["type"] == "TokenUpdated" && e["data"]["uid"] == *uid)
            .count();
        assert_eq!(times, 1, "{uid} recorded once");
    }
    for n in nodes {
        n.sigterm_and_wait().await;
    }
}
