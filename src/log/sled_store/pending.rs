//! What the sled log holds back from sled while it still changes: the block being filled and
//! each uid's last run touched since the write-ahead file last rolled over. sled appends every
//! insert as a page delta of its own (about 120 B on disk) and keeps bookkeeping per segment it
//! writes, so a block written again with each batch of 2 or 3 events, and a run with each of
//! its seqs, cost about 60 B on disk per event and 20 B of memory per event for good
//! (docs/performance.md, "A packed log: one key per 16 events"). Held back, each key reaches
//! sled about once: a block when it is full, a run when it is full or at the roll.
//!
//! Owns the held-back state and the append path over it. Promises: the write-ahead file holds
//! every batch held back here until [`Pending::spill`] has put it into sled, and the store calls
//! that before the file rolls over (whose checkpoint flushes sled before it removes the older
//! files), before it takes a batch back, before an archive reads sled, and at close; every block
//! before the one being filled is in sled whole and never written again; a uid's runs in sled
//! before its held-back run's first seq are final. The memory it holds is bounded by the
//! distinct uids of one write-ahead file (about 4 MiB of batches): the runs are dropped at each
//! roll. Must never: let a reader see a run naming an event it cannot find (readers bound what
//! they read of sled by a snapshot of this state: [`super::SledStore`]'s readers), or drop a
//! held-back change without it reaching sled.

use std::collections::HashMap;

use super::blocks::{self, OpenBlock};
use super::{uid_runs, Appended};
use crate::domain::Seq;
use crate::log::LogError;

/// A uid's last run as held back.
struct HeldRun {
    /// Ascending, 1 to [`uid_runs::SEQS_PER_RUN`] seqs; the first is in its key.
    seqs: Vec<Seq>,
    /// Whether sled holds it as it is (read from sled, not appended to since).
    stored: bool,
}

#[derive(Default)]
pub(super) struct Pending {
    /// The last block (`None` while the log is empty).
    open: Option<OpenBlock>,
    /// Whether sled's copy of `open` is behind it.
    open_changed: bool,
    runs: HashMap<String, HeldRun>,
}

/// What a reader needs of the held-back state, copied under the store's lock: the block being
/// filled, and the uid's held-back run.
pub(super) struct Snapshot {
    pub open: Option<OpenBlock>,
    pub run: Option<Vec<Seq>>,
}

impl Snapshot {
    /// The log's last seq when the snapshot was taken.
    pub fn last_seq(&self) -> Result<Seq, LogError> {
        match &self.open {
            Some(b) if !b.is_empty() => blocks::last_seq(b.number(), b.value()),
            _ => Ok(Seq(0)),
        }
    }
}

impl Pending {
    /// The state of a log whose last block, as sled holds it, is `open`.
    pub fn stored(open: Option<OpenBlock>) -> Self {
        Pending {
            open,
            ..Pending::default()
        }
    }

    pub fn snapshot(&self, uid: Option<&str>) -> Snapshot {
        Snapshot {
            open: self.open.clone(),
            run: uid.and_then(|u| self.runs.get(u)).map(|r| r.seqs.clone()),
        }
    }

    /// The last seq, if the log holds any event.
    pub fn last_seq(&self) -> Option<Result<Seq, LogError>> {
        self.open
            .as_ref()
            .filter(|b| !b.is_empty())
            .map(|b| blocks::last_seq(b.number(), b.value()))
    }

    /// A batch in: its events into the block being filled (into sled when full, or when the
    /// next block starts), then its seqs into each uid's held-back run (a full run into sled
    /// when the next one starts). Events first, so a run never names an event not held.
    pub fn append<R: Appended>(
        &mut self,
        blocks_tree: &sled::Tree,
        runs_tree: &sled::Tree,
        batch: &[R],
    ) -> Result<(), LogError> {
        for r in batch {
            let number = blocks::number_of(r.seq());
            if self.open.as_ref().is_none_or(|b| b.number() != number) {
                self.store_open(blocks_tree)?;
                self.open = Some(super::block_at(blocks_tree, number)?);
            }
            let open = self.open.as_mut().expect("set above");
            open.push(r.seq(), r.bytes())?;
            self.open_changed = true;
            if open.is_full() {
                self.store_open(blocks_tree)?;
            }
        }
        let (groups, seqs) = super::by_uid(batch);
        for (uid, range) in groups {
            self.append_run(runs_tree, uid, &seqs[range])?;
        }
        Ok(())
    }

    /// `seqs` (ascending, each once) onto `uid`'s held-back run, read from sled on the uid's
    /// first touch since the last roll.
    fn append_run(
        &mut self,
        runs_tree: &sled::Tree,
        uid: &str,
        seqs: &[Seq],
    ) -> Result<(), LogError> {
        let Some(&from) = seqs.first() else {
            return Ok(());
        };
        if let Some(held) = self.runs.get(uid) {
            if held.seqs[0] >= from {
                // Only seqs appended again below what is held (never after a take-back, which
                // spills first) get here: sled's copy of that run goes too.
                runs_tree
                    .remove(uid_runs::key(uid, held.seqs[0]))
                    .map_err(LogError::storage)?;
                self.runs.remove(uid);
            }
        }
        let held = match self.runs.get_mut(uid) {
            Some(held) => held,
            None => {
                let seqs = uid_runs::last_before(runs_tree, uid, from)?;
                self.runs
                    .entry(uid.to_owned())
                    .or_insert(HeldRun { seqs, stored: true })
            }
        };
        if held.seqs.last().is_some_and(|s| *s >= from) {
            held.seqs.retain(|s| *s < from);
            held.stored = false;
        }
        let mut rest = seqs;
        while !rest.is_empty() {
            if held.seqs.len() == uid_runs::SEQS_PER_RUN {
                if !held.stored {
                    runs_tree
                        .insert(
                            uid_runs::key(uid, held.seqs[0]),
                            uid_runs::encode(&held.seqs),
                        )
                        .map_err(LogError::storage)?;
                }
                held.seqs.clear();
            }
            let room = uid_runs::SEQS_PER_RUN - held.seqs.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            held.seqs.extend_from_slice(now);
            held.stored = false;
            rest = later;
        }
        Ok(())
    }

    /// The block being filled into sled, if sled's copy is behind it.
    fn store_open(&mut self, blocks_tree: &sled::Tree) -> Result<(), LogError> {
        if let (true, Some(open)) = (self.open_changed, self.open.as_ref()) {
            if !open.is_empty() {
                blocks_tree
                    .insert(blocks::key_of(open.number()), open.value())
                    .map_err(LogError::storage)?;
            }
        }
        self.open_changed = false;
        Ok(())
    }

    /// Everything held back into sled (the block being filled, each changed run); the runs are
    /// dropped from memory.
    pub fn spill(
        &mut self,
        blocks_tree: &sled::Tree,
        runs_tree: &sled::Tree,
    ) -> Result<(), LogError> {
        self.store_open(blocks_tree)?;
        for (uid, held) in self.runs.iter_mut() {
            if !held.stored && !held.seqs.is_empty() {
                runs_tree
                    .insert(
                        uid_runs::key(uid, held.seqs[0]),
                        uid_runs::encode(&held.seqs),
                    )
                    .map_err(LogError::storage)?;
                held.stored = true;
            }
        }
        self.runs.clear();
        Ok(())
    }
}
