//! Rewriting a stopped sled log without its archived range, and swapping the rewrite in.
//!
//! sled does not give disk space back when keys are removed, so an archive that only removed
//! them would not shrink the log. Instead the events after the boundary, their index rows and
//! every other tree (the webhook's cursor among them) are copied into a fresh sled directory
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

use super::sled_store::SledStore;
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
        copy(
            self.events.range(boundary.next().to_key()..),
            &target.events,
        )?;
        let after = |key: &[u8]| {
            key.len() >= 8 && Seq::from_key(&key[key.len() - 8..]).is_some_and(|s| s > boundary)
        };
        copy(
            self.by_uid.iter().filter(|item| match item {
                Ok((k, _)) => after(k),
                Err(_) => true,
            }),
            &target.by_uid,
        )?;
        let rewritten: [&[u8]; 3] = [b"events", b"by_uid", ARCHIVE_TREE];
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

fn copy(
    items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    to: &sled::Tree,
) -> Result<(), LogError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in items {
        let (k, v) = item.map_err(LogError::storage)?;
        batch.insert(k, v);
        n += 1;
        if n == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))
                .map_err(LogError::storage)?;
            n = 0;
        }
    }
    to.apply_batch(batch).map_err(LogError::storage)
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
