//! Appends per second into PostgreSQL through the shared log, against a plain batched INSERT of
//! the same rows into the same database, measured in the same run in alternating slices.
//!
//! Four cases, each for a slice of seconds per round, in rounds whose order flips each round
//! (plain first, then the log first), so that the machine's drift weighs on both sides alike:
//! - `log, 1 node`: [`WRITERS`] tokio tasks each appending one event at a time through one
//!   node's log (`EventLog` over a `PostgresStore`, its commit listener the node's real
//!   `cluster::Follower` publishing into memory), each awaiting its acknowledgement, as
//!   connects do.
//! - `log, 3 nodes`: the same writers spread over three such logs in this process, each with
//!   its own store, pool and writer thread, appending to one log: what three nodes' writers do,
//!   without their HTTP and WebSocket work.
//! - `plain, 1 connection` and `plain, 3 connections`: the baseline. Each connection inserts
//!   batches of [`PLAIN_BATCH`] events back to back, one statement per batch in its own
//!   transaction (autocommit, durable at its commit): the events' rows into a table shaped like
//!   `log_events` whose seq is a `bigserial`, and their uid index rows into one shaped like
//!   `log_uids`. No lock, no batch id, no guard: the cost of putting the rows in durably. 64
//!   rows is the most a batch of the log can hold with 64 writers each waiting for its answer.
//!
//! Each round also says how many events the log's batches held, and how many batches each of
//! its commits held, counted from the transaction ids (`xmin`) of the round's rows of
//! `log_batches`: 1.00 while every batch commits alone, more for a numbering that commits
//! several nodes' batches at once (tried in 2d58ec9: see docs/performance.md).
//!
//! Each round also says the CPU each case cost per event, in this process (the writers, the
//! nodes' writer threads, stores and followers) and in PostgreSQL's processes (every process of
//! the machine named `postgres`: the bench's backends, and whatever else the server did
//! meanwhile), read from `/proc` before and after each slice: on a machine whose cores are
//! shared, a rate says how much CPU the case got, its CPU per event what the case needs.
//!
//! The events are the same kind for both sides: `Connected` and `TokenUpdated` of 10,000
//! users, about 300 bytes encoded. The database is a fresh one on the machine's PostgreSQL
//! (`WK_BENCH_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`), dropped at the end.
//! Run: `cargo bench --bench pg_append` (`WK_BENCH_ROUNDS`, `WK_BENCH_SLICE_SECS` to change
//! the shape); `cargo test --all-targets` runs one short round, to check that it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use wkuser::apply::Subscribers;
use wkuser::cluster::Follower;
use wkuser::domain::event::{Connected, TokenUpdated};
use wkuser::domain::{
    DeviceFlag, DeviceId, DeviceLevel, Event, NodeId, RecordedEvent, Seq, SessionId, Token, Uid,
};
use wkuser::log::{EventLog, LogStore, PostgresStore};
use wkuser::presence::Presence;

/// Concurrent appenders, whatever the number of nodes.
const WRITERS: usize = 64;
/// Events per statement of the plain baseline.
const PLAIN_BATCH: usize = 64;
/// Distinct pre-encoded events the baseline cycles through.
const POOL: usize = 1024;

/// Rounds of the four cases (default 3), and seconds per case and round (default 5).
const ROUNDS_VAR: &str = "WK_BENCH_ROUNDS";
const SLICE_VAR: &str = "WK_BENCH_SLICE_SECS";

fn rounds(full: bool) -> usize {
    if full {
        env_number(ROUNDS_VAR, 3)
    } else {
        1
    }
}

