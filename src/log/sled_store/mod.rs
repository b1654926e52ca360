//! The sled-backed [`LogStore`], packed: events 16 to a key in tree `event_blocks`
//! ([`blocks`]), each user's seqs up to 16 to a key in tree `uid_runs` ([`uid_runs`]) for one
//! user's history without a scan. sled keeps about 180 B of bookkeeping per page for the whole
//! life of the log and makes a page per 9 keys appended in order: a key per event and per index
//! row held about 40 B of memory per event forever, and cost about 120 B on disk per key
//! written (docs/performance.md, "A packed log: one key per 16 events"). A log of the layout
//! before (a key per event) is converted when it is opened ([`upgrade`]).
//!
//! Promises that a batch is durable after [`LogStore::flush`], which syncs it in the log's
//! write-ahead file on the calling thread ([`super::sled_wal`]), and lands in both trees whole:
//! the block being filled and each uid's last run are held back in memory ([`pending`]) and
//! reach sled by plain inserts when full, when the write-ahead file rolls over (before its
//! checkpoint's flush), before a take-back or an archive, and at close; opening the log puts
//! every batch of the files into them again through the same path, which cuts back what it
//! finds at or after a replayed seq (a log dropped whole is flushed and left without the
//! files). Readers see sled and the held-back state as one: a snapshot of the held-back state
//! first, then sled bounded by it (see `read_after`, `read_uid`). An index run may name a seq whose event is gone, or
//! another event, only after a batch taken back and a crash in the same moment: readers of the
//! index check each event's uids. And that sled's page cache is the size it is opened with
//! (sled's own default, 1 GiB, is never used). A new log is not compressed: sled's zstd took
//! the bytes on disk from about 300 to 150 per event, but its first open after a write session
//! replayed 2,000,000 events in 37.6 s against 1.8 s uncompressed (`docs/performance.md`,
//! "Bytes per event"); a log created compressed keeps the setting it was created with. Must
//! never: be opened by two processes (sled locks the directory), or with another compression
//! setting than its own (sled refuses it); rewrite a full block; write a key per event.

pub mod blocks;
mod pending;
pub mod uid_runs;
mod upgrade;

#[cfg(test)]
mod tests;

use std::path::Path;

use parking_lot::Mutex;

use super::sled_wal::{self, Replayed, Wal};
use super::{EncodedRecord, LogError, LogStore};
use crate::config::DEFAULT_LOG_CACHE_MB;
use crate::domain::Seq;
use blocks::{Block, OpenBlock};
use pending::Pending;

/// The zstd level sled compresses the pages of a log created compressed with.
const COMPRESSION_LEVEL: i32 = 1;

/// The tree of the events, 16 to a key.
pub const BLOCKS_TREE: &[u8] = b"event_blocks";
/// The tree of each uid's seqs, 16 to a key.
pub const RUNS_TREE: &[u8] = b"uid_runs";

pub struct SledStore {
    pub(in crate::log) db: sled::Db,
    pub(in crate::log) blocks: sled::Tree,
    pub(in crate::log) runs: sled::Tree,
    /// The block being filled and each uid's last run touched since the write-ahead file last
    /// rolled over, held back from sled ([`pending`]). Taken before `wal`.
    pending: Mutex<Pending>,
    /// Where the writer's batches are made durable ([`super::sled_wal`]); sled holds them in
    /// memory and writes them out at each checkpoint.
    wal: Mutex<Wal>,
}

/// What the append path needs of an event: the writer's records and the write-ahead file's.
trait Appended {
    fn seq(&self) -> Seq;
    fn bytes(&self) -> &[u8];
    fn uids(&self) -> impl Iterator<Item = &str>;
}

impl Appended for EncodedRecord {
    fn seq(&self) -> Seq {
        self.seq
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn uids(&self) -> impl Iterator<Item = &str> {
        self.uids.iter().map(|u| u.as_str())
    }
}

impl Appended for Replayed {
    fn seq(&self) -> Seq {
        self.seq
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn uids(&self) -> impl Iterator<Item = &str> {
        self.uids.iter().map(String::as_str)
    }
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
        let db = open_waiting_for_release(&config).map_err(|e| {
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
        let blocks_tree = db.open_tree(BLOCKS_TREE).map_err(LogError::storage)?;
        let runs = db.open_tree(RUNS_TREE).map_err(LogError::storage)?;
        upgrade::to_packed(&db, &blocks_tree, &runs)?;
        let (generation, pending) = Self::recover(dir, &db, &blocks_tree, &runs)?;
        let wal = Mutex::new(Wal::start(dir, generation, db.clone())?);
        Ok(SledStore {
            db,
            blocks: blocks_tree,
            runs,
            pending: Mutex::new(pending),
            wal,
        })
    }

    /// Puts into sled every batch the write-ahead files hold (made durable there, perhaps not
    /// yet by sled, or only in part: the trees are written without a transaction), puts what
    /// the append held back into sled too, flushes sled and removes the files. Returns the
    /// generation the next file starts, and the held-back state (nothing held back).
    fn recover(
        dir: &Path,
        db: &sled::Db,
        blocks_tree: &sled::Tree,
        runs: &sled::Tree,
    ) -> Result<(u64, Pending), LogError> {
        let last = last_seq_of(blocks_tree)?;
        let batches = sled_wal::replayable(dir, last)?;
        let mut replayed = 0usize;
        let mut pending = Pending::stored(last_block(blocks_tree)?);
        for batch in &batches {
            pending.append(blocks_tree, runs, batch)?;
            replayed += batch.iter().filter(|r| r.seq > last).count();
        }
        // The files go below: sled must hold all they do first.
        pending.spill(blocks_tree, runs)?;
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "the log took its last events from its write-ahead files"
            );
        }
        db.flush().map_err(LogError::storage)?;
        Ok((sled_wal::remove_all(dir)?, pending))
    }

