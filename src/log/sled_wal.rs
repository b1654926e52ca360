//! The sled log's write-ahead file: what makes a batch durable without sled's IO threads.
//!
//! sled 0.34 makes a write durable only through its own thread pool: a flush seals its buffer,
//! hands the write to the pool (whose condition variable wakes every one of its seven idle
//! threads in turn) and waits for a pool thread to write and sync it. At 2,000 appends a second
//! that was a dozen thread wake-ups per batch (docs/performance.md, "Where a login storm's
//! time goes"). Here the writer's thread makes each batch durable itself: it appends the batch
//! as one record to a file of its own (`wal.<generation>` in the log's directory) and makes it
//! durable with `fdatasync`: the record, the file's new length and the device's write cache,
//! so an acknowledged batch survives a power loss and not only a crash of the process (sled's
//! own `sync_file_range` writes neither the length nor the cache); sled gets the same
//! batch (or, for the block being filled and each uid's last run, the store's memory: see
//! [`super::sled_store`]) and writes it out later. When a file passes [`CHECKPOINT_BYTES`] the
//! writer starts the next file, and a checkpoint thread puts what the store held back into sled
//! (the work the roll hands it), flushes sled and fsyncs sled's file (which then holds, on the
//! device, everything the older files hold) and removes them.
//!
//! Owns the files and their format: a record is the payload's length (u32), its CRC-32 (u32)
//! and the payload: the number of events (u32), then each event's seq (u64), its bytes (u32
//! length, bytes) and its uids (u16 count, each a u16 length and the uid's bytes); little
//! endian. Promises: a batch is durable once [`Wal::sync`] returned; opening the log puts
//! into sled every whole record ([`replayable`]), flushes sled and removes the files; a torn record (a crash mid-write) and everything after it is ignored:
//! nobody was told it was durable. A batch taken back ([`Wal::take_back`]) is cut off the file
//! and the cut synced with `fdatasync` before the next batch (a rare path). Must never: let a
//! file be removed before sled's flush, and an fsync of sled's file, cover every batch in it, or
//! replay a record that would leave a gap in the seqs (it refuses to open instead).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use super::{EncodedRecord, LogError};
use crate::domain::Seq;

/// A file past this many bytes is closed, and sled flushed to take its place.
pub const CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

const PREFIX: &str = "wal.";

fn io_error(what: &Path, e: std::io::Error) -> LogError {
    LogError::storage(format_args!("write-ahead file {}: {e}", what.display()))
}

/// The file of one generation.
fn file_of(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{generation:020}"))
}

/// The generations of the files in `dir`, ascending.
fn generations(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        if let Some(generation) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|g| g.parse::<u64>().ok())
        {
            found.push(generation);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Encodes `batch` as one record.
fn encode(batch: &[EncodedRecord]) -> Vec<u8> {
    let payload_len: usize = 4 + batch
        .iter()
        .map(|r| {
            8 + 4 + r.bytes.len() + 2 + r.uids.iter().map(|u| 2 + u.as_str().len()).sum::<usize>()
        })
        .sum::<usize>();
    let mut out = Vec::with_capacity(8 + payload_len);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&(batch.len() as u32).to_le_bytes());
    for r in batch {
        out.extend_from_slice(&r.seq.0.to_le_bytes());
        out.extend_from_slice(&(r.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.bytes);
        out.extend_from_slice(&(r.uids.len() as u16).to_le_bytes());
        for uid in &r.uids {
            out.extend_from_slice(&(uid.as_str().len() as u16).to_le_bytes());
            out.extend_from_slice(uid.as_str().as_bytes());
        }
    }
    let len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// One event read back from a record: its seq, its bytes, its uids.
pub(super) struct Replayed {
    pub seq: Seq,
    pub bytes: Vec<u8>,
    pub uids: Vec<String>,
}

/// Reads the whole records at the start of `data`; stops at the first torn or damaged one.
fn decode_all(data: &[u8]) -> Vec<Vec<Replayed>> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = data.get(at..at + 8) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else {
            break;
        };
        if len == 0 || crc32fast::hash(payload) != crc {
            break;
        }
        let Some(batch) = decode_payload(payload) else {
            break;
        };
        records.push(batch);
        at += 8 + len;
    }
    records
}

