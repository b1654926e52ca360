//! Appends that find the append lock taken are staged and numbered together
//! (`migrations/postgres/0008_log_combine.sql`): batches of several nodes waiting for the lock
//! commit in one transaction, each ringing the doorbell under its own writer; a batch staged by
//! a writer that died before it waited is never numbered; a staged batch whose answer was lost
//! is recorded once.
//!
//! The test holds the append lock itself on a connection of its own, so that the stores find
//! it taken and stage, and lets it go once they wait.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use wkuser::domain::Seq;
use wkuser::log::postgres_store::APPEND_LOCK;

use super::commit_cutter::{upstream_of, CommitCutter, Cut};
use super::*;
use crate::helpers::eventually;

/// A connection holding the append lock in an open transaction, as a node's numbering does.
async fn hold_append_lock(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.expect("the test connects");
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK})"
    ))
    .execute(&mut conn)
    .await
    .expect("the append lock is taken");
    conn
}

async fn release(mut holder: PgConnection) {
    sqlx::raw_sql("COMMIT")
        .execute(&mut holder)
        .await
        .expect("the append lock is given back");
    holder.close().await.ok();
}

/// Appends waiting for an advisory lock in this database (the append lock: a writer's own
/// waiter key is never contended).
async fn waiting_for_the_lock(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(conn)
    .await
    .expect("the locks read")
}

async fn staged(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT batch_id::text FROM log_staged ORDER BY batch_id")
        .fetch_all(conn)
        .await
        .expect("the staged batches read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_two_nodes_waiting_for_the_lock_commit_in_one_transaction() {
    let db = database().await;
    let (store_a, store_b) = (postgres_store(&db.url).await, postgres_store(&db.url).await);
    // Each node's doorbell, listening before anything rings.
    let mut bells = Vec::new();
    for store in [&store_a, &store_b] {
        let mut bell = store.doorbell().expect("a shared log has a doorbell");
        bell.changed().await.expect("the doorbell listens");
        bells.push(bell);
    }
    let log_a = start_log(store_a.clone(), 1).await;
    let log_b = start_log(store_b.clone(), 2).await;
    let mut look = PgConnection::connect(&db.url)
        .await
        .expect("the test connects");

    let holder = hold_append_lock(&db.url).await;
    let ann = tokio::spawn({
        let log = log_a.clone();
        async move { log.append(vec![token("ann", 1)]).await }
    });
    let bob = tokio::spawn({
        let log = log_b.clone();
        async move { log.append(vec![token("bob", 1), token("bob", 2)]).await }
    });
    eventually(
        "both nodes' batches staged, their writers waiting for the append lock",
        async || {
            (
                staged(&mut look).await.len(),
                waiting_for_the_lock(&mut look).await,
            )
        },
        |now| *now == (2, 2),
    )
    .await;
    release(holder).await;

    let ann = ann
        .await
        .expect("ann's append ends")
        .expect("ann's is recorded");
    let bob = bob
        .await
        .expect("bob's append ends")
        .expect("bob's is recorded");
    let mut seqs: Vec<u64> = ann.iter().chain(&bob).map(|r| r.seq.0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3], "dense, each event once");
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM log_batches")
            .fetch_one(&mut look)
            .await
            .expect("the batches read");
    assert_eq!(transactions, 1, "both batches commit in one transaction");
    assert!(staged(&mut look).await.is_empty(), "nothing left staged");

    // Whichever node's transaction numbered them, each node hears the other's batch.
    let last = |events: &[wkuser::domain::RecordedEvent]| events.last().expect("events").seq;
    for (bell, other) in bells.iter_mut().zip([last(&bob), last(&ann)]) {
        let heard = *bell.wait_for(|seq| *seq == other).await.expect("rung");
        assert_eq!(heard, other);
    }
    log_a.close().await;
    log_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_staged_by_a_writer_that_died_before_it_waited_is_never_numbered() {
    let db = database().await;
    let store = postgres_store(&db.url).await;
    let log = start_log(store.clone(), 1).await;
    let mut look = PgConnection::connect(&db.url)
        .await
        .expect("the test connects");

    let holder = hold_append_lock(&db.url).await;
    // A writer that stages its batch (a connect of a node about to be lost) and dies before it
    // waits for it: its connection ends, as a node's does at kill -9.
    let mut dying = PgConnection::connect(&db.url)
        .await
        .expect("the writer connects");
    let dead_batch = uuid::Uuid::now_v7();
    let answer = sqlx::query(
        "SELECT first_seq, staged FROM wk_log_append_or_stage($1::uuid, ARRAY['\\x01'::bytea], \
         ARRAY['zed'], ARRAY[1], '{}', '{}', 99)",
    )
    .bind(dead_batch.to_string())
    .fetch_one(&mut dying)
    .await
    .expect("the dying writer stages");
    assert!(
        answer.get::<bool, _>(1),
        "the lock was taken: the batch is staged"
    );
    drop(dying);

    // A live node appends meanwhile, and waits for the lock.
    let ann = tokio::spawn({
        let log = log.clone();
        async move { log.append(vec![token("ann", 1)]).await }
    });
    eventually(
        "the live writer waiting for the append lock",
        async || waiting_for_the_lock(&mut look).await,
        |n| *n == 1,
    )
    .await;
    release(holder).await;
    let ann = ann
        .await
        .expect("ann's append ends")
        .expect("ann's is recorded");
    assert_eq!(ann[0].seq, Seq(1));
    // And once more with the lock free: the numbering that takes it does not take the batch
    // nobody waits for either.
    let bob = log
        .append(vec![token("bob", 1)])
        .await
        .expect("bob's is recorded");
    assert_eq!(bob[0].seq, Seq(2));

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM log_events")
        .fetch_one(&mut look)
        .await
        .expect("the log reads");
    assert_eq!(events, 2, "only the live writer's events");
    let dead_recorded: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM log_batches WHERE batch_id = $1::uuid)")
            .bind(dead_batch.to_string())
            .fetch_one(&mut look)
            .await
            .expect("the batches read");
    assert!(!dead_recorded, "the dead writer's batch is not in the log");
    assert_eq!(
        staged(&mut look).await,
        [dead_batch.to_string()],
        "it waits, unnumbered, to be dropped"
    );
    log.close().await;
}

