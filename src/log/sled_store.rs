//! The sled-backed [`LogStore`]: tree `events` keyed by big-endian seq (so key order is append
//! order), tree `by_uid` keyed by `uid ++ 0x00 ++ seq` (a uid never holds a control byte, so the
//! separator is unambiguous) for one user's history without a scan.
//!
//! Promises that a batch is durable after [`LogStore::flush`], which syncs it in the log's
//! write-ahead file on the calling thread ([`super::sled_wal`]), and lands in both trees whole:
//! the trees take it by plain inserts, and opening the log puts every batch of the file into
//! them again (a log dropped whole is flushed and left without the file). An index row may
//! outlive its event only after a batch taken back and a crash in the same moment: readers of
//! the index check each event's uids. And that sled's page cache is the size it is opened with (sled's
//! own default, 1 GiB, is never used). A new log is not compressed: sled's zstd took the bytes
//! on disk from about 300 to 150 per event, but its first open after a write session replayed
//! 2,000,000 events in 37.6 s against 1.8 s uncompressed (`docs/performance.md`, "Bytes per
//! event"); a log created compressed keeps the setting it was created with. Must never: be opened by two processes (sled locks
//! the directory), or with another compression setting than its own (sled refuses it).

pub mod blocks;
pub mod uid_runs;

use std::path::Path;

use parking_lot::Mutex;

use super::sled_wal::{self, Wal};
use super::{EncodedRecord, LogError, LogStore};
use crate::config::DEFAULT_LOG_CACHE_MB;
use crate::domain::Seq;

/// The zstd level sled compresses the pages of a log created compressed with.
const COMPRESSION_LEVEL: i32 = 1;

pub struct SledStore {
    pub(super) db: sled::Db,
    pub(super) events: sled::Tree,
    pub(super) by_uid: sled::Tree,
    /// Where the writer's batches are made durable ([`super::sled_wal`]); sled holds them in
    /// memory and writes them out at each checkpoint.
    wal: Mutex<Wal>,
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
            .compression_factor(COMPRESSION_LEVEL)
            // The write-ahead file makes batches durable, and its checkpoints flush sled: a
            // timed flush would only wake sled's IO threads more often.
            .flush_every_ms(None);
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
        let generation = Self::recover(dir, &db, &events, &by_uid)?;
        let wal = Mutex::new(Wal::start(dir, generation, db.clone())?);
        Ok(SledStore {
            db,
            events,
            by_uid,
            wal,
        })
    }

    /// Puts into sled every batch the write-ahead files hold (made durable there, perhaps not
    /// yet by sled, or only in part: the trees are written without a transaction), flushes
    /// sled and removes the files. Returns the generation the next file starts.
    fn recover(
        dir: &Path,
        db: &sled::Db,
        events: &sled::Tree,
        by_uid: &sled::Tree,
    ) -> Result<u64, LogError> {
        let last = last_seq_of(events)?;
        let batches = sled_wal::replayable(dir, last)?;
        let mut replayed = 0usize;
        for r in batches.into_iter().flatten() {
            events
                .insert(r.seq.to_key(), r.bytes)
                .map_err(LogError::storage)?;
            for uid in &r.uids {
                by_uid
                    .insert(Self::uid_key(uid, r.seq), &[][..])
                    .map_err(LogError::storage)?;
            }
            replayed += usize::from(r.seq > last);
        }
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "the log took its last events from its write-ahead files"
            );
        }
        db.flush().map_err(LogError::storage)?;
        sled_wal::remove_all(dir)
    }

    /// The database the log's trees live in: the webhook keeps its cursor in a tree of its own
    /// there, beside the log it points into.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// One event into both trees: the event first, then its index rows, so that an index row
    /// never names an event sled does not hold. Plain inserts, not a sled batch or transaction:
    /// each of those rolls sled's IO buffer and so writes it out through sled's IO threads; a
    /// batch's atomicity comes from the write-ahead file instead (replayed whole at open).
    fn insert<'a>(
        &self,
        seq: Seq,
        bytes: &[u8],
        uids: impl Iterator<Item = &'a str>,
    ) -> Result<(), LogError> {
        self.events
            .insert(seq.to_key(), bytes)
            .map_err(LogError::storage)?;
        for uid in uids {
            self.by_uid
                .insert(Self::uid_key(uid, seq), &[][..])
                .map_err(LogError::storage)?;
        }
        Ok(())
    }

    fn uid_key(uid: &str, seq: Seq) -> Vec<u8> {
        let mut k = Vec::with_capacity(uid.len() + 9);
        k.extend_from_slice(uid.as_bytes());
        k.push(0);
        k.extend_from_slice(&seq.to_key());
        k
    }
}

impl Drop for SledStore {
    /// A log closed whole is a plain sled log again: sled flushed, the write-ahead files gone
    /// (what an older build, or sled itself, reads). Left as they are when the flush fails: the
    /// next open replays them.
    fn drop(&mut self) {
        let wal = self.wal.get_mut();
        wal.stop_checkpoints();
        match self.db.flush() {
            Ok(_) => {
                if let Err(e) = sled_wal::remove_all(wal.dir()) {
                    tracing::warn!(error = %e, "the log's write-ahead files stay until the next start");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the log's last flush failed; the next start replays its write-ahead files")
            }
        }
    }
}

fn last_seq_of(events: &sled::Tree) -> Result<Seq, LogError> {
    match events.last().map_err(LogError::storage)? {
        Some((k, _)) => Seq::from_key(&k).ok_or_else(|| LogError::storage("malformed seq key")),
        None => Ok(Seq(0)),
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
        last_seq_of(&self.events)
    }

    /// Into sled's memory and the write-ahead file, not yet durable. A failure of the file's
    /// write fails the [`LogStore::flush`] that follows, which takes the batch back.
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        for r in batch {
            self.insert(r.seq, &r.bytes, r.uids.iter().map(|u| u.as_str()))?;
        }
        self.wal.lock().write(batch);
        Ok(())
    }

    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        for r in batch {
            for uid in &r.uids {
                self.by_uid
                    .remove(Self::uid_key(uid.as_str(), r.seq))
                    .map_err(LogError::storage)?;
            }
            self.events
                .remove(r.seq.to_key())
                .map_err(LogError::storage)?;
        }
        self.wal.lock().take_back()
    }

    /// Syncs the write-ahead file on the calling thread (the writer's): no hand-off to sled's
    /// IO threads.
    fn flush(&self) -> Result<(), LogError> {
        self.wal.lock().sync()
    }

    /// A write beside the log (the webhook's cursor) goes to sled alone, not to the write-ahead
    /// file, so the appends' flush does not cover it: sled's own flush does.
    fn flush_beside(&self, _appends_flushed: bool) -> Result<(), LogError> {
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
