//! Durable append throughput of the event log, beside plain sled inserts measured in the same run,
//! so that the cost of durability and the gain of group commit read as ratios.
//!
//! One group, `log_append`, throughput in events. Every measured iteration writes
//! [`EVENTS_PER_ITER`] events; each function gets its own temporary sled directory.
//! - `sled_insert_no_flush`: one writer, `Tree::insert` of pre-encoded events (big-endian u64
//!   keys), no flush. The ceiling: what sled costs before anything is made durable.
//! - `sled_insert_flush_each`: the same insert followed by `Db::flush` per event, the naive
//!   durable way.
//! - `store_write_flush_each`: `SledStore::write` of one record then `SledStore::flush`, on the
//!   calling thread. What the writer does for a one-event batch without its channel hops
//!   (the log's write is a transaction over the events tree and the uid index).
//! - `event_log_append/N`: N tokio tasks on a multi-thread runtime, each appending single
//!   `Connected` / `TokenUpdated` events through `EventLog::append` and awaiting durability.
//!
//! Two facts of sled 0.34 shape the numbers. Its default config flushes in the background every
//! 500 ms, so "no flush" means no flush asked for. And its first transaction or batch in a
//! process turns on a process-wide lock that every later operation takes; the two plain sled
//! cases run first so that they measure sled without it, as a plain key-value user would.
//!
//! After criterion's own report the bench prints each case's median as events/s and the ratios
//! between cases, from the estimates this run wrote. Host noise moves absolute figures between
//! runs; compare within one run.
//! Run: `cargo bench --bench log_append`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use tempfile::TempDir;
use uuid::Uuid;

use wkuser::domain::event::{Connected, TokenUpdated};
use wkuser::domain::{
    DeviceFlag, DeviceId, DeviceLevel, Event, NodeId, RecordedEvent, Seq, SessionId, Token, Uid,
};
use wkuser::log::{EncodedRecord, EventLog, LogStore, SledStore};

/// Events written by one measured iteration, whatever the number of writers (divisible by each).
const EVENTS_PER_ITER: u64 = 2048;
/// Concurrent appenders for the group-commit cases.
const WRITERS: [u64; 3] = [1, 16, 256];
/// Distinct encoded values cycled through by the plain sled cases.
const POOL: usize = 1024;

/// A realistic single event: a connect or a token update for one of 10,000 users.
fn sample_event(i: u64) -> Event {
    let uid = Uid::parse(&format!("user_{:05}", i % 10_000)).expect("valid uid");
    if i.is_multiple_of(2) {
        Event::Connected(Connected {
            session_id: SessionId::new(),
            uid,
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            device_id: DeviceId::parse("ios_6f1c2a9e_1700000000000").expect("valid device id"),
            node_id: NodeId(1),
            peer: "203.0.113.7:50412".into(),
        })
    } else {
        Event::TokenUpdated(TokenUpdated {
            uid,
            device_flag: DeviceFlag(2),
            device_level: DeviceLevel::Master,
            token_hash: Token::parse("0123456789abcdef0123456789abcdef")
                .expect("valid token")
                .hash(),
        })
    }
}

fn recorded(seq: u64) -> RecordedEvent {
    RecordedEvent {
        seq: Seq(seq),
        event_id: Uuid::now_v7(),
        recorded_at: 1_700_000_000_000,
        node_id: NodeId(1),
        event: sample_event(seq),
    }
}

/// The stored bytes of [`POOL`] events, as the log would write them.
fn encoded_pool() -> Vec<Vec<u8>> {
    (1..=POOL as u64)
        .map(|seq| recorded(seq).encode())
        .collect()
}

fn open_sled(dir: &TempDir) -> (sled::Db, sled::Tree) {
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("open sled");
    let tree = db.open_tree("events").expect("open tree");
    (db, tree)
}

