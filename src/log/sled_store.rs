//! The sled-backed [`LogStore`]: tree `events` keyed by big-endian seq (so key order is append
//! order), tree `by_uid` keyed by `uid ++ 0x00 ++ seq` (a uid never holds a control byte, so the
//! separator is unambiguous) for one user's history without a scan.
//!
//! Promises that a batch lands in both trees atomically (one sled transaction) and is durable
//! after [`LogStore::flush`], and that sled's page cache is the size it is opened with (sled's
//! own default, 1 GiB, is never used). A new log is not compressed: sled's zstd took the bytes
//! on disk from about 300 to 150 per event, but its first open after a write session replayed
//! 2,000,000 events in 37.6 s against 1.8 s uncompressed (`docs/performance.md`, "Bytes per
//! event"); a log created compressed keeps the setting it was created with. Must never: be opened by two processes (sled locks
//! the directory), or with another compression setting than its own (sled refuses it).

use std::path::Path;

use sled::Transactional;

use super::{EncodedRecord, LogError, LogStore};
use crate::config::DEFAULT_LOG_CACHE_MB;
use crate::domain::Seq;

/// The zstd level sled compresses the pages of a log created compressed with.
const COMPRESSION_LEVEL: i32 = 1;

pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) events: sled::Tree,
    pub(super) by_uid: sled::Tree,
}

impl SledStore {
    /// Opens the log in `dir` with the server's default page cache (for the commands that read
    /// a stopped data directory, and for tests).
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        Self::open_with_cache(dir, DEFAULT_LOG_CACHE_MB)
    }

    /// Opens the log in `dir`, its page cache bounded to `cache_mb` MiB (at least 1; the
    /// server's `--log-cache-mb`, checked there). sled counts a page by its size on disk, so
    /// the memory it holds is about this plus its bookkeeping, not a hard limit.
    pub fn open_with_cache(dir: &Path, cache_mb: u64) -> Result<Self, LogError> {
        // An archive run killed while it swapped the log for its rewrite is finished first:
        // never open (and so create) an empty log where a whole one is one rename away.
        super::sled_rewrite::finish_interrupted(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb.max(1).saturating_mul(1024 * 1024))
            .use_compression(compresses(dir))
            // zstd's fastest level: sled compresses whole pages on the writer's flush, and at
            // its default (5) durable writes per second fell (docs/performance.md, "Bytes per
            // event"); the level is not stored, so any log reads under any level.
            .compression_factor(COMPRESSION_LEVEL);
        let db = config.open().map_err(|e| {
            if held_by_another_process(&e) {
                LogError::InUse {
                    what: "event log",
                    dir: dir.to_path_buf(),
                    remedy: "stop it first",
                }
            } else {
                LogError::storage(format_args!("cannot open {}: {e}", dir.display()))
            }
        })?;
        let events = db.open_tree("events").map_err(LogError::storage)?;
        let by_uid = db.open_tree("by_uid").map_err(LogError::storage)?;
        Ok(SledStore { db, events, by_uid })
    }

    /// The database the log's trees live in: the webhook keeps its cursor in a tree of its own
    /// there, beside the log it points into.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Applies a batch to each tree in one transaction: both or neither.
    fn apply_to_both(&self, events: &sled::Batch, index: &sled::Batch) -> Result<(), LogError> {
        (&self.events, &self.by_uid)
            .transaction(|(ev, ix)| {
                ev.apply_batch(events)?;
                ix.apply_batch(index)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| LogError::storage(format_args!("{e:?}")))
    }

    fn uid_key(uid: &str, seq: Seq) -> Vec<u8> {
        let mut k = Vec::with_capacity(uid.len() + 9);
        k.extend_from_slice(uid.as_bytes());
        k.push(0);
        k.extend_from_slice(&seq.to_key());
        k
    }
}

/// Whether the log in `dir` compresses what it writes (zstd, each page and each update of a
/// page): a new log does not; a log created with it keeps it on, as sled refuses to open a log
/// with another setting than it was created with. sled keeps the setting in its `conf` file,
/// one `name: value` line each (read here as text, before sled opens the directory).
fn compresses(dir: &Path) -> bool {
    match std::fs::read(dir.join("conf")) {
        Ok(conf) => String::from_utf8_lossy(&conf)
            .lines()
            .any(|line| line.trim() == "use_compression: true"),
        Err(_) => false,
    }
}

