//! The fan-out of committed events: the one path every event takes after it is durable.
//!
//! Owns [`Subscribers`], which hands each committed batch, in seq order, to: the in-memory
//! projection ([`Presence`]) and last seen ([`last_seen::LastSeen`]), the registry of live sessions that carries kicks and replacements
//! to their sockets ([`live::LiveSessions`]), and the watch that wakes the SQL projector and the
//! webhook (which read the log themselves), with a tally of the webhook's entries. The
//! source does not matter: this node's appends (the log writer calls [`Subscribers::publish`]
//! after each flush), the log's tail at start-up, and later another node's appends read from a
//! shared log. Promises: a subscriber sees every committed event once, in seq order for any one
//! subject. Must never: block or do I/O (it runs on the log writer's thread), or see an event
//! before it is durable.

pub mod last_seen;
pub mod live;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::domain::{Event, RecordedEvent, Seq};
use crate::log::CommitListener;
use crate::presence::Presence;
use last_seen::LastSeen;
use live::LiveSessions;

pub struct Subscribers {
    memory: Arc<Presence>,
    last_seen: LastSeen,
    live: Arc<LiveSessions>,
    published: watch::Sender<Seq>,
    tally: Mutex<EntryTally>,
    /// `tally.entries`, readable without the lock (for `/stats`).
    entries_published: Arc<AtomicU64>,
}

/// How many webhook entries (one per `Connected` and per `Disconnected`, see
/// [`crate::webhook`]) the published events held, counted since this process started, and the
/// last seq counted: read together, so that the webhook can tell how many entries lie between
/// its cursor and the log's end without keeping them anywhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryTally {
    pub seq: Seq,
    pub entries: u64,
}

/// Whether `event` is one the webhook makes an entry of.
pub fn is_webhook_entry(event: &Event) -> bool {
    matches!(event, Event::Connected(_) | Event::Disconnected(_))
}

impl Subscribers {
    /// Subscribers starting from the SQL view's snapshot `state`: memory and last seen hold
    /// the log up to its checkpoint.
    pub fn from_snapshot(state: crate::view::ViewState) -> Self {
        let presence = Presence::load(state.tokens, state.open_sessions, state.system_uids);
        let subscribers = Subscribers::new(Arc::new(presence), state.checkpoint);
        subscribers.last_seen().load(state.last_seen);
        subscribers
    }

    /// Subscribers to a log whose events up to `published` are already in `memory`.
    pub fn new(memory: Arc<Presence>, published: Seq) -> Self {
        Subscribers {
            memory,
            last_seen: LastSeen::default(),
            live: Arc::new(LiveSessions::default()),
            published: watch::channel(published).0,
            tally: Mutex::new(EntryTally {
                seq: published,
                entries: 0,
            }),
            entries_published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands `events` (committed, consecutive) to every subscriber.
    pub fn publish(&self, events: &[RecordedEvent]) {
        let Some(last) = events.last() else {
            return;
        };
        for r in events {
            self.memory.apply(&r.event);
            self.last_seen.apply(r);
        }
        for r in events {
            self.live.deliver(&r.event);
        }
        let entries = events.iter().filter(|r| is_webhook_entry(&r.event)).count() as u64;
        {
            let mut tally = self.tally.lock();
            tally.seq = tally.seq.max(last.seq);
            tally.entries += entries;
            self.entries_published
                .store(tally.entries, Ordering::Release);
        }
        self.published.send_if_modified(|at| {
            let moved = last.seq > *at;
            if moved {
                *at = last.seq;
            }
            moved
        });
    }

    /// Says that memory was restored up to `at` without publishing (start-up, after a view
    /// rebuilt before memory): the next event published follows `at`.
    pub fn restored_at(&self, at: Seq) {
        self.tally.lock().seq = at;
        self.published.send_replace(at);
    }

    pub fn memory(&self) -> &Arc<Presence> {
        &self.memory
    }

    /// When each uid's sessions on each flag last ended.
    pub fn last_seen(&self) -> &LastSeen {
        &self.last_seen
    }

    pub fn live(&self) -> &Arc<LiveSessions> {
        &self.live
    }

    /// The last seq published: every event up to it is committed and applied, whichever node
    /// wrote it.
    pub fn last_published(&self) -> Seq {
        *self.published.borrow()
    }

    /// The webhook entries published so far and the last seq counted, read together.
    pub fn entry_tally(&self) -> EntryTally {
        *self.tally.lock()
    }

    /// The webhook entries published so far (`EntryTally::entries`), read without a lock.
    pub fn entries_published(&self) -> Arc<AtomicU64> {
        self.entries_published.clone()
    }

    /// The last seq published, and a way to wait for it to move (the projector's wake-up).
    pub fn published(&self) -> watch::Receiver<Seq> {
        self.published.subscribe()
    }
}

impl CommitListener for Subscribers {
    fn committed(&self, events: &[RecordedEvent]) {
        self.publish(events)
    }
}