fn log_append(c: &mut Criterion) {
    let pool = encoded_pool();
    let sizes: Vec<usize> = pool.iter().map(Vec::len).collect();
    eprintln!(
        "encoded event sizes: min {} mean {} max {} bytes",
        sizes.iter().min().unwrap(),
        sizes.iter().sum::<usize>() / sizes.len(),
        sizes.iter().max().unwrap()
    );

    let mut group = c.benchmark_group("log_append");
    group
        .throughput(Throughput::Elements(EVENTS_PER_ITER))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(12)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));

    {
        let dir = TempDir::new().expect("temp dir");
        let (_db, tree) = open_sled(&dir);
        let mut key = 0u64;
        group.bench_function("sled_insert_no_flush", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters * EVENTS_PER_ITER {
                    key += 1;
                    let value = pool[key as usize % POOL].as_slice();
                    black_box(tree.insert(key.to_be_bytes(), value).expect("insert"));
                }
                start.elapsed()
            })
        });
    }

    {
        let dir = TempDir::new().expect("temp dir");
        let (db, tree) = open_sled(&dir);
        let mut key = 0u64;
        group.bench_function("sled_insert_flush_each", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters * EVENTS_PER_ITER {
                    key += 1;
                    let value = pool[key as usize % POOL].as_slice();
                    black_box(tree.insert(key.to_be_bytes(), value).expect("insert"));
                    black_box(db.flush().expect("flush"));
                }
                start.elapsed()
            })
        });
    }

    {
        let dir = TempDir::new().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("open store");
        let mut seq = 0u64;
        group.bench_function("store_write_flush_each", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters * EVENTS_PER_ITER {
                    seq += 1;
                    let rec = recorded(seq);
                    let batch = [EncodedRecord {
                        seq: rec.seq,
                        bytes: rec.encode(),
                        uids: rec.event.uids().to_vec(),
                    }];
                    store.write(&batch).expect("write");
                    store.flush().expect("flush");
                }
                start.elapsed()
            })
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for writers in WRITERS {
        let dir = TempDir::new().expect("temp dir");
        let store = Arc::new(SledStore::open(dir.path()).expect("open store"));
        let log = EventLog::start(store, NodeId(1)).expect("start log");
        let per_writer = EVENTS_PER_ITER / writers;
        group.bench_with_input(
            BenchmarkId::new("event_log_append", writers),
            &writers,
            |b, &writers| {
                b.to_async(&rt).iter_custom(|iters| {
                    let log = log.clone();
                    async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let tasks: Vec<_> = (0..writers)
                                .map(|w| {
                                    let log = log.clone();
                                    tokio::spawn(async move {
                                        for k in 0..per_writer {
                                            let event = sample_event(w * per_writer + k);
                                            let done =
                                                log.append(vec![event]).await.expect("append");
                                            black_box(done);
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.expect("writer task");
                            }
                        }
                        start.elapsed()
                    }
                })
            },
        );
        rt.block_on(log.close());
    }
    group.finish();
}

/// Where criterion keeps this group's estimates (its own rule: `CRITERION_HOME`, else the cargo
/// target directory, each with `criterion` under it).
fn group_dir() -> PathBuf {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"))
                .join("criterion")
        });
    home.join("log_append")
}

/// Events/s from the median of one function's estimate, if this run measured it.
fn median_events_per_s(function: &str, since: SystemTime) -> Option<f64> {
    let path = group_dir()
        .join(function)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let ns = json["median"]["point_estimate"].as_f64()?;
    Some(EVENTS_PER_ITER as f64 / (ns * 1e-9))
}

/// The figures of this run as events/s and as ratios, so that no one divides by hand.
fn print_ratios(since: SystemTime) {
    let functions = [
        "sled_insert_no_flush",
        "sled_insert_flush_each",
        "store_write_flush_each",
        "event_log_append/1",
        "event_log_append/16",
        "event_log_append/256",
    ];
    let rate: Vec<Option<f64>> = functions
        .iter()
        .map(|f| median_events_per_s(f, since))
        .collect();
    if rate.iter().all(Option::is_none) {
        return;
    }
    let [no_flush, flush_each, store_each, ..] = rate[..] else {
        unreachable!()
    };
    println!("\nlog_append medians (events/s) and ratios, this run:");
    println!(
        "{:<26}{:>12}{:>12}{:>16}{:>16}",
        "case", "events/s", "/ no_flush", "/ flush_each", "/ store_each"
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.3}", a / b),
        _ => "-".into(),
    };
    for (f, r) in functions.iter().zip(&rate) {
        let Some(events) = r else { continue };
        println!(
            "{:<26}{:>12.0}{:>12}{:>16}{:>16}",
            f,
            events,
            ratio(*r, no_flush),
            ratio(*r, flush_each),
            ratio(*r, store_each)
        );
    }
}

criterion_group!(benches, log_append);

fn main() {
    let started = SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios(started);
}
