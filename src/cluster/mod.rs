//! Several nodes on one shared log: every node's events reach every node's subscribers, in the
//! log's one order.
//!
//! Owns the [`Follower`], the gate through which a node that shares its log publishes events:
//! its own appends (the log writer hands them over as they commit) and the other nodes' (the
//! [`tail`] reads them), strictly in seq order, each once. Promises: the subscribers of every
//! node see the same events in the same order; a node's own batch is published only after
//! every earlier event of the log, whichever node wrote it; [`Follower::catch_up`] brings
//! memory to the log's end when the write path needs it (a decision in doubt, a broken
//! guard). Must never: publish an event twice, skip one, or publish on an async worker thread
//! (catching up reads the database).

pub mod lease;
pub mod tail;

use std::sync::Arc;

use parking_lot::Mutex;

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
}

impl Follower {
    /// A follower of `store` whose subscribers hold every event up to `at`.
    pub fn new(store: Arc<dyn LogStore>, subscribers: Arc<Subscribers>, at: Seq) -> Self {
        Follower {
            store,
            subscribers,
            at: Mutex::new(at),
        }
    }

    /// The last seq published.
    pub fn at(&self) -> Seq {
        *self.at.lock()
    }

    /// Publishes every event of the log not published yet. Blocks on the database: call it
    /// from a blocking thread.
    pub fn catch_up(&self) -> Result<Seq, LogError> {
        let mut at = self.at.lock();
        self.catch_up_locked(&mut at, Seq(u64::MAX))?;
        Ok(*at)
    }

    /// Publishes the events after `at` up to `until`, read from the store.
    fn catch_up_locked(&self, at: &mut Seq, until: Seq) -> Result<(), LogError> {
        while *at < until {
            let raw = self.store.read_after(*at, READ_BATCH)?;
            let mut events = Vec::with_capacity(raw.len());
            for (seq, bytes) in raw.into_iter().take_while(|(seq, _)| *seq <= until) {
                events.push(
                    RecordedEvent::decode(seq, &bytes).map_err(|e| LogError::corrupt(seq, e))?,
                );
            }
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(());
            };
            self.subscribers.publish(&events);
            *at = last;
        }
        Ok(())
    }
}

impl CommitListener for Follower {
    /// This node's batch, committed: the other nodes' events before it are published first.
    fn committed(&self, events: &[RecordedEvent]) {
        let Some(first) = events.first().map(|e| e.seq) else {
            return;
        };
        let mut at = self.at.lock();
        if first > at.next() {
            if let Err(e) = self.catch_up_locked(&mut at, Seq(first.0 - 1)) {
                // The tail publishes the gap and this batch in order when it can read again;
                // publishing the batch now would put it before events that precede it.
                tracing::error!(error = %e, first = %first,
                    "cannot read the events before this node's batch; the tail publishes them");
                return;
            }
        }
        // The tail may have published some of them already (read from the log the moment
        // they committed): those are skipped.
        let fresh = &events[events.partition_point(|e| e.seq <= *at)..];
        if let Some(last) = fresh.last().map(|e| e.seq) {
            self.subscribers.publish(fresh);
            *at = last;
        }
    }
}
