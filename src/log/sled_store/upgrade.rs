//! Converting a log of the layout before the packed one (tree `events`: a key per event,
//! `seq -> bytes`; tree `by_uid`: a key per index row, `uid ++ 0x00 ++ seq -> empty`) when it
//! is opened.
//!
//! Owns the layout marker: tree `meta`, key `layout`, one byte, [`PACKED`]. A log that has it
//! is packed. A log without it is converted: the packed trees are cleared (what an interrupted
//! conversion left there), the old trees copied into them in sled batches, a progress line in
//! the server's log each tenth of the events, then the marker written and sled flushed, and
//! only then the old trees dropped (and sled flushed again). Promises: a crash at any point
//! leaves either the old trees whole and no marker (the next open starts again) or the marker
//! and the packed trees whole (the next open drops what is left of the old ones). Runs before
//! the write-ahead file is replayed: a file an older build left is put into the packed trees.
//! Must never: drop an old tree before the marker is durable, or open a log whose marker names
//! a layout it does not know.

use std::time::Instant;

use super::blocks::{self, OpenBlock};
use super::uid_runs;
use crate::domain::Seq;
use crate::log::LogError;

const META_TREE: &[u8] = b"meta";
const LAYOUT_KEY: &[u8] = b"layout";
/// The layout marker's value: events in blocks, seqs in runs.
pub const PACKED: u8 = 2;

/// The layout before: a key per event, a key per index row.
pub const OLD_EVENTS_TREE: &[u8] = b"events";
pub const OLD_INDEX_TREE: &[u8] = b"by_uid";

/// Blocks or runs per sled batch while converting.
const COPY_BATCH: usize = 1024;

/// Makes the log in `db` packed: a new log gets the marker, an old one is converted, an
/// interrupted conversion is started again.
pub(super) fn to_packed(
    db: &sled::Db,
    blocks_tree: &sled::Tree,
    runs: &sled::Tree,
) -> Result<(), LogError> {
    let meta = db.open_tree(META_TREE).map_err(LogError::storage)?;
    let names = db.tree_names();
    let old: Vec<&[u8]> = [OLD_EVENTS_TREE, OLD_INDEX_TREE]
        .into_iter()
        .filter(|name| names.iter().any(|n| &n[..] == *name))
        .collect();
    match meta.get(LAYOUT_KEY).map_err(LogError::storage)? {
        Some(v) if v[..] == [PACKED] => return drop_old(db, &old),
        Some(v) => {
            return Err(LogError::storage(format_args!(
                "the log's layout is {v:?}, which this build does not know: a newer build wrote it"
            )))
        }
        None => {}
    }
    if !old.is_empty() {
        blocks_tree.clear().map_err(LogError::storage)?;
        runs.clear().map_err(LogError::storage)?;
        let events = db.open_tree(OLD_EVENTS_TREE).map_err(LogError::storage)?;
        let index = db.open_tree(OLD_INDEX_TREE).map_err(LogError::storage)?;
        copy_events(&events, blocks_tree)?;
        copy_index(&index, runs)?;
    }
    meta.insert(LAYOUT_KEY, &[PACKED])
        .map_err(LogError::storage)?;
    db.flush().map_err(LogError::storage)?;
    drop_old(db, &old)
}

fn drop_old(db: &sled::Db, old: &[&[u8]]) -> Result<(), LogError> {
    if old.is_empty() {
        return Ok(());
    }
    for name in old {
        db.drop_tree(name).map_err(LogError::storage)?;
    }
    db.flush().map_err(LogError::storage)?;
    tracing::info!("the log's layout of a key per event is gone");
    Ok(())
}

/// The events of the old tree into blocks.
fn copy_events(events: &sled::Tree, blocks_tree: &sled::Tree) -> Result<(), LogError> {
    let seq_of = |k: &[u8]| Seq::from_key(k).ok_or_else(|| LogError::storage("malformed seq key"));
    let (Some((first, _)), Some((last, _))) = (
        events.first().map_err(LogError::storage)?,
        events.last().map_err(LogError::storage)?,
    ) else {
        return Ok(());
    };
    let (first, last) = (seq_of(&first)?, seq_of(&last)?);
    let total = last.0 - first.0 + 1;
    tracing::info!(
        events = total,
        "converting the log to its packed layout (16 events to a key)"
    );
    let started = Instant::now();
    let mut tenth = 1u64;
    let mut block: Option<OpenBlock> = None;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut copied = 0u64;
    for item in events.iter() {
        let (k, v) = item.map_err(LogError::storage)?;
        let seq = seq_of(&k)?;
        let number = blocks::number_of(seq);
        if block.as_ref().is_none_or(|b| b.number() != number) {
            if let Some(done) = block.take() {
                batch.insert(&blocks::key_of(done.number()), done.value());
                in_batch += 1;
                if in_batch == COPY_BATCH {
                    blocks_tree
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(LogError::storage)?;
                    in_batch = 0;
                }
            }
            block = Some(OpenBlock::new(number));
        }
        block.as_mut().expect("set above").push(seq, &v)?;
        copied += 1;
        if copied * 10 >= total * tenth && tenth <= 10 {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(
                copied,
                of = total,
                events_per_sec = (copied as f64 / secs) as u64,
                "converting the log: {}0% of its events",
                tenth
            );
            while copied * 10 >= total * tenth {
                tenth += 1;
            }
        }
    }
    if let Some(done) = block {
        batch.insert(&blocks::key_of(done.number()), done.value());
    }
    blocks_tree.apply_batch(batch).map_err(LogError::storage)
}

/// The old index rows into runs: the rows of a uid are contiguous and in seq order.
fn copy_index(index: &sled::Tree, runs: &sled::Tree) -> Result<(), LogError> {
    let started = Instant::now();
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    let mut rows = 0u64;
    let mut uid: Vec<u8> = Vec::new();
    let mut run: Vec<Seq> = Vec::with_capacity(uid_runs::SEQS_PER_RUN);
    let mut put =
        |uid: &[u8], run: &mut Vec<Seq>, batch: &mut sled::Batch| -> Result<(), LogError> {
            if run.is_empty() {
                return Ok(());
            }
            let mut key = uid.to_vec();
            key.push(0);
            key.extend_from_slice(&run[0].to_key());
            batch.insert(key, uid_runs::encode(run));
            run.clear();
            in_batch += 1;
            if in_batch == COPY_BATCH {
                runs.apply_batch(std::mem::take(batch))
                    .map_err(LogError::storage)?;
                in_batch = 0;
            }
            Ok(())
        };
    for item in index.iter() {
        let (k, _) = item.map_err(LogError::storage)?;
        let (row_uid, seq) = uid_runs::split_key(&k)?;
        if row_uid != uid.as_slice() || run.len() == uid_runs::SEQS_PER_RUN {
            put(&uid, &mut run, &mut batch)?;
            uid.clear();
            uid.extend_from_slice(row_uid);
        }
        if run.last().is_none_or(|last| *last < seq) {
            run.push(seq);
        }
        rows += 1;
    }
    put(&uid, &mut run, &mut batch)?;
    runs.apply_batch(batch).map_err(LogError::storage)?;
    tracing::info!(
        rows,
        secs = started.elapsed().as_secs_f64(),
        "converted the log's uid index to runs"
    );
    Ok(())
}
