//! Several nodes append to one log at once while a tailer follows it with `seq > last`, the
//! way a node will follow its peers: the tailer reads every seq exactly once, in order. The same
//! tailer over a naive `bigserial` table reads past a seq whose transaction commits late and
//! never reads it: the harness does catch a skip.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wkuser::domain::{RecordedEvent, Seq};

use super::*;
use crate::helpers::eventually;

/// The pause of a tailer that found nothing new.
const POLL: Duration = Duration::from_millis(2);

/// Follows a log: reads the rows after the last seq it read, again and again, until the writers
/// are done and a read begun after that finds nothing new. Returns every row it read, in the
/// order it read them; `progress` tells the last seq read so far.
async fn tail<R, Fut>(
    mut read: R,
    writers_done: watch::Receiver<bool>,
    progress: watch::Sender<i64>,
) -> Vec<(i64, Vec<u8>)>
where
    R: FnMut(i64) -> Fut,
    Fut: Future<Output = Vec<(i64, Vec<u8>)>>,
{
    let mut seen = Vec::new();
    let mut last = 0;
    loop {
        // Looked at before the read: a read begun after the writers were done sees all they
        // committed.
        let done = *writers_done.borrow();
        let rows = read(last).await;
        let found = !rows.is_empty();
        for row in rows {
            last = row.0;
            seen.push(row);
        }
        progress.send_replace(last);
        if !found {
            if done {
                return seen;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The seqs of `all` (the table at the end) that the tailer never read.
fn skipped(read: &[i64], all: &[i64]) -> Vec<i64> {
    let read: BTreeSet<i64> = read.iter().copied().collect();
    all.iter().copied().filter(|s| !read.contains(s)).collect()
}

fn seqs(rows: &[(i64, Vec<u8>)]) -> Vec<i64> {
    rows.iter().map(|(seq, _)| *seq).collect()
}

const NODES: u64 = 4;
const APPENDERS_PER_NODE: usize = 16;
const APPENDS_EACH: usize = 20;

#[tokio::test]
async fn four_nodes_append_at_once_and_a_tailer_reads_every_seq_once_in_order() {
    let db = database().await;
    let mut logs = Vec::new();
    for node in 1..=NODES {
        logs.push(start_log(postgres_store(&db.url).await, node).await);
    }
    let tail_store = postgres_store(&db.url).await;
    let (done, writers_done) = watch::channel(false);
    let (progress, _) = watch::channel(0);
    let reader = tail_store.clone();
    let tailer = tokio::spawn(tail(
        move |last| {
            let store = reader.clone();
            async move {
                let after = Seq(u64::try_from(last).expect("a seq"));
                read_after(&store, after, 500)
                    .await
                    .into_iter()
                    .map(|(seq, body)| (i64::try_from(seq.0).expect("a seq"), body))
                    .collect()
            }
        },
        writers_done,
        progress,
    ));

    let mut appenders = JoinSet::new();
    for (node, log) in logs.iter().enumerate() {
        for appender in 0..APPENDERS_PER_NODE {
            let log = log.clone();
            appenders.spawn(async move {
                let name = format!("n{node}-a{appender}");
                let mut acked = Vec::new();
                for k in 0..APPENDS_EACH {
                    // one to three events an append, so batches straddle appends
                    let events = (0..=k % 3)
                        .map(|i| token(&name, (k * 3 + i) as u8))
                        .collect();
                    acked.extend(log.append(events).await.expect("the append is recorded"));
                }
                acked
            });
        }
    }
    let acked: Vec<RecordedEvent> = appenders.join_all().await.into_iter().flatten().collect();
    done.send_replace(true);
    let seen = tailer.await.expect("the tailer ends");
    for log in &logs {
        log.close().await;
    }

    let total = i64::try_from(acked.len()).expect("a count");
    let read = seqs(&seen);
    assert_eq!(
        read,
        (1..=total).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    let check = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("the database connects");
    let all: Vec<i64> = sqlx::query_scalar("SELECT seq FROM log_events ORDER BY seq")
        .fetch_all(&check)
        .await
        .expect("the table reads");
    check.close().await;
    assert_eq!(skipped(&read, &all), Vec::<i64>::new());
    assert_eq!(
        all.len(),
        acked.len(),
        "nothing but the acknowledged events"
    );

    // Each acknowledgement names the seq the tailer read its event at.
    let read_at: HashMap<i64, RecordedEvent> = seen
        .iter()
        .map(|(seq, body)| {
            let event = RecordedEvent::decode(Seq(*seq as u64), body).expect("an event");
            (*seq, event)
        })
        .collect();
    for event in &acked {
        let found = &read_at[&(event.seq.0 as i64)];
        assert_eq!(
            (found.event_id, found.node_id, &found.event),
            (event.event_id, event.node_id, &event.event)
        );
    }
    // The nodes did append at once: their batches interleave in the one order.
    let turns = (2..=total)
        .filter(|s| read_at[s].node_id != read_at[&(s - 1)].node_id)
        .count();
    assert!(
        turns >= NODES as usize * 2,
        "the nodes' batches interleave ({turns} turns)"
    );
}

#[tokio::test]
async fn the_same_tailer_over_a_bigserial_table_skips_a_seq_that_commits_late() {
    let db = database().await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .expect("the database connects");
    sqlx::query("CREATE TABLE naive_events (seq BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL)")
        .execute(&pool)
        .await
        .expect("the naive table");
    let (done, writers_done) = watch::channel(false);
    let (progress, tailed) = watch::channel(0);
    let reader = pool.clone();
    let tailer = tokio::spawn(tail(
        move |last| {
            let pool = reader.clone();
            async move {
                sqlx::query_as(
                    "SELECT seq, body FROM naive_events WHERE seq > $1 ORDER BY seq LIMIT 500",
                )
                .bind(last)
                .fetch_all(&pool)
                .await
                .expect("the naive table reads")
            }
        },
        writers_done,
        progress,
    ));

    // A slow writer takes seq 1 and keeps its transaction open; a fast one takes seq 2 and
    // commits.
    let insert = "INSERT INTO naive_events (body) VALUES ($1) RETURNING seq";
    let mut slow = pool.begin().await.expect("a transaction");
    let first: i64 = sqlx::query_scalar(insert)
        .bind(&b"slow"[..])
        .fetch_one(&mut *slow)
        .await
        .expect("the slow insert");
    let second: i64 = sqlx::query_scalar(insert)
        .bind(&b"fast"[..])
        .fetch_one(&pool)
        .await
        .expect("the fast insert");
    assert_eq!((first, second), (1, 2));
    // The tailer reads seq 2 while seq 1 is not committed yet; then seq 1 commits.
    eventually(
        "the tailer to read seq 2",
        async || *tailed.borrow(),
        |last| *last >= 2,
    )
    .await;
    slow.commit().await.expect("the slow commit");
    done.send_replace(true);
    let seen = tailer.await.expect("the tailer ends");

    let all: Vec<i64> = sqlx::query_scalar("SELECT seq FROM naive_events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("the table reads");
    assert_eq!(all, [1, 2], "both events are in the table");
    assert_eq!(
        skipped(&seqs(&seen), &all),
        [1],
        "the tailer never read seq 1"
    );
    pool.close().await;
}