fn decode_payload(p: &[u8]) -> Option<Vec<Replayed>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = p.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut batch = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let seq = Seq(u64::from_le_bytes(take(8)?.try_into().ok()?));
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let bytes = take(len)?.to_vec();
        let uids_count = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let mut uids = Vec::with_capacity(uids_count as usize);
        for _ in 0..uids_count {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            uids.push(String::from_utf8(take(len)?.to_vec()).ok()?);
        }
        batch.push(Replayed { seq, bytes, uids });
    }
    Some(batch)
}

/// The batches of every file in `dir`, in order: all of them, as sled may hold a batch in part
/// (they are put in again, which changes nothing for what sled holds whole). Refuses records
/// that would leave a gap, among them or after `last` (sled's last seq).
pub(super) fn replayable(dir: &Path, last: Seq) -> Result<Vec<Vec<Replayed>>, LogError> {
    let mut expected: Option<Seq> = None;
    let mut out = Vec::new();
    for generation in generations(dir)? {
        let path = file_of(dir, generation);
        let mut data = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| io_error(&path, e))?;
        for batch in decode_all(&data) {
            let (Some(first), Some(end)) = (batch.first(), batch.last()) else {
                continue;
            };
            let fits = match expected {
                Some(next) => first.seq == next,
                None => first.seq <= last.next(),
            };
            if !fits {
                return Err(LogError::storage(format_args!(
                    "write-ahead file {} holds seq {} where {} was expected: the log is damaged",
                    path.display(),
                    first.seq,
                    expected.unwrap_or(last.next())
                )));
            }
            expected = Some(end.seq.next());
            out.push(batch);
        }
    }
    Ok(out)
}

/// Removes every file in `dir` (after sled's flush made them needless) and syncs the directory.
pub(super) fn remove_all(dir: &Path) -> Result<u64, LogError> {
    let found = generations(dir)?;
    if !found.is_empty() {
        sync_sled_file(dir)?;
    }
    for generation in &found {
        let path = file_of(dir, *generation);
        std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
    }
    if !found.is_empty() {
        sync_dir(dir)?;
    }
    Ok(found.last().map_or(0, |g| g + 1))
}