    /// Puts into sled what the store holds back from it (for a reader of sled's trees alone:
    /// the archive's rewrite).
    pub(in crate::log) fn spill(&self) -> Result<(), LogError> {
        self.pending.lock().spill(&self.blocks, &self.runs)
    }

    /// The database the log's trees live in: the webhook keeps its cursor in a tree of its own
    /// there, beside the log it points into.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// The last block as sled holds it.
fn last_block(blocks_tree: &sled::Tree) -> Result<Option<OpenBlock>, LogError> {
    match blocks_tree.last().map_err(LogError::storage)? {
        Some((k, v)) => Ok(Some(OpenBlock::stored(blocks::number_from_key(&k)?, &v)?)),
        None => Ok(None),
    }
}

/// Block `number` as sled holds it, or empty.
fn block_at(blocks_tree: &sled::Tree, number: u64) -> Result<OpenBlock, LogError> {
    match blocks_tree
        .get(blocks::key_of(number))
        .map_err(LogError::storage)?
    {
        Some(v) => OpenBlock::stored(number, &v),
        None => Ok(OpenBlock::new(number)),
    }
}

/// The batch's seqs by uid: each uid once, with the range of its seqs (ascending, each once:
/// an event may name a uid twice) in the second vector. Two allocations a batch.
fn by_uid<R: Appended>(batch: &[R]) -> (Vec<(&str, std::ops::Range<usize>)>, Vec<Seq>) {
    let mut pairs: Vec<(&str, Seq)> = batch
        .iter()
        .flat_map(|r| r.uids().map(move |u| (u, r.seq())))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut groups: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
    for (at, (uid, _)) in pairs.iter().enumerate() {
        match groups.last_mut() {
            Some((last, range)) if last == uid => range.end = at + 1,
            _ => groups.push((uid, at..at + 1)),
        }
    }
    let seqs = pairs.iter().map(|(_, s)| *s).collect();
    (groups, seqs)
}

impl Drop for SledStore {
    /// A log closed whole is a plain sled log again: sled flushed, the write-ahead files gone
    /// (what an older build, or sled itself, reads). Left as they are when the flush fails: the
    /// next open replays them.
    fn drop(&mut self) {
        let wal = self.wal.get_mut();
        wal.stop_checkpoints();
        if let Err(e) = self.pending.get_mut().spill(&self.blocks, &self.runs) {
            tracing::warn!(error = %e, "the log's held-back writes did not reach sled; the next start replays its write-ahead files");
            return;
        }
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

fn last_seq_of(blocks_tree: &sled::Tree) -> Result<Seq, LogError> {
    match blocks_tree.last().map_err(LogError::storage)? {
        Some((k, v)) => blocks::last_seq(blocks::number_from_key(&k)?, &v),
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

/// How long an open waits for a lock held by a log of this process that is being dropped.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled, trying again for up to [`RELEASE_WAIT`] while its directory's lock is held.
/// sled shares the locked file among its handles and its IO pool's tasks, so the lock outlives
/// the last `Db` dropped by as long as a task still finishing a write holds it: a log closed
/// and opened again in one process (a test, a conversion, an archive's rewrite) could be
/// refused as in use by itself. A log another process holds is still refused, after the wait.
fn open_waiting_for_release(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let since = std::time::Instant::now();
    loop {
        match config.open() {
            Err(e) if held_by_another_process(&e) && since.elapsed() < RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            outcome => return outcome,
        }
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
        match self.pending.lock().last_seq() {
            Some(last) => last,
            None => last_seq_of(&self.blocks),
        }
    }

    /// Into sled's memory and the write-ahead file, not yet durable. A failure of the file's
    /// write fails the [`LogStore::flush`] that follows, which takes the batch back.
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let mut pending = self.pending.lock();
        if let Err(e) = pending.append(&self.blocks, &self.runs, batch) {
            // What is held of the batch is unknown: all of it into sled, and the last block
            // read again from there. Kept as it is if sled refuses it: the files stay too.
            if pending.spill(&self.blocks, &self.runs).is_ok() {
                if let Ok(open) = last_block(&self.blocks) {
                    *pending = Pending::stored(open);
                }
            }
            return Err(e);
        }
        self.wal.lock().write(batch);
        Ok(())
    }

    /// Takes the batch's seqs out of the runs, then its events out of the blocks: the block
    /// its first seq is in is cut back before it (removed if nothing is left), the blocks
    /// after it removed.
    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return self.wal.lock().take_back();
        };
        let mut pending = self.pending.lock();
        // A rare path: it works on sled alone.
        pending.spill(&self.blocks, &self.runs)?;
        let (groups, seqs) = by_uid(batch);
        for (uid, range) in groups {
            uid_runs::remove(&self.runs, uid, &seqs[range])?;
        }
        let (from, to) = (blocks::number_of(first.seq), blocks::number_of(last.seq));
        for number in (from + 1..=to).rev() {
            self.blocks
                .remove(blocks::key_of(number))
                .map_err(LogError::storage)?;
        }
        let mut cut = block_at(&self.blocks, from)?;
        cut.truncate(first.seq)?;
        if cut.is_empty() {
            self.blocks
                .remove(blocks::key_of(from))
                .map_err(LogError::storage)?;
        } else {
            self.blocks
                .insert(blocks::key_of(from), cut.value())
                .map_err(LogError::storage)?;
        }
        *pending = Pending::stored(last_block(&self.blocks)?);
        self.wal.lock().take_back()
    }

    /// Syncs the write-ahead file on the calling thread (the writer's): no hand-off to sled's
    /// IO threads.
    fn flush(&self) -> Result<(), LogError> {
        let mut pending = self.pending.lock();
        let mut wal = self.wal.lock();
        wal.sync()?;
        if wal.roll_due() {
            // The checkpoint behind the roll flushes sled and removes the file: sled must
            // hold everything the file does first, the held-back runs put there by the
            // checkpoint thread before its flush. Not rolled if sled refuses the block: the
            // file grows, the batches in it durable all the same.
            match pending.hand_over(&self.blocks, &self.runs) {
                Ok(runs) => wal.roll(Box::new(move || runs.run())),
                Err(e) => {
                    tracing::warn!(error = %e, "the log's held-back writes did not reach sled; its write-ahead file grows")
                }
            }
        }
        Ok(())
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

    /// From the block that holds `after + 1` on: sled's blocks before the one being filled (as
    /// a snapshot taken first holds it; they are whole in sled and never change), then that
    /// one from the snapshot. Everything up to the snapshot, whatever moves to sled meanwhile.
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let snapshot = self.pending.lock().snapshot(None);
        let Some(open) = snapshot.open else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        let take = |out: &mut Vec<(Seq, Vec<u8>)>, number: u64, value: &[u8]| {
            let block = Block::decode(number, value)?;
            out.extend(
                block
                    .iter()
                    .filter(|(seq, _)| *seq > after)
                    .take(limit - out.len())
                    .map(|(seq, bytes)| (seq, bytes.to_vec())),
            );
            Ok::<(), LogError>(())
        };
        let start = blocks::number_of(after.next());
        if start < open.number() {
            let range = blocks::key_of(start)..blocks::key_of(open.number());
            for item in self.blocks.range(range) {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (k, v) = item.map_err(LogError::storage)?;
                take(&mut out, blocks::number_from_key(&k)?, &v)?;
            }
        }
        if out.len() < limit && !open.is_empty() {
            take(&mut out, open.number(), open.value())?;
        }
        Ok(out)
    }

    /// The uid's seqs from its runs, each event from its block (a block read once for the
    /// seqs in it that follow each other). As a snapshot taken first holds it: sled's runs
    /// before the held-back one (final), then that one; no seq past the snapshot's last (sled
    /// may hold newer ones by the time it is read); the block being filled from the snapshot,
    /// the blocks before it from sled (whole there).
    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let snapshot = self.pending.lock().snapshot(Some(uid));
        let last = snapshot.last_seq()?;
        let below = snapshot.run.as_ref().map(|run| run[0]);
        let mut seqs = uid_runs::seqs_after(&self.runs, uid, after, limit, below)?;
        if let Some(run) = &snapshot.run {
            let room = limit.saturating_sub(seqs.len());
            seqs.extend(run.iter().copied().filter(|s| *s > after).take(room));
        }
        seqs.retain(|s| *s <= last);
        let held = snapshot.open.as_ref().filter(|b| !b.is_empty());
        let mut out = Vec::with_capacity(seqs.len());
        for same_block in seqs.chunk_by(|a, b| blocks::number_of(*a) == blocks::number_of(*b)) {
            let number = blocks::number_of(same_block[0]);
            let missing = |seq: Seq| {
                LogError::storage(format_args!("the uid index names missing event {seq}"))
            };
            let stored;
            let value: &[u8] = match held.filter(|b| b.number() == number) {
                Some(b) => b.value(),
                None => {
                    stored = self
                        .blocks
                        .get(blocks::key_of(number))
                        .map_err(LogError::storage)?
                        .ok_or_else(|| missing(same_block[0]))?;
                    &stored
                }
            };
            let block = Block::decode(number, value)?;
            for &seq in same_block {
                let bytes = block.get(seq).ok_or_else(|| missing(seq))?;
                out.push((seq, bytes.to_vec()));
            }
        }
        Ok(out)
    }
}
