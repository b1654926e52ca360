//! A node's append answers the other nodes' events between what the node has published and its
//! batch (`wk_log_append_after`): the node publishes them, in seq order, before its own batch,
//! without reading the log; a gap longer than the append answers is read for the rest.

use std::sync::atomic::{AtomicUsize, Ordering};

use uuid::Uuid;
use wkuser::apply::Subscribers;
use wkuser::cluster::Follower;
use wkuser::domain::{Fold, RecordedEvent, Seq};
use wkuser::log::{AppendError, EncodedRecord, Guard, LogError};
use wkuser::presence::Presence;

use super::*;

/// A [`PostgresStore`] that counts its reads of the log's events (`read_after`).
struct CountingReads {
    inner: Arc<PostgresStore>,
    reads: AtomicUsize,
}

impl LogStore for CountingReads {
    fn reads_may_run_ahead(&self) -> bool {
        self.inner.reads_may_run_ahead()
    }
    fn last_seq(&self) -> Result<Seq, LogError> {
        self.inner.last_seq()
    }
    fn append(&self, batch_id: Uuid, batch: &mut [EncodedRecord]) -> Result<(), AppendError> {
        self.inner.append(batch_id, batch)
    }
    fn append_guarded(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
    ) -> Result<(), AppendError> {
        self.inner.append_guarded(batch_id, batch, guards)
    }
    fn append_after(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
        after: Option<Seq>,
    ) -> Result<Vec<(Seq, Vec<u8>)>, AppendError> {
        self.inner.append_after(batch_id, batch, guards, after)
    }
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_after(after, limit)
    }
    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.inner.read_uid(uid, after, limit)
    }
}

/// Node 2 appends `others` (batches) to a log node 1 follows from its start; then node 1
/// appends a token of ann's. Returns node 1's follower, its memory, the reads its store made,
/// and the whole log as read afterwards.
async fn node_appends_after(
    others: Vec<Vec<Event>>,
) -> (Arc<Follower>, Arc<Presence>, usize, Vec<RecordedEvent>) {
    let db = database().await;
    let first = postgres_store(&db.url).await;
    let counting = Arc::new(CountingReads {
        inner: first,
        reads: AtomicUsize::new(0),
    });
    let memory = Arc::new(Presence::new());
    let subscribers = Arc::new(Subscribers::new(memory.clone(), Seq(0)));
    let follower = Arc::new(Follower::new(counting.clone(), subscribers, Seq(0)));

    let other = start_log(postgres_store(&db.url).await, 2).await;
    for batch in others {
        other.append(batch).await.expect("node 2's append");
    }
    let (store, listener) = (counting.clone(), follower.clone());
    let log = tokio::task::spawn_blocking(move || EventLog::start_with(store, NodeId(1), listener))
        .await
        .expect("the starting task ends")
        .expect("node 1's log starts");
    let own = log
        .append(vec![token("ann", 9)])
        .await
        .expect("node 1's append");
    let reader = other.clone();
    let whole = tokio::task::spawn_blocking(move || reader.read_after(Seq(0), 10_000))
        .await
        .expect("the reading task ends")
        .expect("the log reads");
    assert_eq!(
        own[0].seq,
        whole.last().expect("a log").seq,
        "node 1's is the last"
    );
    log.close().await;
    other.close().await;
    let reads = counting.reads.load(Ordering::SeqCst);
    (follower, memory, reads, whole)
}

#[tokio::test]
async fn a_node_publishes_the_events_its_append_answered_in_seq_order_before_its_own_without_a_read(
) {
    // ann's token is set three times: memory ends with the last one only if every event was
    // published in the log's order.
    let others = vec![
        vec![token("ann", 1), token("bob", 1)],
        vec![token("ann", 2), system_uids(&["cy"])],
    ];
    let (follower, memory, reads, whole) = node_appends_after(others).await;
    assert_eq!(whole.len(), 5);
    assert_eq!(
        follower.at(),
        Seq(5),
        "everything published, its own batch last"
    );
    assert_eq!(reads, 0, "the gap came with the append");
    assert_eq!(
        memory.snapshot(),
        Fold::of(whole.iter().map(|r| &r.event)),
        "memory is the fold of the log in seq order"
    );
}

#[tokio::test]
async fn a_gap_longer_than_an_append_answers_is_read_for_the_rest() {
    let many: Vec<Event> = (0..700u32)
        .map(|i| token(&format!("user_{i}"), (i % 200 + 1) as u8))
        .collect();
    let (follower, memory, reads, whole) = node_appends_after(vec![many]).await;
    assert_eq!(whole.len(), 701);
    assert_eq!(follower.at(), Seq(701));
    assert!(reads >= 1, "the rest of the gap was read");
    assert_eq!(memory.snapshot(), Fold::of(whole.iter().map(|r| &r.event)));
}