/// A batch that finds the lock taken is staged, and the cut falls on its second statement, the
/// one that waits for the lock and commits.
async fn a_staged_append_through_a_lost_commit(cut: Cut) {
    let db = database().await;
    let cutter = CommitCutter::start(upstream_of(&db.url).await).await;
    let store = postgres_store(&cutter.url_through(&db.url)).await;
    let log = start_log(store.clone(), 1).await;
    let mut look = PgConnection::connect(&db.url)
        .await
        .expect("the test connects");
    log.append(vec![token("ann", 1)])
        .await
        .expect("the first append is recorded");

    let holder = hold_append_lock(&db.url).await;
    cutter.arm_after(cut, 1);
    let cut_short = tokio::spawn({
        let log = log.clone();
        async move { log.append(vec![token("bob", 1), token("cy", 1)]).await }
    });
    // Cut before the database saw it, the batch is staged and nobody waits for it; the store
    // tries again and waits. Cut after, the statement waits on the server for the lock.
    eventually(
        "the staged statement cut, and a statement of the batch waiting for the lock",
        async || (cutter.cuts(), waiting_for_the_lock(&mut look).await),
        |now| *now == (1, 1),
    )
    .await;
    release(holder).await;
    let recorded = cut_short
        .await
        .expect("the append ends")
        .expect("the append whose commit was cut is recorded");
    assert_eq!(recorded.iter().map(|r| r.seq.0).collect::<Vec<_>>(), [2, 3]);

    let next = log
        .append(vec![token("dee", 1)])
        .await
        .expect("the next is recorded");
    assert_eq!(next[0].seq, Seq(4));
    let (events, batches): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM log_events), (SELECT count(*) FROM log_batches)",
    )
    .fetch_one(&mut look)
    .await
    .expect("the log reads");
    assert_eq!((events, batches), (4, 3), "each batch once");
    assert!(staged(&mut look).await.is_empty(), "nothing left staged");
    log.close().await;
}

// The relay runs on the test's runtime: a worker of its own keeps it relaying whatever the
// test's thread waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_batch_whose_answer_was_lost_after_it_committed_is_recorded_once() {
    a_staged_append_through_a_lost_commit(Cut::AfterCommit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_batch_whose_wait_never_reached_the_database_is_recorded_once() {
    a_staged_append_through_a_lost_commit(Cut::BeforeCommit).await;
}
