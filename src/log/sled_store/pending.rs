//! What the sled log holds back from sled while it still changes: the block being filled and
//! each uid's last run touched since the write-ahead file last rolled over. sled appends every
//! insert as a page delta of its own (about 120 B on disk) and keeps bookkeeping per segment it
//! writes, so a block written again with each batch of 2 or 3 events, and a run with each of
//! its seqs, cost about 60 B on disk per event and 20 B of memory per event for good
//! (docs/performance.md, "A packed log: one key per 16 events"). Held back, each key reaches
//! sled about once: a block when it is full, a run when it is full or at the roll.
//!
//! Owns the held-back state and the append path over it. At a roll the runs are handed over
//! whole ([`Pending::hand_over`]): the checkpoint thread puts them into sled before its flush,
//! off the writer's thread (on it, thousands of inserts held every append for tens of ms:
//! docs/performance.md, "The runs put into sled off the writer's thread"), and until the next
//! roll readers and appends find them here as if still held back. Each handed-over run carries
//! a claim ([`Claim`]): an append that must put a newer copy of the run's key into sled claims
//! it first, and the checkpoint thread skips a claimed run, so the writer waits for one insert at
//! most, never for the whole hand-over (docs/performance.md, "The late close spikes"). Promises: the write-ahead file
//! holds every batch held back here until it is in sled: [`Pending::spill`] (before a take-back,
//! before an archive reads sled, at close) and a roll's hand-over put it there, and a roll waits
//! for the previous hand-over to be stored (or stores it itself) before the next checkpoint's
//! flush; every block before the one being filled is in sled whole and never written again; a
//! uid's runs in sled before its held-back run's first seq are final. The memory it holds is
//! bounded by the distinct uids of two write-ahead files (about 4 MiB of batches each). Must
//! never: let a reader see a run naming an event it cannot find (readers bound what they read of
//! sled by a snapshot of this state: [`super::SledStore`]'s readers), drop a held-back change
//! without it reaching sled, or let a handed-over run reach sled after a newer copy of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

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
    /// Once handed over: who puts it into sled.
    claim: Claim,
}

impl HeldRun {
    fn new(seqs: Vec<Seq>, stored: bool) -> Self {
        HeldRun {
            seqs,
            stored,
            claim: Claim::new(),
        }
    }
}

#[derive(Default)]
pub(super) struct Pending {
    /// The last block (`None` while the log is empty).
    open: Option<OpenBlock>,
    /// Whether sled's copy of `open` is behind it.
    open_changed: bool,
    runs: HashMap<String, HeldRun>,
    /// The runs of the last roll, until the next one.
    handed_over: Option<HandedOver>,
}

/// The runs held back at a roll, which the checkpoint thread puts into sled; a uid's run is
/// read from here, not sled, until the uid is touched again.
struct HandedOver {
    runs: Arc<HashMap<String, HeldRun>>,
    stored: Arc<Outcome>,
}

/// Who puts a handed-over run into sled: the checkpoint thread (or, if it fails, the writer's
/// next settle), unless the writer claimed the run first because it puts a newer copy of the
/// same key there.
struct Claim(AtomicU8);

impl Claim {
    const UNCLAIMED: u8 = 0;
    const STORING: u8 = 1;
    const STORED: u8 = 2;
    /// The writer holds a newer copy: this one must never reach sled.
    const SUPERSEDED: u8 = 3;

    fn new() -> Self {
        Claim(AtomicU8::new(Self::UNCLAIMED))
    }

