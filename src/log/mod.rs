//! The event log: the one durable truth, everything else is a projection of it.
//!
//! Owns the storage of events (a [`LogStore`]: sled by default, [`sled_store`]; PostgreSQL
//! when several nodes share one log, [`postgres_store`]) and each node's one writer that makes
//! appends durable in groups ([`writer`]). The store gives a batch its seqs: the writer's own
//! count for a store that is its log's only writer, the shared log's last seq for a store that
//! several nodes append to. Promises: `seq` is dense from 1, in commit order, and survives
//! restarts; an append is acknowledged only after the flush or commit that made it durable; an
//! event is never rewritten. Must never: acknowledge an event that a crash could lose, or leave
//! a gap in `seq` when a write fails.

mod doorbell;
pub mod postgres_store;
mod sled_epoch;
pub mod sled_rewrite;
pub mod sled_store;
mod sled_wal;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use crate::domain::{DecodeError, RecordedEvent, Seq, Uid};

pub use postgres_store::PostgresStore;
pub use sled_store::SledStore;
pub use writer::EventLog;

/// Why the log could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error("event log storage failed: {0}")]
    Storage(Arc<str>),
    #[error("event log is closed")]
    Closed,
    #[error("event {seq} cannot be decoded: {reason}")]
    Corrupt { seq: Seq, reason: Arc<str> },
    /// Another process holds the log: sled locks its directory, one process at a time.
    /// `what` and `dir` name it (the event log, or the data directory it is in); `remedy`
    /// says what the operator can do.
    #[error("{what} {} is in use: another wkuser process holds it ({remedy})", .dir.display())]
    InUse {
        what: &'static str,
        dir: PathBuf,
        remedy: &'static str,
    },
    /// The shared database cannot be reached right now (down, restarting, a cut network).
    #[error("the shared log is unavailable: {0}")]
    Unavailable(Arc<str>),
    /// Another node recorded an event of a uid since this node decided for it: decide again.
    #[error("another node changed uid {0} meanwhile")]
    Conflict(Uid),
    /// The shared database stayed out of reach after an append's commit answer was lost: its
    /// events are in the log once or not at all ([`AppendError::InDoubt`]).
    #[error("the outcome of an append is unknown: {0}")]
    InDoubt(Arc<str>),
}

impl LogError {
    pub fn storage(e: impl std::fmt::Display) -> Self {
        LogError::Storage(e.to_string().into())
    }

    /// The same error, but a log in use is named by the data directory it is in, with what to
    /// do about it: an operator knows the data directory, not the log inside it.
    pub fn in_data_dir(self, data_dir: &Path, remedy: &'static str) -> Self {
        match self {
            LogError::InUse { .. } => LogError::InUse {
                what: "data directory",
                dir: data_dir.to_path_buf(),
                remedy,
            },
            other => other,
        }
    }

    pub fn corrupt(seq: Seq, e: DecodeError) -> Self {
        LogError::Corrupt {
            seq,
            reason: e.to_string().into(),
        }
    }
}

/// One event ready to be written: its seq, its encoded bytes and the uids it is indexed under.
/// The encoding does not hold the seq, so a store may renumber a record without encoding it
/// again.
pub struct EncodedRecord {
    pub seq: Seq,
    pub bytes: Vec<u8>,
    pub uids: Vec<Uid>,
}

/// Told of every batch the writer made durable, in seq order, before the batch's appenders are
/// answered. Runs on the writer's thread: it must not block.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, events: &[RecordedEvent]);

    /// For a log other writers append to: the last seq this listener has published, asked
    /// before each batch is appended, so that the append can answer the events between it and
    /// the batch ([`LogStore::append_after`]). `None` (the default): it wants none.
    fn published_up_to(&self) -> Option<Seq> {
        None
    }

    /// Events of other writers that precede the batch about to be handed to
    /// [`CommitListener::committed`] (consecutive, in seq order, as the append answered them:
    /// maybe not all of the gap).
    fn preceding(&self, events: &[RecordedEvent]) {
        let _ = events;
    }
}

/// Nobody listening.
impl CommitListener for () {
    fn committed(&self, _events: &[RecordedEvent]) {}
}

/// A decision's premise, checked when its events are appended: no event of `uid` was recorded
/// after `after` (the last seq the deciding node had seen). Several nodes decide against their
/// own memory; this keeps two of them from deciding for one uid against the same stale state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub uid: Uid,
    pub after: Seq,
}

/// Why [`LogStore::append`] did not record a batch, by what the log holds afterwards.
#[derive(Debug, Clone)]
pub enum AppendError {
    /// Nothing of the batch is in the log; the next batch may follow.
    Failed(LogError),
    /// The batch was written, could not be made durable, and could not be taken back either: the
    /// store's state is unknown, so the writer refuses every later batch until a restart. The
    /// error is why the batch failed.
    Poisoned(LogError),
    /// The store could not learn whether the batch was recorded (a commit's answer was lost and
    /// the database stayed out of reach): the batch is in the log once or not at all. The next
    /// batch may follow.
    InDoubt(LogError),
    /// Guards of the batch did not hold: another writer recorded an event of each of these uids
    /// since. Nothing of the batch is in the log; the commands guarded on these uids are to be
    /// decided again, and the others may be appended again without them.
    Conflict(Vec<Uid>),
}

