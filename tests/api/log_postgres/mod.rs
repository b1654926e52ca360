//! The event log on PostgreSQL ([`wkuser::log::PostgresStore`]), the one log several nodes
//! append to: the same answers as sled for the same appends and reads ([`conformance`]); several
//! nodes appending at once while a tailer follows `seq > last` without ever skipping a seq, and
//! the same tailer catching the skip of a naive `bigserial` table ([`tailing`]); a batch whose
//! commit answer was lost recorded once ([`lost_commit`]); a node publishing the other nodes'
//! events its append answered before its own batch, without reading them ([`preceding`]); a
//! read answering another writer's events only once they are durable ([`durable_reads`]); an
//! append answered only once it is durable ([`durable_appends`]).
//!
//! Each test has a database of its own on the machine's PostgreSQL ([`TestDatabase`]). The
//! stores are driven through [`EventLog`], the way a node appends; their sync reads run on
//! blocking tasks, the way a node must call them.

mod commit_cutter;
mod conformance;
mod durable_appends;
mod durable_reads;
mod lost_commit;
mod preceding;
mod tailing;

use std::sync::Arc;

use wkuser::domain::event::{NodeStart, SystemUids, TokenUpdated};
use wkuser::domain::{DeviceFlag, DeviceLevel, Event, NodeId, RecordedEvent, Seq, TokenHash, Uid};
use wkuser::log::{EventLog, LogStore, PostgresStore};

use crate::helpers::TestDatabase;

/// A store over `url`, opened on a blocking task as a node opens it.
async fn postgres_store(url: &str) -> Arc<PostgresStore> {
    let url = url.to_owned();
    let store = tokio::task::spawn_blocking(move || PostgresStore::connect(&url))
        .await
        .expect("the opening task ends");
    Arc::new(store.expect("the shared log opens"))
}

/// A node's log over `store`, stamped `node`, started on a blocking task (it reads the store's
/// last seq).
async fn start_log(store: Arc<dyn LogStore>, node: u64) -> EventLog {
    tokio::task::spawn_blocking(move || EventLog::start(store, NodeId(node)))
        .await
        .expect("the starting task ends")
        .expect("the log starts")
}

/// `store.read_after`, on a blocking task.
async fn read_after(store: &Arc<PostgresStore>, after: Seq, limit: usize) -> Vec<(Seq, Vec<u8>)> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.read_after(after, limit))
        .await
        .expect("the reading task ends")
        .expect("the shared log reads")
}

fn uid(name: &str) -> Uid {
    Uid::parse(name).expect("a valid uid")
}

/// A token of `name`'s, told apart from its others by `n`.
fn token(name: &str, n: u8) -> Event {
    Event::TokenUpdated(TokenUpdated {
        uid: uid(name),
        device_flag: DeviceFlag(1),
        device_level: DeviceLevel::Master,
        token_hash: TokenHash([n; 32]),
    })
}

/// An event indexed under several uids.
fn system_uids(names: &[&str]) -> Event {
    Event::SystemUidsAdded(SystemUids {
        uids: names.iter().map(|n| uid(n)).collect(),
    })
}

/// An event indexed under no uid.
fn node_started(node: u64) -> Event {
    Event::NodeStarted(NodeStart {
        node_id: NodeId(node),
        boot_id: uuid::Uuid::from_u128(u128::from(node)),
        version: "test".into(),
        api_addr: None,
        ws_addr: None,
    })
}

/// What two stores must agree on about a recorded event: not its id or its time, which each
/// recording stamps anew.
fn comparable(events: &[RecordedEvent]) -> Vec<(u64, u64, Event)> {
    events
        .iter()
        .map(|r| (r.seq.0, r.node_id.0, r.event.clone()))
        .collect()
}

/// Each event the log's table holds, as (seq, event id), in seq order: read straight from the
/// database at `url`, past any store.
async fn held_in_database(url: &str) -> Vec<(u64, uuid::Uuid)> {
    let check = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("the database connects");
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, body FROM log_events ORDER BY seq")
        .fetch_all(&check)
        .await
        .expect("the log reads");
    check.close().await;
    rows.iter()
        .map(|(seq, body)| {
            let event = RecordedEvent::decode(Seq(*seq as u64), body).expect("an event");
            (event.seq.0, event.event_id)
        })
        .collect()
}

/// The events acknowledged, as [`held_in_database`] says them.
fn as_told(acked: &[RecordedEvent]) -> Vec<(u64, uuid::Uuid)> {
    acked.iter().map(|r| (r.seq.0, r.event_id)).collect()
}

/// Slows the WAL writer of the server `admin` is connected to to one round per 10 s: a commit
/// made without a flush then stays in memory until someone flushes.
async fn slow_wal_writer(admin: &mut sqlx::PgConnection) {
    for statement in [
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(statement)
            .execute(&mut *admin)
            .await
            .expect("the WAL writer slowed");
    }
}

/// The database a test appends to, created for it.
async fn database() -> TestDatabase {
    crate::watchdog::arm();
    TestDatabase::create().await
}