/// How long each case runs per round.
fn slice(full: bool) -> Duration {
    if full {
        Duration::from_secs(env_number(SLICE_VAR, 5) as u64)
    } else {
        Duration::from_millis(500)
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// A connect or a token update for one of 10,000 users.
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

/// The baseline's rows: each event's envelope as the log stores it, and the uids it names.
struct Rows {
    bodies: Vec<Vec<u8>>,
    uids: Vec<Vec<String>>,
}

fn rows() -> Rows {
    let recorded: Vec<RecordedEvent> = (1..=POOL as u64)
        .map(|seq| RecordedEvent {
            seq: Seq(seq),
            event_id: Uuid::now_v7(),
            recorded_at: 1_700_000_000_000,
            node_id: NodeId(1),
            event: sample_event(seq),
        })
        .collect();
    Rows {
        bodies: recorded.iter().map(RecordedEvent::encode).collect(),
        uids: recorded
            .iter()
            .map(|r| {
                r.event
                    .uids()
                    .iter()
                    .map(|u| u.as_str().to_owned())
                    .collect()
            })
            .collect(),
    }
}

const PLAIN_TABLES: &str = "\
    CREATE TABLE plain_events (seq bigserial PRIMARY KEY, body bytea NOT NULL); \
    CREATE TABLE plain_uids (uid text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (uid, seq))";

/// One batch of the baseline: the events numbered by the `bigserial`, their uid rows beside.
const PLAIN_INSERT: &str = "\
    WITH ids AS ( \
        SELECT nextval('plain_events_seq_seq') AS seq, t.body, t.i \
        FROM unnest($1::bytea[]) WITH ORDINALITY AS t(body, i) \
    ), events AS ( \
        INSERT INTO plain_events (seq, body) SELECT seq, body FROM ids \
    ) \
    INSERT INTO plain_uids (uid, seq) \
    SELECT u.uid, ids.seq FROM unnest($2::text[], $3::int8[]) AS u(uid, i) JOIN ids USING (i) \
    ON CONFLICT DO NOTHING";

/// One statement's binds: the bodies, and each uid row's uid and 1-based event.
type PlainBatch = (Vec<Vec<u8>>, Vec<String>, Vec<i64>);

/// `connections` connections inserting batches of [`PLAIN_BATCH`] for `slice`; events/s.
async fn plain(pool: &PgPool, rows: &Rows, connections: usize, slice: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + slice;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (pool, done) = (pool.clone(), done.clone());
        // Each connection's batches, built before the clock runs.
        let batches: Vec<PlainBatch> = (0..POOL / PLAIN_BATCH)
            .map(|b| {
                let first = (b * PLAIN_BATCH + c * 7) % POOL;
                let picked: Vec<usize> = (0..PLAIN_BATCH).map(|k| (first + k) % POOL).collect();
                let bodies = picked.iter().map(|&i| rows.bodies[i].clone()).collect();
                let (mut uids, mut at) = (Vec::new(), Vec::new());
                for (k, &i) in picked.iter().enumerate() {
                    for uid in &rows.uids[i] {
                        uids.push(uid.clone());
                        at.push(k as i64 + 1);
                    }
                }
                (bodies, uids, at)
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("a connection");
            let mut b = 0;
            while Instant::now() < deadline {
                let (bodies, uids, at) = &batches[b % batches.len()];
                b += 1;
                sqlx::query(PLAIN_INSERT)
                    .bind(bodies)
                    .bind(uids)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .expect("a plain batch");
                done.fetch_add(PLAIN_BATCH as u64, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("a plain inserter");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A node's log over the shared database, and its follower publishing into a memory of its
/// own.
struct Node {
    log: EventLog,
    follower: Arc<Follower>,
}

fn node(url: &str, node: u64) -> Node {
    let store: Arc<dyn LogStore> = Arc::new(PostgresStore::connect(url).expect("the store"));
    let at = store.last_seq().expect("the log's end");
    let subscribers = Arc::new(Subscribers::new(Arc::new(Presence::new()), at));
    let follower = Arc::new(Follower::new(store.clone(), subscribers, at));
    let log = EventLog::start_with(store, NodeId(node), follower.clone()).expect("the log");
    Node { log, follower }
}

/// Each node catches up with what the other cases appended, outside the clocks (a node's tail
/// would have read it as it came).
async fn catch_up(nodes: &[Node]) {
    for node in nodes {
        let follower = node.follower.clone();
        tokio::task::spawn_blocking(move || follower.catch_up())
            .await
            .expect("a catch-up")
            .expect("the log reads");
    }
}

/// [`WRITERS`] tasks over `nodes` (writer `w` on node `w % n`), each appending one event at a
/// time, for `slice`; events/s.
async fn through_logs(nodes: &[Node], slice: Duration) -> f64 {
    let logs: Vec<EventLog> = nodes.iter().map(|n| n.log.clone()).collect();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + slice;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (log, done) = (logs[w % logs.len()].clone(), done.clone());
            tokio::spawn(async move {
                let mut i = w as u64 * 1_000_003;
                while Instant::now() < deadline {
                    i += 1;
                    log.append(vec![sample_event(i)]).await.expect("an append");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a writer");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The log's last seq.
async fn last_seq(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM log_events")
        .fetch_one(pool)
        .await
        .expect("the log's end")
}

/// The log's batches after `seq`, the transactions that committed them, and their events: a
/// transaction may number several nodes' batches at once.
async fn batches_after(pool: &PgPool, seq: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text), coalesce(sum(last_seq - first_seq + 1), 0)::int8 \
         FROM log_batches WHERE first_seq > $1",
    )
    .bind(seq)
    .fetch_one(pool)
    .await
    .expect("the batches")
}

/// CPU seconds used so far by this process and by the machine's `postgres` processes.
#[derive(Clone, Copy)]
struct CpuClock {
    bench: f64,
    postgres: f64,
}

impl CpuClock {
    fn now() -> Self {
        let ticks = procfs::ticks_per_second() as f64;
        let seconds = |stat: procfs::process::Stat| (stat.utime + stat.stime) as f64 / ticks;
        let bench = procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .map(seconds)
            .unwrap_or(0.0);
        let postgres = procfs::process::all_processes()
            .map(|all| {
                all.filter_map(|p| p.ok()?.stat().ok())
                    .filter(|stat| stat.comm == "postgres")
                    .map(seconds)
                    .sum()
            })
            .unwrap_or(0.0);
        CpuClock { bench, postgres }
    }

    /// Microseconds per event of each side since `before`, for `events` events.
    fn per_event_since(self, before: CpuClock, events: f64) -> (f64, f64) {
        let per = |now: f64, then: f64| (now - then) * 1e6 / events.max(1.0);
        (
            per(self.bench, before.bench),
            per(self.postgres, before.postgres),
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) one short round
    // checks that the bench runs. A filter that names another bench skips this one.
    let full = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"pg_append".contains(a.as_str()))
    {
        return;
    }
    let server = std::env::var("WK_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("wk_bench_{}", Uuid::now_v7().simple());
    let url = format!("{server}/{name}");
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("the machine's PostgreSQL (WK_BENCH_POSTGRES names another)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("a database for the bench");
        admin.close().await.ok();
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&rt, &url, full)));
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("the server, again");
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("the bench's database dropped");
        admin.close().await.ok();
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn run(rt: &tokio::runtime::Runtime, url: &str, full: bool) {
    let (rounds, slice) = (rounds(full), slice(full));
    // The logs first: a node's store migrates the schema.
    let start = |id: u64| {
        let url = url.to_owned();
        rt.block_on(rt.spawn_blocking(move || node(&url, id)))
            .expect("a node's log")
    };
    let one = [start(1)];
    let three: Vec<Node> = (11..=13).map(start).collect();
    let pool = rt.block_on(async {
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .connect(url)
            .await
            .expect("the baseline's pool");
        sqlx::raw_sql(PLAIN_TABLES)
            .execute(&pool)
            .await
            .expect("the baseline's tables");
        pool
    });
    let rows = rows();
    let mean = rows.bodies.iter().map(Vec::len).sum::<usize>() / rows.bodies.len();
    println!(
        "pg_append: {WRITERS} writers, events of ~{mean} bytes; plain batches of {PLAIN_BATCH}; \
         {rounds} rounds of {:.1} s per case ({ROUNDS_VAR}, {SLICE_VAR})",
        slice.as_secs_f64()
    );
    let mut ratios = [Vec::new(), Vec::new()];
    let mut figures = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 1..=rounds {
        let mut measured = [0.0; 4];
        let mut cpu = [(0.0, 0.0); 4];
        let seq_before = rt.block_on(last_seq(&pool));
        let order: [usize; 4] = if round % 2 == 1 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        for case in order {
            match case {
                1 => rt.block_on(catch_up(&one)),
                3 => rt.block_on(catch_up(&three)),
                _ => {}
            }
            let before = CpuClock::now();
            let started = Instant::now();
            measured[case] = rt.block_on(async {
                match case {
                    0 => plain(&pool, &rows, 1, slice).await,
                    1 => through_logs(&one, slice).await,
                    2 => plain(&pool, &rows, 3, slice).await,
                    _ => through_logs(&three, slice).await,
                }
            });
            let events = measured[case] * started.elapsed().as_secs_f64();
            cpu[case] = CpuClock::now().per_event_since(before, events);
        }
        let (batches, commits, events) = rt.block_on(batches_after(&pool, seq_before));
        println!(
            "round {round}: plain, 1 connection {:>7.0}/s | log, 1 node {:>7.0}/s ({:.2}x) | \
             plain, 3 connections {:>7.0}/s | log, 3 nodes {:>7.0}/s ({:.2}x) | \
             log batches of {:.1} events, {:.2} batches per commit, on average",
            measured[0],
            measured[1],
            measured[1] / measured[0],
            measured[2],
            measured[3],
            measured[3] / measured[2],
            events as f64 / batches.max(1) as f64,
            batches as f64 / commits.max(1) as f64
        );
        let names = ["plain, 1", "log, 1", "plain, 3", "log, 3"];
        let cpu_line: Vec<String> = names
            .iter()
            .zip(cpu)
            .map(|(name, (bench, postgres))| format!("{name} {bench:.1} + {postgres:.1}"))
            .collect();
        println!(
            "round {round} CPU µs per event (this process + postgres): {}",
            cpu_line.join(" | ")
        );
        ratios[0].push(measured[1] / measured[0]);
        ratios[1].push(measured[3] / measured[2]);
        for (all, one) in figures.iter_mut().zip(measured) {
            all.push(one);
        }
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}x to {hi:.2}x")
    };
    println!(
        "median: log, 1 node {:.0}/s against plain {:.0}/s: {:.2}x (rounds {}); \
         log, 3 nodes {:.0}/s against plain {:.0}/s: {:.2}x (rounds {})",
        median(figures[1].clone()),
        median(figures[0].clone()),
        median(ratios[0].clone()),
        spread(&ratios[0]),
        median(figures[3].clone()),
        median(figures[2].clone()),
        median(ratios[1].clone()),
        spread(&ratios[1]),
    );
    for node in one.iter().chain(&three) {
        rt.block_on(node.log.close());
    }
    rt.block_on(pool.close());
}
