//! Several nodes on one shared log: every node's events reach every node's subscribers, in the
//! log's one order.
//!
//! Owns the [`Follower`], the gate through which a node that shares its log publishes events:
//! its own appends (the log writer hands them over as they commit) and the other nodes' (the
//! [`tail`] reads them; those just before one of this node's batches come with the append's
//! answer), strictly in seq order, each once. Promises: the subscribers of every
//! node see the same events in the same order; a node's own batch is published only after
//! every earlier event of the log, whichever node wrote it; [`Follower::catch_up`] brings
//! memory to the log's end when the write path needs it (a decision in doubt, a broken
//! guard); it says whether this node's writer has an append in flight, so that a tail rung
//! meanwhile waits for that append's answer instead of reading the same events
//! ([`Follower::own_append_ended`]). Must never: publish an event twice, skip one, publish on
//! an async worker thread (catching up reads the database), or read the database while
//! holding the turn to publish (the writer's next batch would wait for another thread's
//! read).

pub mod lease;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::apply::Subscribers;
use crate::domain::{RecordedEvent, Seq};
use crate::log::{CommitListener, LogError, LogStore};

/// Events read from the log per catch-up step.
const READ_BATCH: usize = 2048;

pub struct Follower {
    store: Arc<dyn LogStore>,
    subscribers: Arc<Subscribers>,
    /// The last seq published; held while publishing, so that the writer's batches and the
    /// tail's take turns.
    at: Mutex<Seq>,
    /// This node's appends: whether one is in flight, and how many have ended.
    appending: watch::Sender<Appending>,
}

/// Where this node's writer is, for a tail deciding whether to read now.
#[derive(Clone, Copy, Default)]
struct Appending {
    in_flight: bool,
    ended: u64,
}

impl Follower {
    /// A follower of `store` whose subscribers hold every event up to `at`.
    pub fn new(store: Arc<dyn LogStore>, subscribers: Arc<Subscribers>, at: Seq) -> Self {
        Follower {
            store,
            subscribers,
            at: Mutex::new(at),
            appending: watch::Sender::new(Appending::default()),
        }
    }

    /// The last seq published.
    pub fn at(&self) -> Seq {
        *self.at.lock()
    }

    /// A value that changes when another node announces new events (see
    /// [`LogStore::doorbell`]); `None` when the store has none.
    pub fn doorbell(&self) -> Option<tokio::sync::watch::Receiver<Seq>> {
        self.store.doorbell()
    }

    /// Returns at once when this node's writer has no append in flight; otherwise when that
    /// append has ended (its answer published the other nodes' events before its batch), or
    /// after `within` at most (an append that hangs must not hold the tail back longer).
    pub async fn own_append_ended(&self, within: Duration) {
        let mut appending = self.appending.subscribe();
        let now = *appending.borrow_and_update();
        if !now.in_flight {
            return;
        }
        // By count rather than by the flag: an append that ends and the next that starts
        // before this task wakes must not keep it waiting through the next one too.
        let ended = appending.wait_for(|a| a.ended > now.ended);
        let _ = tokio::time::timeout(within, ended).await;
    }

    /// Publishes every event of the log not published yet. Blocks on the database: call it
    /// from a blocking thread.
    pub fn catch_up(&self) -> Result<Seq, LogError> {
        loop {
            let at = self.at();
            let events = self.read(at, READ_BATCH)?;
            let read = events.len();
            let at = self.publish_after(&events);
            if read < READ_BATCH {
                return Ok(at);
            }
        }
    }

    /// Up to `limit` events after `after`, read from the store and decoded, without holding
    /// the turn to publish: the writer's batches are published meanwhile.
    fn read(&self, after: Seq, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.store
            .read_after(after, limit)?
            .into_iter()
            .map(|(seq, bytes)| {
                RecordedEvent::decode(seq, &bytes).map_err(|e| LogError::corrupt(seq, e))
            })
            .collect()
    }

    /// Publishes those of `events` (consecutive seqs read from the log) that were not
    /// published yet; returns the last seq published.
    fn publish_after(&self, events: &[RecordedEvent]) -> Seq {
        let mut at = self.at.lock();
        let fresh = &events[events.partition_point(|e| e.seq <= *at)..];
        // Read after a seq at or below `at`, so the fresh part starts right after it: the log
        // is dense, and `at` only grows.
        debug_assert!(fresh.first().is_none_or(|e| e.seq == at.next()));
        if let Some(last) = fresh.last().map(|e| e.seq) {
            self.subscribers.publish(fresh);
            *at = last;
        }
        *at
    }
}

impl CommitListener for Follower {
    /// Asked before each of this node's appends: the append answers the other nodes' events
    /// after it that precede the batch ([`CommitListener::preceding`]), so that the batch is
    /// published without a read of its own.
    fn published_up_to(&self) -> Option<Seq> {
        Some(self.at())
    }

    fn append_started(&self) {
        self.appending.send_modify(|a| a.in_flight = true);
    }

    fn append_ended(&self) {
        self.appending.send_modify(|a| {
            a.in_flight = false;
            a.ended += 1;
        });
    }

    /// The other nodes' events that precede this node's batch, as its append answered them:
    /// published as the tail's reads are (those the tail published meanwhile are skipped).
    fn preceding(&self, events: &[RecordedEvent]) {
        self.publish_after(events);
    }

    /// This node's batch, committed: the other nodes' events before it are published first.
    /// Its append answered them, most often ([`CommitListener::preceding`]); any it did not are
    /// read here, without holding the turn to publish (the tail may publish them meanwhile),
    /// and this batch waits for them.
    fn committed(&self, events: &[RecordedEvent]) {
        let Some(first) = events.first().map(|e| e.seq) else {
            return;
        };
        loop {
            let at = self.at();
            if first <= at.next() {
                break;
            }
            let gap = (first.0 - at.next().0) as usize;
            match self.read(at, gap.min(READ_BATCH)) {
                Ok(before) => {
                    let before: Vec<RecordedEvent> =
                        before.into_iter().take_while(|e| e.seq < first).collect();
                    if before.is_empty() {
                        // The log ends before this batch: cannot be, it committed. Left to
                        // the tail rather than spun on.
                        tracing::error!(first = %first, at = %at,
                            "the events before this node's batch are not in the log; the tail publishes them");
                        return;
                    }
                    self.publish_after(&before);
                }
                Err(e) => {
                    // The tail publishes the gap and this batch in order when it can read
                    // again; publishing the batch now would put it before events that precede
                    // it.
                    tracing::error!(error = %e, first = %first,
                        "cannot read the events before this node's batch; the tail publishes them");
                    return;
                }
            }
        }
        // The tail may have published some of them already (read from the log the moment
        // they committed): those are skipped.
        self.publish_after(events);
    }
}
