//! Rewriting a stopped sled log without its archived range, and swapping the rewrite in.
//!
//! sled does not give disk space back when keys are removed, so an archive that only removed
//! them would not shrink the log. Instead the events after the boundary (the block that holds
//! the boundary cut to start after it, the blocks after it as they are), their seqs in each
//! uid's runs and every other tree (the webhook's cursor among them) are copied into a fresh
//! sled directory, packed as the store writes (`super::sled_store`),
//! beside the log, `log.next`, together with the new boundary record; then the directories are
//! swapped: `log` -> `log.old`, `log.next` -> `log`, the data directory synced, `log.old`
//! removed.
//!
//! Owns that swap and its recovery ([`finish_interrupted`], run before every open of the log).
//! Promises: at every instant one of the directories is a whole log and the recovery finds it:
//! `log.next` is renamed toward `log` only once it is complete and flushed, so a `log.old`
//! beside it means the rewrite is whole; without `log.old`, a `log.next` is an unfinished
//! rewrite and is removed. Must never: remove `log` itself, or remove `log.old` while `log` is
//! missing.

use std::path::{Path, PathBuf};

use super::sled_store::{blocks, uid_runs, SledStore, BLOCKS_TREE, RUNS_TREE};
use super::LogError;
use crate::domain::Seq;

/// The tree that holds the boundary record, beside the log's own trees.
pub const ARCHIVE_TREE: &[u8] = b"archive";
/// The boundary record's key in [`ARCHIVE_TREE`].
pub const BOUNDARY_KEY: &[u8] = b"boundary";

/// Entries per sled batch while copying.
const COPY_BATCH: usize = 8192;

/// Where the rewrite of the log at `log_dir` is built.
pub fn next_dir(log_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.next", log_dir.display()))
}

/// Where the replaced log waits to be removed.
pub fn old_dir(log_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.old", log_dir.display()))
}

fn io_error(path: &Path, e: std::io::Error) -> LogError {
    LogError::storage(format_args!("{}: {e}", path.display()))
}

/// Brings a swap that a crash interrupted to its end, or an unfinished rewrite to nothing.
pub fn finish_interrupted(log_dir: &Path) -> Result<(), LogError> {
    let (next, old) = (next_dir(log_dir), old_dir(log_dir));
    if old.exists() {
        if !log_dir.exists() {
            if !next.exists() {
                return Err(LogError::storage(format_args!(
                    "{} is missing, and only the replaced log {} is there: restore it by hand",
                    log_dir.display(),
                    old.display()
                )));
            }
            tracing::warn!(log = %log_dir.display(), "finishing an archive's swap of the log that a crash interrupted");
            std::fs::rename(&next, log_dir).map_err(|e| io_error(&next, e))?;
            sync_parent(log_dir)?;
        }
        std::fs::remove_dir_all(&old).map_err(|e| io_error(&old, e))?;
    }
    if next.exists() {
        tracing::warn!(log = %log_dir.display(), "removing an archive's unfinished rewrite of the log");
        std::fs::remove_dir_all(&next).map_err(|e| io_error(&next, e))?;
    }
    Ok(())
}

fn sync_parent(log_dir: &Path) -> Result<(), LogError> {
    let parent = log_dir.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(parent, e))
}

impl SledStore {
    /// Builds the rewrite at [`next_dir`]: the events after `boundary`, their index rows, every
    /// other tree as it is, and `record` as the boundary record; flushed before it returns.
    pub fn rewrite_after(
        &self,
        log_dir: &Path,
        boundary: Seq,
        record: &[u8],
    ) -> Result<(), LogError> {
        let next = next_dir(log_dir);
        if next.exists() {
            std::fs::remove_dir_all(&next).map_err(|e| io_error(&next, e))?;
        }
        let target = SledStore::open(&next)?;
        // The copies read sled's trees alone.
        self.spill()?;
        copy_blocks_after(&self.blocks, boundary, &target.blocks)?;
        copy_runs_after(&self.runs, boundary, &target.runs)?;
        // The packed trees are copied above; `meta` (the layout marker) the new log has
        // written itself.
        let rewritten: [&[u8]; 4] = [BLOCKS_TREE, RUNS_TREE, b"meta", ARCHIVE_TREE];
        for name in self.db.tree_names() {
            if rewritten.contains(&&*name) {
                continue;
            }
            let from = self.db.open_tree(&name).map_err(LogError::storage)?;
            let to = target.db.open_tree(&name).map_err(LogError::storage)?;
            copy(from.iter(), &to)?;
        }
        let archive = target
            .db
            .open_tree(ARCHIVE_TREE)
            .map_err(LogError::storage)?;
        archive
            .insert(BOUNDARY_KEY, record)
            .map_err(LogError::storage)?;
        target.db.flush().map_err(LogError::storage)?;
        Ok(())
    }
}

