//! The write path: command, decide, append; the log's writer then publishes the events.
//!
//! Owns the order of commands: commands of one subject (a uid, the system uids) are decided and
//! appended one at a time (a striped async lock held from `decide` until the events are
//! published), so two of them never decide against the same stale state; commands of different
//! subjects run concurrently and meet only in the log's group commit. Owns, too, the retry of a
//! session's close that the log refused ([`retry`]). Promises: the caller's answer comes after
//! its events are durable and applied to every subscriber ([`crate::apply`]), so a read after
//! the answer sees them. A caller whose future may be dropped midway uses
//! [`WritePath::execute_detached`]. Must never: apply an event itself (the log's writer hands every
//! committed event to the subscribers), or decide outside the subject's turn.

mod retry;

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apply::Subscribers;
use crate::cluster::Follower;
use crate::domain::{
    decide, CloseReason, Command, RecordedEvent, Rejection, Seq, SessionId, Subject, Uid,
};
use crate::log::{EventLog, Guard, LogError};
use crate::metrics::Metrics;
use crate::presence::Presence;

const STRIPES: usize = 1024;

/// How many times a command is decided again because another node changed its uid meanwhile,
/// before the caller is told to retry: each time, the other node made progress.
const MAX_CONFLICTS: u32 = 16;

/// Why a command was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Log(#[from] LogError),
    /// The node lost its lease: its peers may have closed its sessions, so it opens none until
    /// it holds a new one.
    #[error("this node lost its lease and takes no connects until it holds a new one")]
    Fenced,
}

