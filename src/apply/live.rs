//! The registry of live sessions: how a `Disconnected` reaches the socket it closes.
//!
//! Owns the map from a session id to the channel its WebSocket task listens on. The gateway
//! registers a connection before its `Connected` is appended and unregisters it when it ends;
//! [`LiveSessions::deliver`] runs for every committed event, so a kick, a replacement or a
//! shutdown decided anywhere (an HTTP call, another session's connect, another node) closes the
//! socket it names. Promises: each close order is delivered at most once. Must never: block
//! (it runs on the log writer's thread).

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::domain::{CloseReason, Event, SessionId};

/// What a live connection is told when its session was closed by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOrder {
    pub reason: CloseReason,
}

#[derive(Default)]
pub struct LiveSessions {
    sessions: DashMap<SessionId, oneshot::Sender<CloseOrder>, ahash::RandomState>,
}

impl LiveSessions {
    /// Registers a connection about to connect as `session_id`: a later `Disconnected` of that
    /// session is delivered to the returned receiver.
    pub fn register(&self, session_id: SessionId) -> oneshot::Receiver<CloseOrder> {
        let (tx, rx) = oneshot::channel();
        self.sessions.insert(session_id, tx);
        rx
    }

    pub fn unregister(&self, session_id: SessionId) {
        self.sessions.remove(&session_id);
    }

    /// Number of connections registered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Orders every live session to close for `reason`, recording nothing: a node fenced from
    /// its lease leaves the record to the peer that declares it lost.
    pub fn close_all(&self, reason: CloseReason) {
        let ids: Vec<SessionId> = self.sessions.iter().map(|e| *e.key()).collect();
        for id in ids {
            if let Some((_, tx)) = self.sessions.remove(&id) {
                let _ = tx.send(CloseOrder { reason });
            }
        }
    }

    /// Carries a committed event's close order to its socket, if it is one of ours.
    pub fn deliver(&self, event: &Event) {
        if let Event::Disconnected(d) = event {
            if let Some((_, tx)) = self.sessions.remove(&d.session_id) {
                let _ = tx.send(CloseOrder { reason: d.reason });
            }
        }
    }
}