/// Milliseconds from `a` to `b`, to a tenth, for the debug timeline.
fn ms_between(a: Instant, b: Instant) -> f64 {
    (b.saturating_duration_since(a).as_secs_f64() * 10_000.0).round() / 10.0
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// What a roll hands the checkpoint thread to do before its flush: put into sled what the store
/// held back of the files the checkpoint removes. On failure the files stay.
pub(super) type BeforeCheckpoint = Box<dyn FnOnce() -> Result<(), LogError> + Send>;

/// The file being appended to, and the checkpoint thread behind it.
pub(super) struct Wal {
    dir: PathBuf,
    generation: u64,
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// Bytes made durable.
    synced: u64,
    /// Where the last record written starts (what a take-back cuts back to).
    last_start: u64,
    /// Why the last write failed: the next sync fails with it, so the batch is taken back.
    failed: Option<LogError>,
    /// A take-back cut the file (or the last sync failed): the next sync runs even if no record
    /// was written since, so that the file's new length is durable.
    cut: bool,
    /// The size past which the file rolls over ([`CHECKPOINT_BYTES`]; smaller in tests).
    pub(super) roll_at: u64,
    checkpoint: Option<mpsc::Sender<(u64, BeforeCheckpoint)>>,
    checkpointing: Arc<AtomicBool>,
    checkpointer: Option<thread::JoinHandle<()>>,
}

impl Wal {
    /// Starts a new file of `generation` in `dir` (none may be there), with a checkpoint thread
    /// that flushes `db` before it removes the files before the current one.
    pub(super) fn start(dir: &Path, generation: u64, db: sled::Db) -> Result<Self, LogError> {
        let file = create(dir, generation)?;
        let (tx, rx) = mpsc::channel::<(u64, BeforeCheckpoint)>();
        let checkpointing = Arc::new(AtomicBool::new(false));
        let flag = checkpointing.clone();
        let files = dir.to_path_buf();
        let checkpointer = thread::Builder::new()
            .name("wkuser-log-checkpoint".into())
            .spawn(move || {
                while let Ok((before, first)) = rx.recv() {
                    let started = Instant::now();
                    let stored = first();
                    let flushing = Instant::now();
                    let done = stored.and_then(|()| checkpoint(&db, &files, before));
                    if let Err(e) = done {
                        // The files stay; the next checkpoint (or the next start) removes them,
                        // once the next roll has stored what this one could not.
                        tracing::warn!(error = %e, "the log's checkpoint failed");
                    }
                    let collecting = Instant::now();
                    // The spill before the roll and the flush replaced much of sled's memory.
                    super::sled_epoch::collect();
                    // A timeline for whoever looks for what a stall of the writes coincided
                    // with (`RUST_LOG=wkuser::log=debug`).
                    tracing::debug!(
                        before,
                        store_ms = ms_between(started, flushing),
                        flush_ms = ms_between(flushing, collecting),
                        collect_ms = ms_between(collecting, Instant::now()),
                        "the log's checkpoint"
                    );
                    flag.store(false, Ordering::Release);
                }
            })
            .map_err(LogError::storage)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            generation,
            file,
            len: 0,
            synced: 0,
            last_start: 0,
            failed: None,
            cut: false,
            roll_at: CHECKPOINT_BYTES,
            checkpoint: Some(tx),
            checkpointing,
            checkpointer: Some(checkpointer),
        })
    }

    /// Writes `batch` as one record after the last, not yet durable. A failure is kept for the
    /// next [`Wal::sync`], so that the batch is taken back as a failed flush.
    pub(super) fn write(&mut self, batch: &[EncodedRecord]) {
        let record = encode(batch);
        match self.file.write_all_at(&record, self.len) {
            Ok(()) => {
                self.last_start = self.len;
                self.len += record.len() as u64;
            }
            Err(e) => {
                self.last_start = self.len;
                self.failed = Some(io_error(&file_of(&self.dir, self.generation), e));
            }
        }
    }

    /// Makes every record written durable.
    pub(super) fn sync(&mut self) -> Result<(), LogError> {
        if let Some(e) = self.failed.take() {
            self.failed = Some(e.clone());
            return Err(e);
        }
        let path = || file_of(&self.dir, self.generation);
        if std::mem::take(&mut self.cut) || self.len > self.synced {
            if let Err(e) = self.file.sync_data() {
                self.cut = true;
                return Err(io_error(&path(), e));
            }
        }
        self.synced = self.len;
        Ok(())
    }

    /// Whether the file is past [`CHECKPOINT_BYTES`] and no checkpoint is running: the store
    /// then puts into sled what it holds back in memory and calls [`Wal::roll`].
    pub(super) fn roll_due(&self) -> bool {
        self.len >= self.roll_at && !self.checkpointing.load(Ordering::Acquire)
    }

    /// Moves to a new file and has the older ones checkpointed: `first` puts into sled, on the
    /// checkpoint thread, whatever the older files hold that sled does not, so that the
    /// checkpoint's flush covers it.
    pub(super) fn roll(&mut self, first: BeforeCheckpoint) {
        let started = Instant::now();
        if let Err(e) = self.next_file(first) {
            // The batches are durable all the same: the file grows until a move succeeds.
            tracing::warn!(error = %e, "cannot start the log's next write-ahead file");
        }
        tracing::debug!(
            generation = self.generation,
            ms = ms_between(started, Instant::now()),
            "the log's write-ahead file rolled over"
        );
    }

    /// Cuts the last record written off the file (its batch failed to become durable).
    pub(super) fn take_back(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(self.last_start)
            .map_err(|e| io_error(&file_of(&self.dir, self.generation), e))?;
        self.len = self.last_start;
        self.synced = self.synced.min(self.len);
        self.failed = None;
        self.cut = true;
        Ok(())
    }

    fn next_file(&mut self, first: BeforeCheckpoint) -> Result<(), LogError> {
        let file = create(&self.dir, self.generation + 1)?;
        // The new file's name is durable before any record in it counts.
        sync_dir(&self.dir)?;
        let finished = self.generation;
        self.generation += 1;
        self.file = file;
        (self.len, self.synced, self.last_start) = (0, 0, 0);
        if let Some(tx) = &self.checkpoint {
            self.checkpointing.store(true, Ordering::Release);
            if tx.send((finished, first)).is_err() {
                self.checkpointing.store(false, Ordering::Release);
            }
        }
        Ok(())
    }
}

impl Wal {
    /// The log's directory, where the files are.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the checkpoint thread (it holds the database open) after the checkpoint it runs.
    pub(super) fn stop_checkpoints(&mut self) {
        drop(self.checkpoint.take());
        if let Some(handle) = self.checkpointer.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_checkpoints();
    }
}

