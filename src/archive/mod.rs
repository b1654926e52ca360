//! Archiving the log (`protocol.md` section 10): old events moved out of the live log into
//! zstd files, and the boundary the live log keeps in their place.
//!
//! Owns the two things an archive leaves behind: the archive file ([`file`]: a header that
//! states the seq range, then the events as `wkuser events` prints them, compressed), and the
//! [`Boundary`] record stored beside the live log (sled tree `archive` in the data directory,
//! table `log_boundary` in a shared database): the last seq archived, the archives made so far,
//! and the view's state rows at that seq ([`crate::view::StateRows`]), from which a view (and
//! so memory) can start when it has to be rebuilt without the archives.
//!
//! The invariant, kept by the order of `wkuser archive` ([`crate::ops::archive`]) at every
//! instant, a kill -9 included: **every event is in the live log or in a complete archive that
//! the live log's boundary names, and the live log holds exactly the events after its
//! boundary.** The archive file is written under a temporary name, synced and renamed into
//! place before the live log changes; the live log then changes in one atomic step that both
//! drops the archived range and records the new boundary (a directory swap on sled, one
//! transaction on PostgreSQL). A crash before that step leaves the live log whole (a complete
//! file it does not name is a leftover that a rerun replaces); a crash after it leaves the new
//! boundary, whose file is complete. So nothing is lost, and nothing is read twice: readers
//! take from an archive only the seqs at or before the boundary, and from the live log only
//! those after it.
//!
//! Must never: drop an event from the live log before a synced archive holds it, drop the live
//! log's last event (its end is where the next seq comes from), or archive past what the view
//! or the webhook has not taken yet.

pub mod file;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Seq;
use crate::view::StateRows;

/// Why an archive could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a wkuser archive: {why}")]
    NotAnArchive { path: String, why: String },
    #[error("{path} is damaged or incomplete: {why}")]
    Damaged { path: String, why: String },
    #[error("the log's archive boundary record cannot be read: {0}")]
    Boundary(String),
    /// The archives given do not fit the live log (a gap, an overlap, another log's file).
    #[error("{0}")]
    Mismatch(String),
}

impl ArchiveError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ArchiveError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// One archive the live log's events went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The file as it was written (the path given to `--out`, made absolute).
    pub file: String,
    pub first_seq: Seq,
    pub last_seq: Seq,
}

/// What the live log keeps where its archived events were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    /// The last seq archived: the live log holds the events after it.
    pub seq: Seq,
    /// The `event_id` of the event at `seq`: an archive that ends here ends with it, which
    /// tells this log's archives from another log's.
    pub last_event_id: Uuid,
    /// The `recorded_at` of the event at `seq` (ms since the epoch): a replay to an earlier
    /// time needs the archives.
    pub last_recorded_at: i64,
    /// Every archive of this log, oldest first, together seq 1 to `seq`.
    pub archives: Vec<ArchiveEntry>,
    /// The view's state rows at `seq`.
    pub state: StateRows,
}

impl Boundary {
    /// The stored form: JSON, compressed (the state rows hold every user).
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a boundary always serializes");
        zstd::stream::encode_all(&json[..], file::LEVEL)
            .expect("compressing into memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Boundary, ArchiveError> {
        let json =
            zstd::stream::decode_all(bytes).map_err(|e| ArchiveError::Boundary(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| ArchiveError::Boundary(e.to_string()))
    }

    /// The archives' names, for a person.
    pub fn files(&self) -> String {
        self.archives
            .iter()
            .map(|a| format!("{} (seq {}..={})", a.file, a.first_seq, a.last_seq))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