/// Where events are kept. Synchronous on purpose: the writer runs on its own thread, so a flush
/// that blocks does not block the async runtime. Implementations: [`SledStore`] (the log's only
/// writer), [`PostgresStore`] (one log that several nodes append to), and test doubles that fail
/// on demand.
pub trait LogStore: Send + Sync + 'static {
    /// Whether a read may show events that are not durable yet (the only writer's batch written
    /// and not yet flushed): the log then shows only what its writer knows to be durable. A
    /// store whose reads see committed events only, several writers' included, says `false`.
    fn reads_may_run_ahead(&self) -> bool {
        true
    }

    /// The highest seq stored, `Seq(0)` for an empty log.
    fn last_seq(&self) -> Result<Seq, LogError>;

    /// For a log that other writers append to: a value that changes soon after another writer
    /// commits (the highest seq announced, or `Seq(u64::MAX)` when rings may have been
    /// missed), so that a follower reads at once instead of at its next poll. A hint only: a
    /// follower still polls. `None` for a store that is its log's only writer.
    fn doorbell(&self) -> Option<tokio::sync::watch::Receiver<Seq>> {
        None
    }

    /// Records `batch` as the log's next events, atomically and durably, and leaves each
    /// record's final seq in it. The batch arrives numbered from the writer's own count (the
    /// last seq it recorded, plus one): a store that is its log's only writer keeps those seqs;
    /// a store that several writers share numbers the batch from the log's last seq at the
    /// moment it appends. `batch_id` names the batch across the store's retries (the first
    /// event's `event_id`, unique in the log): an append retried after a lost answer must find
    /// the batch recorded rather than record it twice.
    ///
    /// The default is the only writer's: [`LogStore::write`], then [`LogStore::flush`], and a
    /// batch written but not made durable taken back with [`LogStore::discard`].
    fn append(&self, batch_id: Uuid, batch: &mut [EncodedRecord]) -> Result<(), AppendError> {
        let _ = batch_id;
        append_as_only_writer(self, batch)
    }

    /// [`LogStore::append`], holding only if every guard holds. A log's only writer decides
    /// against everything recorded, so its guards always hold: the default ignores them.
    fn append_guarded(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
    ) -> Result<(), AppendError> {
        let _ = guards;
        self.append(batch_id, batch)
    }

    /// [`LogStore::append_guarded`], answering also the events of other writers that precede
    /// the batch and follow `after` (the last seq its node has seen; `None`: none wanted), the
    /// first ones of them in seq order, not necessarily all: the caller reads the rest. Saves a
    /// node the read of those events before it publishes its batch. The default answers none:
    /// a log's only writer has no such events.
    fn append_after(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
        after: Option<Seq>,
    ) -> Result<Vec<(Seq, Vec<u8>)>, AppendError> {
        let _ = after;
        self.append_guarded(batch_id, batch, guards)
            .map(|()| Vec::new())
    }

    /// Writes a batch atomically (all or none of it), not yet durable. One of the only writer's
    /// steps of [`LogStore::append`]; a store that numbers batches itself leaves it out.
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let _ = batch;
        Err(numbers_its_own_batches())
    }
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), LogError> {
        Err(numbers_its_own_batches())
    }
    /// Makes durable the writes beside the log of this round ([`EventLog::write_beside`]);
    /// `appends_flushed` says whether the round's appends were just flushed. By default a flush
    /// covers everything the store holds, so a round whose appends were flushed needs no second
    /// one; a store whose flush covers only its events says otherwise.
    fn flush_beside(&self, appends_flushed: bool) -> Result<(), LogError> {
        if appends_flushed {
            Ok(())
        } else {
            self.flush()
        }
    }
    /// Removes a batch that was written but could not be made durable, so that it is neither
    /// read nor made durable by a later flush (its seqs will be given to other events).
    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let _ = batch;
        Err(numbers_its_own_batches())
    }

    /// The archive boundary stored beside the log, encoded ([`crate::archive::Boundary`]):
    /// the live log holds only the events after it. `None` for a log never archived.
    fn boundary(&self) -> Result<Option<Vec<u8>>, LogError> {
        Ok(None)
    }

    /// Up to `limit` events with seq greater than `after`, in seq order.
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError>;
    /// Up to `limit` events indexed under `uid` with seq greater than `after`, in seq order.
    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError>;
}

fn numbers_its_own_batches() -> LogError {
    LogError::storage("this store numbers its own batches: append through LogStore::append")
}

/// The append of a store that is its log's only writer: the writer's seqs are final. A batch
/// written but not flushed is taken back, or a later flush would make durable what the
/// appenders were told failed; if it cannot be taken back, the store is poisoned.
fn append_as_only_writer<S: LogStore + ?Sized>(
    store: &S,
    batch: &[EncodedRecord],
) -> Result<(), AppendError> {
    store.write(batch).map_err(AppendError::Failed)?;
    let Err(failed) = store.flush() else {
        return Ok(());
    };
    if let Err(e) = store.discard(batch) {
        tracing::error!(error = %e, "cannot take back a batch that failed to flush; refusing appends until restart");
        return Err(AppendError::Poisoned(failed));
    }
    if let Err(e) = store.flush() {
        // The store's own background flush may have made the batch durable meanwhile, and a
        // crash before the next flush would bring it back. A disk that just failed a flush may
        // fail this one too: the next batch's flush, before anything is acknowledged, tries
        // again.
        tracing::warn!(error = %e, "the taking back of a failed batch is not durable yet");
    }
    Err(AppendError::Failed(failed))
}
