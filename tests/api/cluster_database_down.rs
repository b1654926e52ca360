//! Three real `wkuser serve` processes while their one PostgreSQL is killed (kill -9) and
//! started again, under load (protocol.md 6.5): token updates and WebSocket connects keep
//! arriving at every node throughout.
//!
//! What it holds: while the database is down, mutations answer 503 in the contract's envelope,
//! connects get error code 15 and close 1011, `/readyz` answers 503 and reads from memory keep
//! answering; once it is back, every node is ready and acknowledges again without a restart;
//! every acknowledged token update and connect is in the shared log exactly once, seq is dense
//! 1..N, and the real `wkuser verify` finds the view equal to a rebuild of the log. Every
//! answer the clients got is journalled, and any other answer (a 500, a hang, a dropped
//! socket) fails the test, as does a session left online. Every wait is bounded. Twice: with
//! leases that outlast the outage, and with leases that run out during it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{assert_exit, stdout, wkuser};
use crate::helpers::*;

const NODES: usize = 3;
/// Clients setting tokens on each node, each a new uid per request.
const TOKEN_SETTERS: usize = 3;
/// Clients connecting to each node's gateway, each its own uid and a new device per connect.
const CONNECTORS: usize = 2;
/// How long a client waits for one answer before it counts as a hang. While the database is
/// down a node's writer takes one batch at a time, and each fails only once the node has
/// waited 5 s for a connection (10 s more for a batch whose commit answer was lost): a request
/// may wait behind a few of them.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);
/// How long the clients may take, between them, to see every node refuse while the database
/// is down: a few of those batches, one after the other.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(90);
/// The pause of a client after an answer that was not an acknowledgement, so that the clients
/// do not spin while the database is down.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What one request of a client got.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// `/user/token` answered 200: the uid whose token was set.
    TokenSet(String),
    /// `/user/token` answered 503 with the contract's envelope.
    TokenUnavailable,
    /// The connect answered `reasonCode` 1: the device id it connected with.
    Connected(String),
    /// The connect answered error code 15, then the socket closed with 1011.
    ConnectRefused,
    /// Anything else: what it was.
    Unexpected(String),
}

/// One answer, on which node, when.
#[derive(Debug, Clone)]
struct Answer {
    node: usize,
    at: Instant,
    outcome: Outcome,
}

/// Every answer every client got, in the order they arrived.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<Answer>>>);

impl Journal {
    fn record(&self, node: usize, outcome: Outcome) {
        self.0.lock().push(Answer {
            node,
            at: Instant::now(),
            outcome,
        });
    }

    fn answers(&self) -> Vec<Answer> {
        self.0.lock().clone()
    }

    /// How many answers of each node since `since` `kind` accepts.
    fn count_per_node(&self, since: Instant, kind: impl Fn(&Outcome) -> bool) -> Vec<usize> {
        let mut counts = vec![0; NODES];
        for a in self.0.lock().iter() {
            if a.at >= since && kind(&a.outcome) {
                counts[a.node] += 1;
            }
        }
        counts
    }
}

fn unavailable() -> Value {
    json!({"msg": "storage unavailable, retry later", "status": 503})
}

/// Sets a token for a new uid, again and again, until `stop`.
async fn set_tokens(
    api: String,
    node: usize,
    setter: usize,
    journal: Journal,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_LIMIT)
        .build()
        .unwrap();
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let uid = format!("tok-{node}-{setter}-{i}");
        let body =
            json!({"uid": uid, "token": format!("t{i}"), "device_flag": 1, "device_level": 0});
        let sent = http
            .post(format!("{api}/user/token"))
            .body(body.to_string())
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                match status {
                    200 if body == json!({"status": 200}) => Outcome::TokenSet(uid),
                    503 if body == unavailable() => Outcome::TokenUnavailable,
                    _ => Outcome::Unexpected(format!("/user/token of {uid}: {status} {body}")),
                }
            }
            Err(e) => Outcome::Unexpected(format!("/user/token of {uid}: no answer: {e}")),
        };
        let acknowledged = matches!(outcome, Outcome::TokenSet(_));
        journal.record(node, outcome);
        if !acknowledged {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Connects as `uid` with a new device id, again and again, until `stop`; closes each socket
/// it got (its end is recorded, or retried until it is).
async fn connect_again_and_again(
    ws: String,
    node: usize,
    uid: String,
    journal: Journal,
    stop: Arc<AtomicBool>,
) {
    for i in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let device = format!("{uid}-d{i}");
        let outcome = tokio::time::timeout(ANSWER_LIMIT, connect_once(&ws, &uid, &device))
            .await
            .unwrap_or_else(|_| {
                Outcome::Unexpected(format!(
                    "connect of {device}: no answer in {ANSWER_LIMIT:?}"
                ))
            });
        let acknowledged = matches!(outcome, Outcome::Connected(_));
        journal.record(node, outcome);
        if !acknowledged {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn connect_once(ws_url: &str, uid: &str, device: &str) -> Outcome {
    let mut ws = match tokio_tungstenite::connect_async(ws_url).await {
        Ok((ws, _)) => ws,
        Err(e) => return Outcome::Unexpected(format!("connect of {device}: no socket: {e}")),
    };
    let frame = easy_connect(uid, "t", device, 1, now_ms(), "c1");
    if let Err(e) = ws.send(Message::text(frame)).await {
        return Outcome::Unexpected(format!("connect of {device}: not sent: {e}"));
    }
    let answer = match next_message(&mut ws).await {
        Some(Message::Text(t)) => serde_json::from_str::<Value>(t.as_str()).unwrap_or(Value::Null),
        other => return Outcome::Unexpected(format!("connect of {device}: answered {other:?}")),
    };
    if answer["result"]["reasonCode"] == 1 {
        // The client hangs up: the session's end is the node's to record.
        let _ = ws.close(None).await;
        while next_message(&mut ws).await.is_some() {}
        return Outcome::Connected(device.to_owned());
    }
    let refused =
        json!({"jsonrpc": "2.0", "id": "c1", "error": {"code": 15, "message": "system error"}});
    if answer != refused {
        return Outcome::Unexpected(format!("connect of {device}: answered {answer}"));
    }
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) if u16::from(frame.code) == 1011 => {
            Outcome::ConnectRefused
        }
        other => Outcome::Unexpected(format!("connect of {device}: code 15, then {other:?}")),
    }
}

/// The next message other than a ping or pong; `None` once the socket is gone.
async fn next_message(ws: &mut Ws) -> Option<Message> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(_)) | None => return None,
        }
    }
}

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

