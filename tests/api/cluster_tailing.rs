//! The one log over real processes (protocol.md 6.1): three `wkuser serve` nodes on one
//! throwaway PostgreSQL append at once while a tailer follows the log through `/events?after=`,
//! asking each node in turn: it reads every seq once, in order, up to the log's end, and every
//! acknowledged token set is among them. `log_postgres::tailing` shows, in-process, that the
//! same way of tailing does catch the skip of a naive `bigserial` table.
//!
//! A node's `/events` shows the log up to what that node has published (its own tail trails
//! the others' commits by a poll): a prefix, so the tailer waits for the log's end, read from
//! the database once the writers are done, instead of stopping at the first empty page.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::watch;

use crate::helpers::*;

const NODES: usize = 3;
const WRITERS_PER_NODE: usize = 4;
const SETS_EACH: usize = 25;

/// The events after `after` as `api` reads them from the shared log.
async fn events_after(http: &reqwest::Client, api: &str, after: u64) -> Vec<Value> {
    let resp = http
        .get(format!("{api}/events?after={after}&limit=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    page["events"].as_array().unwrap().clone()
}

/// Follows the log with `seq > last`, asking the nodes in turn, until it has read up to the
/// end it is told once the writers are done; returns every event read, in order.
async fn tail(apis: Vec<String>, log_end: watch::Receiver<Option<u64>>) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut seen: Vec<Value> = Vec::new();
    for turn in 0.. {
        let last = seen.last().map_or(0, |e| e["seq"].as_u64().unwrap());
        if log_end.borrow().is_some_and(|end| last >= end) {
            return seen;
        }
        let page = events_after(&http, &apis[turn % apis.len()], last).await;
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.extend(page);
    }
    unreachable!()
}

#[tokio::test]
async fn three_nodes_append_at_once_and_a_tailer_of_events_reads_every_seq_once_in_order() {
    let pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=NODES {
        let dir = data.path().join(id.to_string());
        let id = id.to_string();
        nodes
            .push(start_node_with(&dir, "info", &["--database-url", &url, "--node-id", &id]).await);
    }
    let apis: Vec<String> = nodes.iter().map(|n| n.api.clone()).collect();
    let (log_end, told) = watch::channel(None);
    let tailer = tokio::spawn(tail(apis.clone(), told));

    let mut writers = tokio::task::JoinSet::new();
    for (n, api) in apis.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let api = api.clone();
            writers.spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..SETS_EACH {
                    let uid = format!("n{n}-w{w}-{i}");
                    let set =
                        json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
                    let resp = http
                        .post(format!("{api}/user/token"))
                        .body(set.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200, "{uid}");
                }
            });
        }
    }
    tokio::time::timeout(PATIENCE, writers.join_all())
        .await
        .expect("every writer done");
    // Every token set is acknowledged, hence committed: the log's end now is the end to read.
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let end: i64 = sqlx::query_scalar("SELECT max(seq) FROM log_events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.ok();
    log_end.send_replace(Some(end as u64));
    let read = tokio::time::timeout(PATIENCE, tailer)
        .await
        .expect("the tailer ends")
        .expect("the tailer does not panic");

    let seqs: Vec<u64> = read.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=end as u64).collect::<Vec<_>>(),
        "every seq once, in order, to the log's end"
    );
    let recorded: std::collections::HashSet<&str> = read
        .iter()
        .filter(|e| e["type"] == "TokenUpdated")
        .map(|e| e["data"]["uid"].as_str().unwrap())
        .collect();
    let missing: Vec<String> = (0..NODES)
        .flat_map(|n| (0..WRITERS_PER_NODE).map(move |w| (n, w)))
        .flat_map(|(n, w)| (0..SETS_EACH).map(move |i| format!("n{n}-w{w}-{i}")))
        .filter(|uid| !recorded.contains(uid.as_str()))
        .collect();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "acknowledged token sets not read"
    );
    let sets = read.iter().filter(|e| e["type"] == "TokenUpdated").count();
    assert_eq!(
        sets,
        NODES * WRITERS_PER_NODE * SETS_EACH,
        "each acknowledged token set once, and no other"
    );
    // The nodes did append at once: their events interleave in the one order.
    let turns = read
        .windows(2)
        .filter(|w| w[0]["node_id"] != w[1]["node_id"])
        .count();
    assert!(
        turns >= NODES * 2,
        "the nodes' appends interleave ({turns} turns)"
    );
    for node in nodes {
        node.sigterm_and_wait().await;
    }
}
