//! Replay and start-up, measured on a log of a million events (issue "Durable lifetimes",
//! point 7): full replay into SQLite beside a plain batched insert of the same final rows
//! (the ceiling, in the same run), and start-to-ready with an up-to-date view beside an empty
//! one.
//!
//! `cargo run --release --example replay_bench [-- EVENTS]` (default 1,000,000). Everything lives
//! in a temporary directory that is removed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wkuser::app::Server;
use wkuser::config::Config;
use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::log::{EncodedRecord, EventLog, LogStore, SledStore};
use wkuser::ops::replay::{replay_into_file, Until};

/// A realistic mix: every user gets a token, most connect and disconnect several times, some
/// quit a device, a few are system uids; a node lifetime frames it all.
fn mix(total: u64) -> Vec<Event> {
    let users = (total / 10).max(1);
    let mut events = Vec::with_capacity(total as usize);
    let node = NodeId(1);
    events.push(Event::NodeStarted(NodeStart {
        node_id: node,
        boot_id: Uuid::now_v7(),
        version: "bench".into(),
        api_addr: None,
        ws_addr: None,
    }));
    let uid = |i: u64| Uid::parse(&format!("user_{i}")).unwrap();
    for i in 0..users {
        events.push(Event::TokenUpdated(TokenUpdated {
            uid: uid(i),
            device_flag: DeviceFlag(1 + (i % 2) as u8),
            device_level: if i % 3 == 0 {
                DeviceLevel::Master
            } else {
                DeviceLevel::Slave
            },
            token_hash: Token::parse(&format!("token-{i}")).unwrap().hash(),
        }));
    }
    events.push(Event::SystemUidsAdded(SystemUids {
        uids: (0..10).map(uid).collect(),
    }));
    let reasons = [
        CloseReason::ClientClosed,
        CloseReason::IdleTimeout,
        CloseReason::MasterLogin,
        CloseReason::Replaced,
    ];
    let mut k = 0u64;
    while (events.len() as u64) + 2 <= total {
        let i = k % users;
        let flag = DeviceFlag(1 + (i % 2) as u8);
        if k.is_multiple_of(97) {
            events.push(Event::DeviceQuit(DeviceQuit {
                uid: uid(i),
                device_flag: QuitScope::One(flag),
            }));
            events.push(Event::TokenUpdated(TokenUpdated {
                uid: uid(i),
                device_flag: flag,
                device_level: DeviceLevel::Slave,
                token_hash: Token::parse(&format!("token-{i}-{k}")).unwrap().hash(),
            }));
        } else {
            let session_id = SessionId::new();
            events.push(Event::Connected(Connected {
                session_id,
                uid: uid(i),
                device_flag: flag,
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse(&format!("web_{i:08x}_{k}")).unwrap(),
                node_id: node,
                peer: format!("10.0.{}.{}:{}", (i / 250) % 250, i % 250, 40000 + k % 20000),
            }));
            events.push(Event::Disconnected(Disconnected {
                session_id,
                uid: uid(i),
                device_flag: flag,
                reason: reasons[(k % 4) as usize],
            }));
        }
        k += 1;
    }
    events
}

fn fill_log(dir: &std::path::Path, events: Vec<Event>) -> u64 {
    let store = SledStore::open(dir).unwrap();
    let mut seq = Seq(0);
    let base = 1_795_000_000_000i64;
    let mut batch = Vec::with_capacity(10_000);
    let n = events.len() as u64;
    for event in events {
        seq = seq.next();
        let recorded = RecordedEvent {
            seq,
            event_id: Uuid::now_v7(),
            recorded_at: base + seq.0 as i64,
            node_id: NodeId(1),
            event,
        };
        batch.push(EncodedRecord {
            seq,
            bytes: recorded.encode(),
            uids: recorded.event.uids().to_vec(),
        });
        if batch.len() == 10_000 {
            store.write(&batch).unwrap();
            batch.clear();
        }
    }
    store.write(&batch).unwrap();
    store.flush().unwrap();
    n
}

/// A closed or open session as its final row: id, uid, flag, device, peer, connected seq,
/// disconnected seq, reason.
type SessionRow = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<&'static str>,
);