async fn readyz(api: &str) -> u16 {
    reqwest::get(format!("{api}/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every event of the shared log, read through a node's API.
async fn all_events(api: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let resp = reqwest::get(format!("{api}/events?after={after}&limit=1000"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let page: Value = resp.json().await.unwrap();
        let events = page["events"].as_array().unwrap().clone();
        let Some(last) = events.last() else {
            return out;
        };
        after = last["seq"].as_u64().unwrap();
        out.extend(events);
    }
}

/// The last seq of the shared log, read from the database.
async fn log_end(url: &str) -> u64 {
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let end: i64 = sqlx::query_scalar("SELECT max(seq) FROM log_events")
        .fetch_one(&mut db)
        .await
        .unwrap();
    db.close().await.ok();
    end as u64
}

/// How many events of `kind` the log holds per value of `data[field]`.
fn count_by(events: &[Value], kind: &str, field: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in events.iter().filter(|e| e["type"] == kind) {
        let key = e["data"][field].as_str().unwrap().to_owned();
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn three_nodes_under_load_lose_no_acknowledged_event_to_a_kill_9_of_postgres_and_recover() {
    // A lease far past the outage: the nodes keep theirs, and only the database is away.
    outage_under_load("300s").await;
}

#[tokio::test]
async fn an_outage_past_the_lease_fences_every_node_and_they_come_back_with_nothing_lost() {
    // Every node's lease runs out while the database is down: each fences itself, then takes
    // a new lease once it is back, while its peers may declare it lost.
    outage_under_load("5s").await;
}

/// Three nodes with leases of `lease`, clients on every node, PostgreSQL killed and restarted
/// under them; then every check of the module's header.
async fn outage_under_load(lease: &str) {
    let mut pg = ThrowawayPostgres::start().await;
    let url = pg.url();
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=NODES {
        let dir = data.path().join(id.to_string());
        let id = id.to_string();
        let args = [
            "--database-url",
            &url,
            "--node-id",
            &id,
            "--node-lease",
            lease,
        ];
        nodes.push(start_node_with(&dir, "info", &args).await);
    }
    let connectors: Vec<(usize, String)> = (0..NODES)
        .flat_map(|n| (0..CONNECTORS).map(move |c| (n, format!("conn-{n}-{c}"))))
        .collect();
    for (n, uid) in &connectors {
        let set = json!({"uid": uid, "token": "t", "device_flag": 1, "device_level": 0});
        assert_eq!(post(&nodes[*n].api, "/user/token", set).await.0, 200);
    }

    let journal = Journal::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        for s in 0..TOKEN_SETTERS {
            clients.spawn(set_tokens(
                node.api.clone(),
                n,
                s,
                journal.clone(),
                stop.clone(),
            ));
        }
    }
    for (n, uid) in &connectors {
        let ws = nodes[*n].ws.clone();
        clients.spawn(connect_again_and_again(
            ws,
            *n,
            uid.clone(),
            journal.clone(),
            stop.clone(),
        ));
    }
    let began = Instant::now();
    eventually(
        "every node acknowledging token sets and connects under load",
        async || {
            let tokens = journal.count_per_node(began, |o| matches!(o, Outcome::TokenSet(_)));
            let connects = journal.count_per_node(began, |o| matches!(o, Outcome::Connected(_)));
            (tokens, connects)
        },
        |(tokens, connects)| tokens.iter().chain(connects).all(|&n| n >= 3),
    )
    .await;

    pg.kill9().await;
    let killed = Instant::now();
    assert_eq!(
        pg.processes(),
        Vec::<u32>::new(),
        "no process of the server survives"
    );
    eventually_within(
        OUTAGE_PATIENCE,
        "every node answering mutations 503 and connects code 15",
        async || {
            let refused = journal.count_per_node(killed, |o| *o == Outcome::TokenUnavailable);
            let connects = journal.count_per_node(killed, |o| *o == Outcome::ConnectRefused);
            (refused, connects)
        },
        |(refused, connects)| refused.iter().chain(connects).all(|&n| n >= 1),
    )
    .await;
    for node in &nodes {
        eventually_within(
            OUTAGE_PATIENCE,
            "/readyz 503 while the database is down",
            async || readyz(&node.api).await,
            |status| *status == 503,
        )
        .await;
        // Reads from memory keep answering.
        let (status, _) = post(&node.api, "/user/onlinestatus", json!(["conn-0-0"])).await;
        assert_eq!(status, 200);
    }
    let outage = killed.elapsed();

    pg.restart().await;
    let restarted = Instant::now();
    for node in &nodes {
        eventually(
            "/readyz 200 once the database is back, without a restart",
            async || readyz(&node.api).await,
            |status| *status == 200,
        )
        .await;
    }
    eventually(
        "every node acknowledging token sets and connects again",
        async || {
            let tokens = journal.count_per_node(restarted, |o| matches!(o, Outcome::TokenSet(_)));
            let connects =
                journal.count_per_node(restarted, |o| matches!(o, Outcome::Connected(_)));
            (tokens, connects)
        },
        |(tokens, connects)| tokens.iter().chain(connects).all(|&n| n >= 3),
    )
    .await;
    stop.store(true, Ordering::Release);
    // Each client ends after its request in flight, which is bounded by ANSWER_LIMIT.
    tokio::time::timeout(ANSWER_LIMIT + PATIENCE, clients.join_all())
        .await
        .expect("every client ends once told to stop");

    let answers = journal.answers();
    let unexpected: Vec<&Answer> = answers
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Unexpected(_)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "answers outside the contract: {unexpected:#?}"
    );
    // The closes the log refused while the database was down are retried until recorded:
    // every session ends, on every node.
    let conn_uids: Vec<&String> = connectors.iter().map(|(_, uid)| uid).collect();
    for node in &nodes {
        eventually(
            "every closed socket's session ended everywhere",
            async || post(&node.api, "/user/onlinestatus", json!(conn_uids)).await,
            |seen| *seen == (200, json!([])),
        )
        .await;
    }

    // The log: dense, every event once, every acknowledgement in it exactly once. A node's
    // `/events` shows what it has published, so it is read once it has reached the log's end.
    let end = log_end(&url).await;
    let events = eventually(
        "node 1 publishing the log to its end",
        async || all_events(&nodes[0].api).await,
        |events| events.last().is_some_and(|e| e["seq"] == end),
    )
    .await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "seq dense from 1, at {e}");
    }
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "no event recorded twice");
    let tokens = count_by(&events, "TokenUpdated", "uid");
    let connects = count_by(&events, "Connected", "device_id");
    let (mut tokens_acked, mut connects_acked) = (0, 0);
    for a in &answers {
        match &a.outcome {
            Outcome::TokenSet(uid) => {
                tokens_acked += 1;
                assert_eq!(tokens.get(uid), Some(&1), "acknowledged token of {uid}");
            }
            Outcome::Connected(device) => {
                connects_acked += 1;
                assert_eq!(
                    connects.get(device),
                    Some(&1),
                    "acknowledged connect {device}"
                );
            }
            _ => {}
        }
    }
    // Nothing is recorded twice either, acknowledged or not (a request in flight at the kill
    // may have been recorded without its answer).
    for (what, n) in tokens.iter().chain(&connects) {
        assert_eq!(*n, 1, "{what} recorded {n} times");
    }

    let verified = wkuser(&["verify", "--database-url", &url]).await;
    assert_exit(&verified, 0);
    assert!(
        stdout(&verified).contains("the view matches a rebuild of the log"),
        "{}",
        stdout(&verified)
    );
    let count = |kind: &Outcome| answers.iter().filter(|a| a.outcome == *kind).count();
    let in_doubt: usize = nodes
        .iter()
        .map(|n| {
            let lines = n.stderr.lock();
            lines
                .iter()
                .filter(|l| l.contains("cannot learn whether a batch"))
                .count()
        })
        .sum();
    eprintln!(
        "lease {lease}, database down for {outage:?}: {tokens_acked} token sets and {connects_acked} connects \
         acknowledged, {} answered 503, {} refused with code 15, {in_doubt} appends in doubt; \
         {} events in the log",
        count(&Outcome::TokenUnavailable),
        count(&Outcome::ConnectRefused),
        events.len()
    );
    for node in nodes {
        node.sigterm_and_wait().await;
    }
}
