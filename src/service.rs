//! The write path: command, decide, log, evolve, then tell the sessions that were closed.
//!
//! Owns the order of commands: commands for one uid are decided and appended one at a time (a
//! striped async lock held from `decide` to `evolve`), so two of them never decide against the
//! same stale state; commands for different uids run concurrently and meet only in the log's
//! group commit. Owns the registry of live connections, so that a `Disconnected` decided here
//! (a kick, a replacement, a shutdown) reaches the socket it closes. Promises: the caller's
//! answer comes after its events are durable and applied, so a read after the answer sees them.
//! Must never: apply an event to memory before it is durable.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{oneshot, Mutex};

use crate::domain::decide::decide_system_uids;
use crate::domain::{
    decide, CloseReason, Command, Event, RecordedEvent, Rejection, SessionId, Uid,
};
use crate::log::{EventLog, LogError};
use crate::presence::Presence;

const STRIPES: usize = 1024;

/// Why a command was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What a live connection is told when the server closes its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOrder {
    pub reason: CloseReason,
}

pub struct UserService {
    log: EventLog,
    presence: Arc<Presence>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: ahash::RandomState,
    system_lock: Mutex<()>,
    live: DashMap<SessionId, oneshot::Sender<CloseOrder>, ahash::RandomState>,
}

impl UserService {
    pub fn new(log: EventLog, presence: Arc<Presence>) -> Self {
        UserService {
            log,
            presence,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: ahash::RandomState::new(),
            system_lock: Mutex::new(()),
            live: DashMap::default(),
        }
    }

    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    fn stripe(&self, uid: &Uid) -> &Mutex<()> {
        &self.stripes[(self.stripe_hasher.hash_one(uid) as usize) % STRIPES]
    }

    /// Decides, appends and applies one command; returns the events it recorded (none when
    /// the command changed nothing).
    pub async fn execute(&self, command: Command) -> Result<Vec<RecordedEvent>, ServiceError> {
        let _turn = self.stripe(command.uid()).lock().await;
        let events = self
            .presence
            .with_user(command.uid().as_str(), |state| decide(state, &command))?;
        self.commit(events).await
    }

    /// Adds (`adding`) or removes system uids; idempotent.
    pub async fn change_system_uids(&self, adding: bool, uids: &[Uid]) -> Result<(), ServiceError> {
        let _turn = self.system_lock.lock().await;
        let events = decide_system_uids(&self.presence.system_uid_set(), adding, uids);
        self.commit(events).await.map(drop)
    }

    /// Appends events that need no decision (node lifetimes).
    pub async fn record(&self, events: Vec<Event>) -> Result<Vec<RecordedEvent>, ServiceError> {
        self.commit(events).await
    }

    async fn commit(&self, events: Vec<Event>) -> Result<Vec<RecordedEvent>, ServiceError> {
        let recorded = self.log.append(events).await?;
        for r in &recorded {
            self.presence.apply(&r.event);
        }
        for r in &recorded {
            if let Event::Disconnected(d) = &r.event {
                if let Some((_, tx)) = self.live.remove(&d.session_id) {
                    let _ = tx.send(CloseOrder { reason: d.reason });
                }
            }
        }
        Ok(recorded)
    }

    /// Registers a connection about to connect as `session_id`: a later `Disconnected` of that
    /// session is delivered to the returned receiver.
    pub fn register_live(&self, session_id: SessionId) -> oneshot::Receiver<CloseOrder> {
        let (tx, rx) = oneshot::channel();
        self.live.insert(session_id, tx);
        rx
    }

    pub fn unregister_live(&self, session_id: SessionId) {
        self.live.remove(&session_id);
    }

    /// Number of connections registered as live.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}
