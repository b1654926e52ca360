//! The event log: the one durable truth, everything else is a projection of it.
//!
//! Owns the storage of events (a [`LogStore`], sled by default: [`sled_store`]) and the one
//! writer that assigns `seq` numbers and makes appends durable in groups ([`writer`]). Promises:
//! `seq` is dense from 1 and survives restarts; an append is acknowledged only after the flush
//! that made it durable; an event is never rewritten. Must never: acknowledge an event that a
//! crash could lose, or leave a gap in `seq` when a write fails.

pub mod sled_store;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::{DecodeError, RecordedEvent, Seq, Uid};

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
pub struct EncodedRecord {
    pub seq: Seq,
    pub bytes: Vec<u8>,
    pub uids: Vec<Uid>,
}

/// Told of every batch the writer made durable, in seq order, before the batch's appenders are
/// answered. Runs on the writer's thread: it must not block.
pub trait CommitListener: Send + Sync + 'static {
    fn committed(&self, events: &[RecordedEvent]);
}

/// Nobody listening.
impl CommitListener for () {
    fn committed(&self, _events: &[RecordedEvent]) {}
}

/// Where events are kept. Synchronous on purpose: the writer runs on its own thread, so a flush
/// that blocks does not block the async runtime. Implementations: [`SledStore`], and test
/// doubles that fail on demand.
pub trait LogStore: Send + Sync + 'static {
    /// The highest seq stored, `Seq(0)` for an empty log.
    fn last_seq(&self) -> Result<Seq, LogError>;
    /// Writes a batch atomically (all or none of it), not yet durable.
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), LogError>;
    /// Removes a batch that was written but could not be made durable, so that it is neither
    /// read nor made durable by a later flush (its seqs will be given to other events).
    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError>;
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