/// The ceiling: the final rows that replay produces, inserted directly in batches of the
/// projector's size, into the same schema.
async fn plain_insert(path: &std::path::Path, events: &[Event]) -> (u64, Duration) {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = wkuser::view::sqlite::pool_options(4)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::migrate!("migrations/sqlite")
        .run(&pool)
        .await
        .unwrap();
    // Final rows, computed outside the timing.
    let mut users = std::collections::BTreeMap::new();
    let mut tokens = std::collections::BTreeMap::new();
    let mut sessions: Vec<SessionRow> = Vec::new();
    let mut open = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let seq = i as i64 + 1;
        match e {
            Event::TokenUpdated(t) => {
                users.entry(t.uid.to_string()).or_insert(seq);
                tokens.insert(
                    (t.uid.to_string(), t.device_flag.0),
                    (t.device_level.as_u8(), Some(t.token_hash.to_hex()), seq),
                );
            }
            Event::DeviceQuit(q) => {
                for ((u, f), v) in tokens.iter_mut() {
                    if *u == q.uid.as_str() && q.device_flag.covers(DeviceFlag(*f)) {
                        v.1 = None;
                        v.2 = seq;
                    }
                }
            }
            Event::Connected(c) => {
                open.insert(c.session_id, sessions.len());
                sessions.push((
                    c.session_id.to_string(),
                    c.uid.to_string(),
                    c.device_flag.0.into(),
                    c.device_id.as_str().to_owned(),
                    c.peer.clone(),
                    seq,
                    None,
                    None,
                ));
            }
            Event::Disconnected(d) => {
                if let Some(i) = open.remove(&d.session_id) {
                    sessions[i].6 = Some(seq);
                    sessions[i].7 = Some(d.reason.as_str());
                }
            }
            _ => {}
        }
    }
    let rows = (users.len() + tokens.len() + sessions.len()) as u64;
    let started = Instant::now();
    // The same shape of writes the projector uses: a transaction per batch of the projector's
    // size, multi-row statements of 64 rows.
    let chunk = wkuser::view::projector::BATCH;
    let users: Vec<_> = users.into_iter().collect();
    for part in users.chunks(chunk) {
        let mut tx = pool.begin().await.unwrap();
        for rows in part.chunks(64) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO users (uid, created_seq, created_at) ");
            q.push_values(rows, |mut b, (uid, seq)| {
                b.push_bind(uid).push_bind(seq).push_bind(seq);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let tokens: Vec<_> = tokens.into_iter().collect();
    for part in tokens.chunks(chunk) {
        let mut tx = pool.begin().await.unwrap();
        for rows in part.chunks(64) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO tokens (uid, device_flag, device_level, token_hash, updated_seq, updated_at) ",
            );
            q.push_values(rows, |mut b, ((uid, flag), (level, hash, seq))| {
                b.push_bind(uid)
                    .push_bind(i64::from(*flag))
                    .push_bind(i64::from(*level))
                    .push_bind(hash)
                    .push_bind(seq)
                    .push_bind(seq);
            });
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    for part in sessions.chunks(chunk) {
        let mut tx = pool.begin().await.unwrap();
        for rows in part.chunks(64) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO device_sessions (session_id, uid, device_flag, device_level, device_id, node_id, peer, \
                 connected_seq, connected_at, disconnected_seq, disconnected_at, reason) ",
            );
            q.push_values(
                rows,
                |mut b, (sid, uid, flag, device, peer, cseq, dseq, reason)| {
                    b.push_bind(sid)
                        .push_bind(uid)
                        .push_bind(flag)
                        .push_bind(0i64)
                        .push_bind(device)
                        .push_bind(1i64)
                        .push_bind(peer)
                        .push_bind(cseq)
                        .push_bind(cseq)
                        .push_bind(dseq)
                        .push_bind(dseq)
                        .push_bind(reason);
                },
            );
            q.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let elapsed = started.elapsed();
    pool.close().await;
    (rows, elapsed)
}

async fn time_start(data_dir: &std::path::Path) -> Duration {
    let config = Config::from_args([
        "--data-dir",
        &data_dir.display().to_string(),
        "--api-addr",
        "127.0.0.1:0",
        "--ws-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    let started = Instant::now();
    let server = Server::start(config).await.unwrap();
    let ready = started.elapsed();
    server.shutdown().await;
    ready
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let events = mix(total);
    let n = events.len() as u64;
    let filled = Instant::now();
    fill_log(&data.join("log"), events.clone());
    println!(
        "filled a log of {n} events in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    // Alternate the two, twice, and keep each one's best: the machine is shared and noisy.
    let store: Arc<dyn LogStore> = Arc::new(SledStore::open(&data.join("log")).unwrap());
    let log = EventLog::start(store, NodeId(1)).unwrap();
    let mut ceiling = Duration::MAX;
    let mut replayed = Duration::MAX;
    let mut rows = 0;
    let mut replayed_events = 0;
    for round in 0..2 {
        let (r, took) =
            plain_insert(&dir.path().join(format!("ceiling{round}.sqlite")), &events).await;
        rows = r;
        ceiling = ceiling.min(took);
        let report = replay_into_file(
            &log,
            &dir.path().join(format!("replayed{round}.sqlite")),
            Until::End,
            |_| {},
        )
        .await
        .unwrap();
        replayed_events = report.events;
        replayed = replayed.min(report.elapsed);
        println!(
            "round {round}: ceiling {:.2} s, replay {:.2} s",
            took.as_secs_f64(),
            report.elapsed.as_secs_f64()
        );
    }
    drop(events);
    log.close().await;
    drop(log);
    println!(
        "ceiling: plain batched insert of the {rows} final rows: {:.2} s ({:.0} events/s equivalent)",
        ceiling.as_secs_f64(),
        n as f64 / ceiling.as_secs_f64()
    );
    println!(
        "replay: {replayed_events} events in {:.2} s ({:.0} events/s) = {:.2}x the ceiling's rate",
        replayed.as_secs_f64(),
        replayed_events as f64 / replayed.as_secs_f64(),
        ceiling.as_secs_f64() / replayed.as_secs_f64()
    );

    // Start with an empty view (it is rebuilt from the whole log), then again with it up to date.
    let empty = time_start(&data).await;
    let current = time_start(&data).await;
    println!(
        "start to ready: empty view {:.2} s, up-to-date view {:.3} s ({:.0}x faster)",
        empty.as_secs_f64(),
        current.as_secs_f64(),
        empty.as_secs_f64() / current.as_secs_f64()
    );
}
