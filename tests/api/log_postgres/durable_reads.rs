//! A read of the shared log answers another writer's events only once the WAL on disk holds
//! them. An append commits without waiting for its WAL flush (so that the append lock goes at
//! once) and flushes in a second transaction; a read in between sees the batch, and must wait
//! for a flush, or it could hand out an event a crash of PostgreSQL would take back.
//!
//! The first test runs its own PostgreSQL, whose WAL writer (which flushes such commits by
//! itself every `wal_writer_delay`) is slowed to 10 s: during the test only the writer's own
//! flush makes its event durable. A standby refuses to say WAL positions, and has no flush to
//! wait for: the second test reads one.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use wkuser::domain::Seq;

use super::*;
use crate::helpers::ThrowawayPostgres;

/// What makes the database's commits so far durable, as a node's append does after its commit.
const FLUSH: &str = "SELECT set_config('synchronous_commit', 'on', true), \
     pg_logical_emit_message(true, 'wk_log_flush', '')";

async fn wal_flushed_up_to(connection: &mut PgConnection, at: &str) -> bool {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
        .bind(at)
        .fetch_one(connection)
        .await
        .expect("the flush position reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_answers_an_event_committed_without_a_flush_only_once_the_wal_holds_it() {
    let server = ThrowawayPostgres::start().await;
    let url = server.url();
    let mut admin = PgConnection::connect(&url).await.expect("a connection");
    slow_wal_writer(&mut admin).await;
    let store = postgres_store(&url).await;

    // Another writer commits an event without a flush. Its commit must still be only in memory
    // when the read starts, or the test would show nothing: an event the WAL writer happened to
    // flush at once (its page full) is left behind and another one committed.
    let mut writer = PgConnection::connect(&url).await.expect("a connection");
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut writer)
        .await
        .expect("the writer commits without waiting");
    let mut unflushed = None;
    for seq in 1..=5i64 {
        sqlx::query("INSERT INTO log_events (seq, body) VALUES ($1, 'an event')")
            .bind(seq)
            .execute(&mut writer)
            .await
            .expect("the event commits");
        let at: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut writer)
            .await
            .expect("the WAL position reads");
        if !wal_flushed_up_to(&mut admin, &at).await {
            unflushed = Some((seq, at));
            break;
        }
    }
    let (seq, committed_at) = unflushed.expect("an event committed and not yet flushed");

    // The writer flushes a little later, as a node does after its append.
    let flushing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query(FLUSH)
            .execute(&mut writer)
            .await
            .expect("the writer flushes");
    });
    let read = read_after(&store, Seq(seq as u64 - 1), 10).await;
    let durable_when_read = wal_flushed_up_to(&mut admin, &committed_at).await;
    assert_eq!(
        read.iter().map(|(s, _)| s.0).collect::<Vec<_>>(),
        [seq as u64],
        "the read answers the event"
    );
    assert!(
        durable_when_read,
        "the read answered an event the WAL on disk did not hold yet"
    );
    flushing.await.expect("the flush ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_answers_the_reads_of_the_log_without_a_wait() {
    let primary = ThrowawayPostgres::start().await;
    let store = postgres_store(&primary.url()).await;
    let log = start_log(store.clone(), 1).await;
    log.append(vec![token("ann", 1), token("bob", 1)])
        .await
        .expect("the events are recorded");
    log.close().await;

    let standby = ThrowawayPostgres::standby_of(&primary).await;
    let url = standby.url();
    let replica = tokio::task::spawn_blocking(move || PostgresStore::connect_existing(&url))
        .await
        .expect("the opening task ends")
        .expect("the standby's log opens for reading");
    let replica = Arc::new(replica);
    let in_recovery: bool = {
        let mut check = PgConnection::connect(&standby.url())
            .await
            .expect("a connection");
        sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut check)
            .await
            .expect("the question answers")
    };
    assert!(in_recovery, "the standby runs as a standby");

    let read = read_after(&replica, Seq(0), 10).await;
    assert_eq!(read.iter().map(|(s, _)| s.0).collect::<Vec<_>>(), [1, 2]);
    let reading = replica.clone();
    let (last, bobs) = tokio::task::spawn_blocking(move || {
        (reading.last_seq(), reading.read_uid("bob", Seq(0), 10))
    })
    .await
    .expect("the reading task ends");
    assert_eq!(last.expect("the last seq reads"), Seq(2));
    assert_eq!(
        bobs.expect("bob's events read")
            .iter()
            .map(|(s, _)| s.0)
            .collect::<Vec<_>>(),
        [2]
    );
}