/// Whether sled could not open its directory because another process holds its lock. sled 0.34
/// says so only in words: an `Io` error of kind `Other`, "could not acquire lock on ...", with
/// the OS error's `Debug` form inside (`WouldBlock` when the lock is taken).
fn held_by_another_process(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::Other => {
            let said = io.to_string();
            said.starts_with("could not acquire lock on") && said.contains("WouldBlock")
        }
        _ => false,
    }
}

impl LogStore for SledStore {
    fn last_seq(&self) -> Result<Seq, LogError> {
        match self.events.last().map_err(LogError::storage)? {
            Some((k, _)) => Seq::from_key(&k).ok_or_else(|| LogError::storage("malformed seq key")),
            None => Ok(Seq(0)),
        }
    }

    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let mut events = sled::Batch::default();
        let mut index = sled::Batch::default();
        for r in batch {
            events.insert(&r.seq.to_key(), r.bytes.as_slice());
            for uid in &r.uids {
                index.insert(Self::uid_key(uid.as_str(), r.seq), &[][..]);
            }
        }
        self.apply_to_both(&events, &index)
    }

    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let mut events = sled::Batch::default();
        let mut index = sled::Batch::default();
        for r in batch {
            events.remove(&r.seq.to_key());
            for uid in &r.uids {
                index.remove(Self::uid_key(uid.as_str(), r.seq));
            }
        }
        self.apply_to_both(&events, &index)
    }

    fn flush(&self) -> Result<(), LogError> {
        self.db.flush().map(|_| ()).map_err(LogError::storage)
    }

    fn boundary(&self) -> Result<Option<Vec<u8>>, LogError> {
        let tree = self
            .db
            .open_tree(super::sled_rewrite::ARCHIVE_TREE)
            .map_err(LogError::storage)?;
        let value = tree
            .get(super::sled_rewrite::BOUNDARY_KEY)
            .map_err(LogError::storage)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.events.range(after.next().to_key()..).take(limit) {
            let (k, v) = item.map_err(LogError::storage)?;
            let seq = Seq::from_key(&k).ok_or_else(|| LogError::storage("malformed seq key"))?;
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }

    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let mut prefix = uid.as_bytes().to_vec();
        prefix.push(0);
        let start = Self::uid_key(uid, after.next());
        let mut out = Vec::new();
        for item in self.by_uid.range(start..).take(limit) {
            let (k, _) = item.map_err(LogError::storage)?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            let seq = Seq::from_key(&k[prefix.len()..]).expect("8 bytes checked above");
            let v = self
                .events
                .get(seq.to_key())
                .map_err(LogError::storage)?
                .ok_or_else(|| {
                    LogError::storage(format_args!("index names missing event {seq}"))
                })?;
            out.push((seq, v.to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(dir: &Path) -> String {
        String::from_utf8_lossy(&std::fs::read(dir.join("conf")).unwrap()).into_owned()
    }

    #[test]
    fn a_new_log_is_not_compressed_and_a_compressed_one_keeps_its_setting() {
        let new = tempfile::tempdir().unwrap();
        drop(SledStore::open(new.path()).unwrap());
        assert!(conf(new.path()).contains("use_compression: false"));
        drop(SledStore::open(new.path()).expect("reopens with its own setting"));

        let old = tempfile::tempdir().unwrap();
        let made = sled::Config::new().path(old.path()).use_compression(true);
        drop(made.open().unwrap());
        let store = SledStore::open(old.path()).expect("a log made with compression opens");
        store
            .write(&[EncodedRecord {
                seq: Seq(1),
                bytes: b"x".to_vec(),
                uids: vec![],
            }])
            .unwrap();
        store.flush().unwrap();
        drop(store);
        assert!(conf(old.path()).contains("use_compression: true"));
        let again = SledStore::open(old.path()).unwrap();
        assert_eq!(again.last_seq().unwrap(), Seq(1));
    }
}