fn create(dir: &Path, generation: u64) -> Result<File, LogError> {
    let path = file_of(dir, generation);
    // Truncated: a file of this generation can only be a move to it that failed midway.
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))
}

/// Flushes sled, which then holds every batch of the files up to `last_generation`, and
/// removes those files.
fn checkpoint(db: &sled::Db, dir: &Path, last_generation: u64) -> Result<(), LogError> {
    db.flush().map_err(LogError::storage)?;
    sync_sled_file(dir)?;
    for generation in generations(dir)? {
        if generation <= last_generation {
            let path = file_of(dir, generation);
            std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        }
    }
    Ok(())
}

/// Makes what sled's flush wrote durable on the device. sled 0.34 syncs its writes with
/// `sync_file_range`, which leaves the device's write cache and the file's length to chance; an
/// fsync of its file (`db` in its directory) covers both before a write-ahead file that holds
/// the same batches is removed.
fn sync_sled_file(dir: &Path) -> Result<(), LogError> {
    let path = dir.join("db");
    File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Uid;

    fn record(seq: u64, uid: &str) -> EncodedRecord {
        EncodedRecord {
            seq: Seq(seq),
            bytes: format!("event {seq}").into_bytes(),
            uids: vec![Uid::parse(uid).unwrap()],
        }
    }

    fn seqs(batches: &[Vec<Replayed>]) -> Vec<Vec<u64>> {
        batches
            .iter()
            .map(|b| b.iter().map(|r| r.seq.0).collect())
            .collect()
    }

    #[test]
    fn records_read_back_after_the_last_seq_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut wal = Wal::start(dir.path(), 0, db).unwrap();
        wal.write(&[record(1, "ann"), record(2, "bob")]);
        wal.write(&[record(3, "cy")]);
        wal.sync().unwrap();
        drop(wal);
        let path = file_of(dir.path(), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode(&[record(4, "dee")])[..20]);
        std::fs::write(&path, &bytes).unwrap();

        let all = replayable(dir.path(), Seq(0)).unwrap();
        assert_eq!(
            seqs(&all),
            [vec![1, 2], vec![3]],
            "the torn record is not read"
        );
        assert_eq!(all[0][1].uids, ["bob"]);
        assert_eq!(all[0][1].bytes, b"event 2");
        let again = replayable(dir.path(), Seq(3)).unwrap();
        assert_eq!(
            seqs(&again),
            [vec![1, 2], vec![3]],
            "sled may hold them in part"
        );
        assert_eq!(remove_all(dir.path()).unwrap(), 1, "the next generation");
        assert!(generations(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_batch_taken_back_is_not_read_and_its_place_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut wal = Wal::start(dir.path(), 3, db).unwrap();
        wal.write(&[record(1, "ann")]);
        wal.sync().unwrap();
        wal.write(&[record(2, "bob"), record(3, "bob")]);
        wal.take_back().unwrap();
        wal.write(&[record(2, "cy")]);
        wal.sync().unwrap();
        let all = replayable(dir.path(), Seq(0)).unwrap();
        assert_eq!(seqs(&all), [vec![1], vec![2]]);
        assert_eq!(all[1][0].uids, ["cy"]);
    }

    /// A checkpoint removes a file only once sled's own file is synced: where that file cannot
    /// be synced (here: sled lives elsewhere), the write-ahead files stay for the next start.
    #[test]
    fn a_file_stays_until_sleds_file_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = sled::Config::new().temporary(true).open().unwrap();
        create(dir.path(), 0).unwrap();
        create(dir.path(), 1).unwrap();
        assert!(checkpoint(&elsewhere, dir.path(), 0).is_err());
        assert_eq!(generations(dir.path()).unwrap(), [0, 1]);
        let beside = sled::open(dir.path()).unwrap();
        checkpoint(&beside, dir.path(), 0).unwrap();
        assert_eq!(generations(dir.path()).unwrap(), [1]);
    }

    #[test]
    fn a_gap_in_the_seqs_refuses_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut wal = Wal::start(dir.path(), 0, db).unwrap();
        wal.write(&[record(5, "ann")]);
        wal.sync().unwrap();
        let refused = replayable(dir.path(), Seq(3)).err().expect("a gap");
        assert!(
            refused.to_string().contains("seq 5 where 4 was expected"),
            "{refused}"
        );
    }
}