/// The blocks after `boundary`: the one that holds `boundary + 1` cut to start there.
fn copy_blocks_after(from: &sled::Tree, boundary: Seq, to: &sled::Tree) -> Result<(), LogError> {
    let start = blocks::number_of(boundary.next());
    let mut items = from.range(blocks::key_of(start)..);
    if let Some(item) = items.next() {
        let (k, v) = item.map_err(LogError::storage)?;
        let number = blocks::number_from_key(&k)?;
        let block = blocks::Block::decode(number, &v)?;
        let kept: Vec<(Seq, &[u8])> = block.iter().filter(|(s, _)| *s > boundary).collect();
        if let Some((first, _)) = kept.first() {
            let value = blocks::encode(*first, kept.iter().map(|(_, b)| *b));
            to.insert(k, value).map_err(LogError::storage)?;
        }
    }
    copy(items, to)
}

/// Each uid's seqs after `boundary`: a run that holds some seqs at or before it is cut to
/// start after it (its key then names its new first seq), one that holds only those is left
/// out.
fn copy_runs_after(from: &sled::Tree, boundary: Seq, to: &sled::Tree) -> Result<(), LogError> {
    let mut out = Batched::into(to);
    for item in from.iter() {
        let (k, v) = item.map_err(LogError::storage)?;
        let (uid, first) = uid_runs::split_key(&k)?;
        if first > boundary {
            out.insert(k, v)?;
        } else {
            let kept: Vec<Seq> = uid_runs::decode(first, &v)?
                .into_iter()
                .filter(|s| *s > boundary)
                .collect();
            let Some(&new_first) = kept.first() else {
                continue;
            };
            let mut key = uid.to_vec();
            key.push(0);
            key.extend_from_slice(&new_first.to_key());
            out.insert(key, uid_runs::encode(&kept))?;
        }
    }
    out.finish()
}

fn copy(
    items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    to: &sled::Tree,
) -> Result<(), LogError> {
    let mut out = Batched::into(to);
    for item in items {
        let (k, v) = item.map_err(LogError::storage)?;
        out.insert(k, v)?;
    }
    out.finish()
}

/// Inserts into a tree in sled batches of [`COPY_BATCH`] entries.
struct Batched<'a> {
    to: &'a sled::Tree,
    batch: sled::Batch,
    n: usize,
}

impl<'a> Batched<'a> {
    fn into(to: &'a sled::Tree) -> Self {
        Batched {
            to,
            batch: sled::Batch::default(),
            n: 0,
        }
    }

    fn insert(
        &mut self,
        k: impl Into<sled::IVec>,
        v: impl Into<sled::IVec>,
    ) -> Result<(), LogError> {
        self.batch.insert(k, v);
        self.n += 1;
        if self.n == COPY_BATCH {
            self.to
                .apply_batch(std::mem::take(&mut self.batch))
                .map_err(LogError::storage)?;
            self.n = 0;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), LogError> {
        self.to.apply_batch(self.batch).map_err(LogError::storage)
    }
}

/// Puts the rewrite built by [`SledStore::rewrite_after`] in the log's place (the store must
/// be closed: sled holds its directory). `step` hears each step's name as it is done, for the
/// tests that kill the process between two of them.
pub fn swap_in(log_dir: &Path, mut step: impl FnMut(&'static str)) -> Result<(), LogError> {
    let (next, old) = (next_dir(log_dir), old_dir(log_dir));
    sync_dir(&next)?;
    std::fs::rename(log_dir, &old).map_err(|e| io_error(log_dir, e))?;
    step("log-moved-aside");
    std::fs::rename(&next, log_dir).map_err(|e| io_error(&next, e))?;
    sync_parent(log_dir)?;
    step("rewrite-in-place");
    // The swap is done: a replaced log that cannot be removed now (the closed store's last
    // writes still landing in it) is removed by the next open instead.
    if let Err(e) = std::fs::remove_dir_all(&old) {
        tracing::warn!(error = %e, dir = %old.display(), "the replaced log is removed at the next open");
    }
    Ok(())
}

/// Syncs a directory and every file in it (sled's flush syncs its files; this makes their
/// names durable too).
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        if path.is_dir() {
            sync_dir(&path)?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}