pub struct WritePath {
    log: EventLog,
    subscribers: Arc<Subscribers>,
    stripes: Box<[Mutex<()>]>,
    stripe_hasher: ahash::RandomState,
    system_uids_turn: Mutex<()>,
    retries: TaskTracker,
    stopping: CancellationToken,
    /// With a log several nodes share: caught up before each decision, so that a command is
    /// decided against every event committed before it arrived, whichever node wrote it.
    follower: Option<Arc<Follower>>,
    fenced: std::sync::atomic::AtomicBool,
    /// This node's metrics: every append is counted here, and the edges reach them through
    /// [`WritePath::metrics`].
    metrics: Arc<Metrics>,
    /// Until when this node surely holds its lease, by this machine's monotonic clock (see
    /// [`WritePath::hold_lease_until`]); `None` without a lease.
    lease_until: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl WritePath {
    /// A write path over `log`, whose writer publishes to `subscribers`.
    pub fn new(log: EventLog, subscribers: Arc<Subscribers>) -> Self {
        WritePath {
            log,
            subscribers,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: ahash::RandomState::new(),
            system_uids_turn: Mutex::new(()),
            retries: TaskTracker::new(),
            stopping: CancellationToken::new(),
            follower: None,
            fenced: std::sync::atomic::AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
            lease_until: parking_lot::Mutex::new(None),
        }
    }

    /// A write path over a log several nodes share, followed by `follower`.
    pub fn shared(log: EventLog, subscribers: Arc<Subscribers>, follower: Arc<Follower>) -> Self {
        WritePath {
            follower: Some(follower),
            ..WritePath::new(log, subscribers)
        }
    }

    pub fn presence(&self) -> &Arc<Presence> {
        self.subscribers.memory()
    }

    pub fn subscribers(&self) -> &Arc<Subscribers> {
        &self.subscribers
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn turn(&self, subject: Subject<'_>) -> Option<&Mutex<()>> {
        match subject {
            Subject::User(uid) => {
                Some(&self.stripes[(self.stripe_hasher.hash_one(uid) as usize) % STRIPES])
            }
            Subject::SystemUids => Some(&self.system_uids_turn),
            Subject::Node => None,
        }
    }

    /// Decides and appends one command; returns the events it recorded (none when the command
    /// changed nothing), once they are durable and published.
    pub async fn execute(&self, command: Command) -> Result<Vec<RecordedEvent>, WriteError> {
        if matches!(command, Command::Connect { .. })
            && (self.fenced.load(std::sync::atomic::Ordering::Acquire) || self.lease_ran_out())
        {
            return Err(WriteError::Fenced);
        }
        let subject = command.subject();
        let _turn = match self.turn(subject) {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        let Some(follower) = &self.follower else {
            let events = self
                .presence()
                .with_state(subject, |state| decide(state, &command))?;
            let started = std::time::Instant::now();
            let outcome = self.log.append(events).await;
            self.metrics.appended(&outcome, started);
            return Ok(outcome?);
        };
        // A shared log: decided against this node's memory, and recorded only if no other
        // node recorded an event of the uid since the events memory holds (the guard); a
        // broken guard means memory was behind for this uid: catch up, decide again. A refusal
        // or nothing to record cannot be checked that way (nothing is appended), so they are
        // decided once more after catching up: a token set on another node a moment ago must
        // admit this connect.
        let mut conflicts = 0;
        let mut caught_up = false;
        loop {
            let seen = follower.at();
            let decided = self
                .presence()
                .with_state(subject, |state| decide(state, &command));
            let doubtful = match &decided {
                Ok(events) => events.is_empty(),
                Err(_) => true,
            };
            if doubtful && !caught_up {
                self.catch_up(follower).await?;
                caught_up = true;
                continue;
            }
            let events = decided?;
            let guard = match subject {
                Subject::User(uid) => Some(Guard {
                    uid: uid.clone(),
                    after: seen,
                }),
                Subject::SystemUids | Subject::Node => None,
            };
            let started = std::time::Instant::now();
            let outcome = self.log.append_guarded(events, guard).await;
            self.metrics.appended(&outcome, started);
            match outcome {
                Err(LogError::Conflict(uid)) if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(uid = %uid, conflicts, "decided again after another node's change");
                    self.catch_up(follower).await?;
                    caught_up = true;
                }
                outcome => return Ok(outcome?),
            }
        }
    }

    /// Publishes every event of the shared log not published yet (a database read, off the
    /// async workers).
    async fn catch_up(&self, follower: &Arc<Follower>) -> Result<Seq, WriteError> {
        let following = follower.clone();
        Ok(tokio::task::spawn_blocking(move || following.catch_up())
            .await
            .map_err(LogError::storage)??)
    }

    /// [`WritePath::execute`] in a task of its own, for callers whose future may be dropped
    /// midway (an HTTP handler, whose client may hang up): the subject's turn is held until
    /// the events are published, so the next command of that subject never decides against
    /// memory that misses them.
    pub async fn execute_detached(
        self: &Arc<Self>,
        command: Command,
    ) -> Result<Vec<RecordedEvent>, WriteError> {
        let this = self.clone();
        tokio::spawn(async move { this.execute(command).await })
            .await
            .map_err(|e| WriteError::Log(LogError::storage(e)))?
    }

    /// Records the end of a session. A close the log refuses (a failing disk) is retried in the
    /// background until the log takes it, so that a closed session does not stay online; the
    /// caller's socket closes now either way.
    pub async fn close_session(
        self: &Arc<Self>,
        uid: Uid,
        session_id: SessionId,
        reason: CloseReason,
    ) {
        let command = Command::Disconnect {
            uid: uid.clone(),
            session_id,
            reason,
        };
        match self.execute(command).await {
            Ok(recorded) => {
                if let Some(end) = recorded.first() {
                    tracing::debug!(uid = %uid, session_id = %session_id, %reason, seq = end.seq.0,
                        "session end recorded");
                }
            }
            Err(WriteError::Log(e)) if !matches!(e, LogError::Closed) => {
                tracing::error!(uid = %uid, session_id = %session_id, %reason, error = %e,
                    "close not recorded; retrying until the event log takes it");
                self.retries.spawn(retry::close_until_recorded(
                    self.clone(),
                    uid,
                    session_id,
                    reason,
                ));
            }
            Err(e) => {
                tracing::error!(uid = %uid, session_id = %session_id, %reason, error = %e,
                    "close not recorded; the next start closes it as server_restart");
            }
        }
    }

    /// Refuses connects once `until` has passed, until a renewal moves it on: `until` is when
    /// the lease would run out counted from before its renewal was asked, never later than
    /// when the peers find it run out. Without it, a node resumed from a freeze past its lease
    /// took connects until its lease task woke to fence it, then closed them at once.
    pub fn hold_lease_until(&self, until: std::time::Instant) {
        *self.lease_until.lock() = Some(until);
    }

    fn lease_ran_out(&self) -> bool {
        self.lease_until
            .lock()
            .is_some_and(|until| std::time::Instant::now() >= until)
    }

    /// Refuses connects while `fenced` (see [`WriteError::Fenced`]).
    pub fn set_fenced(&self, fenced: bool) {
        self.fenced
            .store(fenced, std::sync::atomic::Ordering::Release);
    }

    /// Gives the closes being retried one last try and waits for them: what they could not
    /// record, the stop records as `server_shutdown`, or the next start as `server_restart`.
    pub async fn finish_retries(&self) {
        self.stopping.cancel();
        self.retries.close();
        self.retries.wait().await;
    }
}
