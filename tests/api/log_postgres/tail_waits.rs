//! A node's tail rung while the node's own append is in flight waits for that append, whose
//! answer brings the other nodes' events before its batch, instead of reading them too; and
//! an append that hangs holds the tail back a poll at most.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wkuser::apply::Subscribers;
use wkuser::cluster::{tail, Follower};
use wkuser::domain::Seq;
use wkuser::log::{AppendError, EncodedRecord, Guard, LogError};
use wkuser::presence::Presence;

use super::*;

/// Where appends wait while the test keeps it closed.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock() = true;
    }

    fn open(&self) {
        *self.closed.lock() = false;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock();
        while *closed {
            self.opened.wait(&mut closed);
        }
    }
}

/// A [`PostgresStore`] whose appends wait while the test keeps `gate` closed, and which counts
/// its reads of the log that found events.
struct GatedAppends {
    inner: Arc<PostgresStore>,
    gate: Gate,
    appends_entered: AtomicUsize,
    reads_with_events: AtomicUsize,
}

impl LogStore for GatedAppends {
    fn reads_may_run_ahead(&self) -> bool {
        self.inner.reads_may_run_ahead()
    }
    fn doorbell(&self) -> Option<tokio::sync::watch::Receiver<Seq>> {
        self.inner.doorbell()
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
        self.appends_entered.fetch_add(1, Ordering::SeqCst);
        self.gate.pass();
        self.inner.append_after(batch_id, batch, guards, after)
    }
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let read = self.inner.read_after(after, limit);
        if read.as_ref().is_ok_and(|events| !events.is_empty()) {
            self.reads_with_events.fetch_add(1, Ordering::SeqCst);
        }
        read
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

/// Node 1 (gated appends, a follower and its tail, as `serve` runs them) and node 2 (a plain
/// writer) on one fresh log, node 1's doorbell listening.
struct TwoNodes {
    _db: TestDatabase,
    gated: Arc<GatedAppends>,
    follower: Arc<Follower>,
    node1: EventLog,
    node2: EventLog,
    stop: CancellationToken,
    tail: tokio::task::JoinHandle<()>,
}

impl TwoNodes {
    async fn start() -> Self {
        let db = database().await;
        let inner = postgres_store(&db.url).await;
        let mut ring = inner.doorbell().expect("PostgreSQL has a doorbell");
        let gated = Arc::new(GatedAppends {
            inner,
            gate: Gate::default(),
            appends_entered: AtomicUsize::new(0),
            reads_with_events: AtomicUsize::new(0),
        });
        let subscribers = Arc::new(Subscribers::new(Arc::new(Presence::new()), Seq(0)));
        let follower = Arc::new(Follower::new(gated.clone(), subscribers, Seq(0)));
        let (store, listener) = (gated.clone(), follower.clone());
        let node1 =
            tokio::task::spawn_blocking(move || EventLog::start_with(store, NodeId(1), listener))
                .await
                .expect("the starting task ends")
                .expect("node 1's log starts");
        let node2 = start_log(postgres_store(&db.url).await, 2).await;
        let stop = CancellationToken::new();
        let tail = tail::spawn(
            follower.clone(),
            Arc::new(AtomicBool::new(true)),
            stop.clone(),
        );
        // The doorbell's first ring says it listens: node 2's rings reach node 1 from now.
        ring.wait_for(|seq| *seq != Seq(0))
            .await
            .expect("the doorbell listens");
        TwoNodes {
            _db: db,
            gated,
            follower,
            node1,
            node2,
            stop,
            tail,
        }
    }

    /// Waits until node 1's writer is in its `n`th append (held at the gate).
    async fn node1_appending(&self, n: usize) {
        while self.gated.appends_entered.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn close(self) {
        self.stop.cancel();
        self.tail.await.expect("the tail ends");
        self.node1.close().await;
        self.node2.close().await;
    }
}

const ROUNDS: u8 = 5;

#[tokio::test]
async fn a_tail_rung_during_its_nodes_append_leaves_the_rung_events_to_that_appends_answer() {
    let nodes = TwoNodes::start().await;
    for round in 1..=ROUNDS {
        nodes.gated.gate.close();
        let node1 = nodes.node1.clone();
        let own = tokio::spawn(async move { node1.append(vec![token("ann", round)]).await });
        nodes.node1_appending(round as usize).await;
        nodes
            .node2
            .append(vec![token("bob", round), token("cy", round)])
            .await
            .expect("node 2's append");
        // The ring reaches node 1's tail meanwhile (well within a poll).
        tokio::time::sleep(Duration::from_millis(40)).await;
        nodes.gated.gate.open();
        own.await
            .expect("the appending task ends")
            .expect("node 1's append");
    }
    let end = Seq(3 * u64::from(ROUNDS));
    assert_eq!(
        nodes.follower.at(),
        end,
        "node 1 published every event, each round's own batch after node 2's"
    );
    // Without the wait, each round's ring reads node 2's events while node 1's append is held:
    // one read with events per round. A poll landing between node 2's commit and its ring
    // may still read one.
    let reads = nodes.gated.reads_with_events.load(Ordering::SeqCst);
    assert!(
        reads <= 1,
        "{reads} reads found events over {ROUNDS} rounds"
    );
    nodes.close().await;
}

#[tokio::test]
async fn an_append_that_hangs_holds_the_tail_back_a_poll_at_most() {
    let nodes = TwoNodes::start().await;
    nodes.gated.gate.close();
    let node1 = nodes.node1.clone();
    let own = tokio::spawn(async move { node1.append(vec![token("ann", 1)]).await });
    nodes.node1_appending(1).await;
    let theirs = nodes
        .node2
        .append(vec![token("bob", 1)])
        .await
        .expect("node 2's append");
    let committed = Instant::now();
    while nodes.follower.at() < theirs[0].seq {
        assert!(
            committed.elapsed() < Duration::from_secs(1),
            "node 2's event is not published while node 1's append hangs"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes.gated.gate.open();
    let own = own
        .await
        .expect("the appending task ends")
        .expect("node 1's append");
    assert_eq!(own[0].seq, Seq(2));
    assert_eq!(nodes.follower.at(), Seq(2));
    nodes.close().await;
}