    /// For the thread storing the hand-over: whether this run is still its to store.
    fn take_for_storing(&self) -> bool {
        self.0
            .compare_exchange(
                Self::UNCLAIMED,
                Self::STORING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// Whether a hand-over's runs reached sled: not yet known, then yes or no.
#[derive(Default)]
struct Outcome {
    state: Mutex<Option<bool>>,
    known: Condvar,
    /// Woken each time a run's insert ends, for a writer waiting on that one run.
    run_settled: Condvar,
}

impl Outcome {
    fn set(&self, stored: bool) {
        *self.state.lock() = Some(stored);
        self.known.notify_all();
    }

    /// A run's insert ended: stored, or (it failed) back to be stored by someone else.
    fn settle_run(&self, claim: &Claim, stored: bool) {
        let to = if stored {
            Claim::STORED
        } else {
            Claim::UNCLAIMED
        };
        let _state = self.state.lock();
        claim.0.store(to, Ordering::Release);
        self.run_settled.notify_all();
    }

    /// For the writer, before it puts a newer copy of a handed-over run into sled: the
    /// checkpoint thread will not store this one after it. Waits only while the thread is
    /// inserting this very run.
    fn supersede(&self, claim: &Claim) {
        loop {
            match claim.0.compare_exchange(
                Claim::UNCLAIMED,
                Claim::SUPERSEDED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) | Err(Claim::STORED) | Err(Claim::SUPERSEDED) => return,
                Err(_storing) => {
                    let mut state = self.state.lock();
                    while claim.0.load(Ordering::Acquire) == Claim::STORING {
                        self.run_settled.wait(&mut state);
                    }
                }
            }
        }
    }

    fn wait(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if let Some(stored) = *state {
                return stored;
            }
            self.known.wait(&mut state);
        }
    }
}

/// The work a roll hands to the checkpoint thread: the runs into sled, before its flush. Dropped
/// without being run (the thread gone, the roll failed), it counts as not stored, and the next
/// roll or spill stores the runs itself.
pub(super) struct RunsToStore {
    runs: Arc<HashMap<String, HeldRun>>,
    stored: Arc<Outcome>,
    runs_tree: sled::Tree,
    /// The hand-over before, freed here rather than on the writer's thread.
    retired: Option<HandedOver>,
    done: bool,
}

impl RunsToStore {
    pub fn run(mut self) -> Result<(), LogError> {
        let result = store_handed(&self.runs_tree, &self.runs, &self.stored, None);
        self.stored.set(result.is_ok());
        self.done = true;
        drop(self.retired.take());
        result
    }
}

impl Drop for RunsToStore {
    fn drop(&mut self) {
        if !self.done {
            self.stored.set(false);
        }
    }
}

/// Every changed run held back into sled.
fn store_runs(runs_tree: &sled::Tree, runs: &HashMap<String, HeldRun>) -> Result<(), LogError> {
    for (uid, held) in runs {
        store_run(runs_tree, uid, held)?;
    }
    Ok(())
}

fn store_run(runs_tree: &sled::Tree, uid: &str, held: &HeldRun) -> Result<(), LogError> {
    if !held.stored && !held.seqs.is_empty() {
        runs_tree
            .insert(
                uid_runs::key(uid, held.seqs[0]),
                uid_runs::encode(&held.seqs),
            )
            .map_err(LogError::storage)?;
    }
    Ok(())
}

/// Every changed run of a hand-over into sled, but those the writer claimed and those of the
/// uids in `newer` (held back since: sled has, or will have, a newer copy of the same key).
fn store_handed(
    runs_tree: &sled::Tree,
    runs: &HashMap<String, HeldRun>,
    outcome: &Outcome,
    newer: Option<&HashMap<String, HeldRun>>,
) -> Result<(), LogError> {
    for (uid, held) in runs {
        if newer.is_some_and(|n| n.contains_key(uid)) || !held.claim.take_for_storing() {
            continue;
        }
        let result = store_run(runs_tree, uid, held);
        outcome.settle_run(&held.claim, result.is_ok());
        result?;
    }
    Ok(())
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
            run: uid
                .and_then(|u| self.held_run(u))
                .map(|r| r.seqs.clone())
                .filter(|seqs| !seqs.is_empty()),
        }
    }

    /// The uid's run as held back since the last roll, or as handed over at it.
    fn held_run(&self, uid: &str) -> Option<&HeldRun> {
        self.runs
            .get(uid)
            .or_else(|| self.handed_over.as_ref().and_then(|h| h.runs.get(uid)))
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
        let held_from = self.runs.get(uid).map(|held| held.seqs[0]);
        if let Some(first) = held_from.filter(|first| *first >= from) {
            // Only seqs appended again below what is held (never after a take-back, which
            // spills first) get here: sled's copy of that run goes too, once a hand-over that
            // may hold it is in sled.
            self.settle(runs_tree)?;
            runs_tree
                .remove(uid_runs::key(uid, first))
                .map_err(LogError::storage)?;
            self.runs.remove(uid);
        }
        if !self.runs.contains_key(uid) {
            // The run handed over at the last roll, when it ends before `from`: not stored as
            // far as this run knows (a full one goes to sled below, the same bytes the
            // checkpoint writes, so that sled has it before a newer run follows it).
            let handed = self
                .handed_over
                .as_ref()
                .and_then(|h| h.runs.get(uid))
                .filter(|h| !h.seqs.is_empty())
                .map(|h| h.seqs.clone());
            let held = match handed {
                Some(seqs) if seqs[0] < from => HeldRun::new(seqs, false),
                other => {
                    if other.is_some() {
                        // Seqs appended again at or below the handed-over run's first (never
                        // after a take-back, which spills first): sled must hold it, as a run
                        // held back would be, before it is read and changed there.
                        self.settle(runs_tree)?;
                    }
                    HeldRun::new(uid_runs::last_before(runs_tree, uid, from)?, true)
                }
            };
            self.runs.insert(uid.to_owned(), held);
        }
        // A run of the hand-over reaches sled on the checkpoint thread: a newer copy of it goes
        // there only once it is claimed, so that the older never overwrites it.
        let handed_over = self
            .handed_over
            .as_ref()
            .and_then(|h| Some((h.runs.get(uid)?, &*h.stored)));
        let held = self.runs.get_mut(uid).expect("inserted above");
        if held.seqs.last().is_some_and(|s| *s >= from) {
            held.seqs.retain(|s| *s < from);
            held.stored = false;
        }
        let mut rest = seqs;
        while !rest.is_empty() {
            if held.seqs.len() == uid_runs::SEQS_PER_RUN {
                if !held.stored {
                    if let Some((handed, outcome)) = handed_over {
                        outcome.supersede(&handed.claim);
                    }
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

    /// Everything held back into sled (the block being filled, each changed run, the last
    /// hand-over once it is stored); the runs are dropped from memory.
    pub fn spill(
        &mut self,
        blocks_tree: &sled::Tree,
        runs_tree: &sled::Tree,
    ) -> Result<(), LogError> {
        self.settle(runs_tree)?;
        self.store_open(blocks_tree)?;
        store_runs(runs_tree, &self.runs)?;
        self.runs.clear();
        Ok(())
    }

    /// At a roll: the block being filled into sled, and the runs held back handed over, for the
    /// checkpoint thread to put into sled with [`RunsToStore::run`] before its flush. The
    /// hand-over before is stored first (by the time a roll is due its checkpoint has run; if
    /// it failed, here).
    pub fn hand_over(
        &mut self,
        blocks_tree: &sled::Tree,
        runs_tree: &sled::Tree,
    ) -> Result<RunsToStore, LogError> {
        self.store_open(blocks_tree)?;
        let retired = self.settled(runs_tree)?;
        let runs = Arc::new(std::mem::take(&mut self.runs));
        let stored = Arc::new(Outcome::default());
        self.handed_over = Some(HandedOver {
            runs: runs.clone(),
            stored: stored.clone(),
        });
        Ok(RunsToStore {
            runs,
            stored,
            runs_tree: runs_tree.clone(),
            retired,
            done: false,
        })
    }

    /// Waits until the last hand-over is in sled, storing it here if the checkpoint did not,
    /// and lets it go.
    fn settle(&mut self, runs_tree: &sled::Tree) -> Result<(), LogError> {
        self.settled(runs_tree).map(drop)
    }

    fn settled(&mut self, runs_tree: &sled::Tree) -> Result<Option<HandedOver>, LogError> {
        if let Some(h) = &self.handed_over {
            if !h.stored.wait() {
                store_handed(runs_tree, &h.runs, &h.stored, Some(&self.runs))?;
            }
        }
        Ok(self.handed_over.take())
    }
}
