//! An append whose commit is cut on the way (the connection breaks at the append, before the
//! database ran it, or after it committed and flushed the batch) is tried again by the store,
//! which looks the batch up by its id before inserting it: either way the appenders are
//! answered with the batch recorded, once, and the log stays dense.

use sqlx::postgres::PgPoolOptions;
use wkuser::domain::{RecordedEvent, Seq};

use super::commit_cutter::{upstream_of, CommitCutter, Cut};
use super::*;

async fn append_through_a_lost_commit(cut: Cut) {
    let db = database().await;
    let cutter = CommitCutter::start(upstream_of(&db.url).await).await;
    let store = postgres_store(&cutter.url_through(&db.url)).await;
    let log = start_log(store.clone(), 1).await;
    let mut acked: Vec<RecordedEvent> = log
        .append(vec![token("ann", 1)])
        .await
        .expect("the first append is recorded");

    cutter.arm_at(cut);
    let cut_short = log
        .append(vec![token("bob", 1), token("cy", 1)])
        .await
        .expect("the append whose commit was cut is recorded");
    assert_eq!(cutter.cuts(), 1, "the relay cut a commit");
    assert_eq!(
        cut_short.iter().map(|r| r.seq.0).collect::<Vec<_>>(),
        [2, 3]
    );
    acked.extend(cut_short);
    acked.extend(
        log.append(vec![token("dee", 1)])
            .await
            .expect("the next append is recorded"),
    );
    log.close().await;

    // What the database holds, read past the relay: each acknowledged event once, at its seq.
    assert_eq!(held_in_database(&db.url).await, as_told(&acked));
    let check = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("the database connects");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM log_batches")
        .fetch_one(&check)
        .await
        .expect("the batches read");
    check.close().await;
    assert_eq!(batches, 3);
    assert_eq!(
        read_after(&store, Seq(0), 100).await.len(),
        4,
        "the store reads the same"
    );
}

// The relay runs on the test's runtime: a worker of its own keeps it relaying whatever the
// test's thread waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_answer_was_lost_after_it_committed_is_recorded_once() {
    append_through_a_lost_commit(Cut::AfterCommit).await;
}

// The relay runs on the test's runtime: a worker of its own keeps it relaying whatever the
// test's thread waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_never_reached_the_database_is_recorded_once() {
    append_through_a_lost_commit(Cut::BeforeCommit).await;
}
