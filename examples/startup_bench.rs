//! Start-up at scale (issue 21, point 3): a log of `USERS` users and `EVENTS` events, then the
//! server started on it twice: with an empty view (rebuilt from the log, with progress lines),
//! then with the view up to date (memory restored from the view's snapshot).
//!
//! `cargo run --release --example startup_bench -- [USERS [EVENTS [DATA_DIR]]]` (defaults
//! 1,000,000 users and 5,000,000 events, in a temporary directory). Each user gets a token on
//! flag 1; the rest of the events are sessions opened and closed in turn over the users, and
//! the last `USERS / 100` sessions are left open. With a `DATA_DIR` that already holds a log,
//! the log is kept and only the view is removed, so a run can be repeated without writing the
//! log again. The server logs its recovery phases (`RUST_LOG=info` shows them).

use std::time::{Duration, Instant};

use wkuser::app::Server;
use wkuser::config::Config;
use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::log::{EventLog, SledStore};

/// Events per append: one group commit each.
const APPEND: usize = 10_000;

fn uid(i: u64) -> Uid {
    Uid::parse(&format!("user_{i:07}")).unwrap()
}

/// The events of the log, `APPEND` at a time: every user's token, then sessions opened and
/// closed over the users in turn, the last `users / 100` left open.
fn batches(users: u64, events: u64) -> impl Iterator<Item = Vec<Event>> {
    let left_open = users / 100;
    let pairs = events.saturating_sub(users + left_open) / 2;
    let mut k = 0u64;
    let mut session = 0u64;
    std::iter::from_fn(move || {
        let mut batch = Vec::with_capacity(APPEND);
        while batch.len() < APPEND {
            if k < users {
                batch.push(Event::TokenUpdated(TokenUpdated {
                    uid: uid(k),
                    device_flag: DeviceFlag(1),
                    device_level: DeviceLevel::Slave,
                    token_hash: Token::parse(&format!("t{k}")).unwrap().hash(),
                }));
            } else if session < pairs + left_open {
                let i = session % users;
                let session_id = SessionId::new();
                batch.push(Event::Connected(Connected {
                    session_id,
                    uid: uid(i),
                    device_flag: DeviceFlag(1),
                    device_level: DeviceLevel::Slave,
                    device_id: DeviceId::parse(&format!("web_{i:08x}")).unwrap(),
                    node_id: NodeId(1),
                    peer: format!("10.0.{}.{}:{}", (i / 250) % 250, i % 250, 40000 + i % 20000),
                }));
                if session < pairs {
                    batch.push(Event::Disconnected(Disconnected {
                        session_id,
                        uid: uid(i),
                        device_flag: DeviceFlag(1),
                        reason: CloseReason::ClientClosed,
                    }));
                }
                session += 1;
            } else {
                break;
            }
            k += 1;
        }
        (!batch.is_empty()).then_some(batch)
    })
}

async fn fill(log_dir: &std::path::Path, users: u64, events: u64) {
    let store = std::sync::Arc::new(SledStore::open(log_dir).unwrap());
    let log = EventLog::start(store, NodeId(1)).unwrap();
    let started = Instant::now();
    let mut n = 0usize;
    for batch in batches(users, events) {
        n += batch.len();
        log.append(batch).await.unwrap();
        if n % 500_000 < APPEND {
            eprintln!(
                "{n} events, {:.0}/s",
                n as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    log.close().await;
    println!(
        "wrote {n} events ({users} users) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
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
    // The last start's log lock goes a moment after its shutdown returns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let server = Server::start(config).await.unwrap();
    let ready = started.elapsed();
    server.shutdown().await;
    ready
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sled=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let users: u64 = args.next().map_or(1_000_000, |s| s.parse().unwrap());
    let events: u64 = args.next().map_or(5_000_000, |s| s.parse().unwrap());
    let temp = tempfile::tempdir().unwrap();
    let data = args
        .next()
        .map_or_else(|| temp.path().join("data"), std::path::PathBuf::from);
    std::fs::create_dir_all(&data).unwrap();
    if data.join("log").exists() {
        println!("keeping the log in {}", data.display());
    } else {
        fill(&data.join("log"), users, events).await;
    }
    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let rebuild = time_start(&data).await;
    let current = time_start(&data).await;
    let again = time_start(&data).await;
    println!(
        "log {:.0} MB, view {:.0} MB",
        dir_bytes(&data.join("log")) as f64 / 1e6,
        std::fs::metadata(data.join("view.sqlite")).map_or(0, |m| m.len()) as f64 / 1e6
    );
    println!(
        "start to ready: empty view (rebuilt) {:.1} s; view up to date {:.2} s, {:.2} s",
        rebuild.as_secs_f64(),
        current.as_secs_f64(),
        again.as_secs_f64()
    );
}
