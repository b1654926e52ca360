//! A batch of events folded into the row changes that the SQL view makes of it.
//!
//! Owns what each event means for the view's tables, for every engine: the one path by which
//! events reach the view. Every event of a batch is folded here ([`RowChanges::add`]), and an
//! engine writes the result with a few multi-row statements in the order [`RowChanges`]
//! documents. Promises: writing the changes of a batch gives the same rows as applying its
//! events one at a time (a property test checks it against batches of one). Must never: read
//! or write a database (it is pure), or depend on how the batch was cut.

use std::collections::{BTreeMap, HashMap};

use crate::domain::event::{Connected, NodeStart};
use crate::domain::*;

/// A user's first appearance.
pub struct NewUser<'a> {
    pub uid: &'a Uid,
    pub seq: Seq,
    pub at: i64,
}

/// A token row as the batch leaves it: written over whatever the table held.
pub struct TokenRow<'a> {
    pub uid: &'a Uid,
    pub flag: DeviceFlag,
    pub level: DeviceLevel,
    /// `None`: cleared by a device quit.
    pub hash: Option<TokenHash>,
    pub seq: Seq,
    pub at: i64,
}

/// A device quit, for the token rows written before this batch.
pub struct TokenClear<'a> {
    pub uid: &'a Uid,
    pub scope: QuitScope,
    pub seq: Seq,
    pub at: i64,
}

/// How a session ended.
#[derive(Clone, Copy)]
pub struct SessionEnd {
    pub seq: Seq,
    pub at: i64,
    pub reason: CloseReason,
}

/// A session opened in this batch, already closed when it also ends in it.
pub struct NewSession<'a> {
    pub connected: &'a Connected,
    pub seq: Seq,
    pub at: i64,
    pub ended: Option<SessionEnd>,
}

/// What the batch does to one system uid: deleted first (`removed`), then inserted with the
/// seq of its first add after that (`added`), an insert that keeps a row already there.
#[derive(Default)]
pub struct SystemUidChange {
    pub removed: bool,
    pub added: Option<Seq>,
}

/// A node lifetime started in this batch, already stopped when it also stops in it after that.
pub struct NewLifetime<'a> {
    pub start: &'a NodeStart,
    pub seq: Seq,
    pub at: i64,
    pub stopped: Option<(Seq, i64)>,
}

/// The row changes of one batch, to be written in this order: new users; token clears (they
/// touch only rows of earlier batches, since the batch's own token rows are written after
/// them, already cleared where a quit followed); token rows; new sessions; ends of sessions
/// of earlier batches; last seen (each kept where the table's row has a later seq); system uids; stops of lifetimes, the last one per lifetime winning
/// (they touch only rows of earlier batches, since the new lifetimes are written after them,
/// already stopped where a stop followed their start); new lifetimes.
#[derive(Default)]
pub struct RowChanges<'a> {
    pub users: Vec<NewUser<'a>>,
    pub token_clears: Vec<TokenClear<'a>>,
    pub tokens: Vec<TokenRow<'a>>,
    pub sessions: Vec<NewSession<'a>>,
    pub session_ends: Vec<(SessionId, SessionEnd)>,
    /// The latest end of a session of each (uid, flag) in the batch: `last_seen`'s rows.
    pub last_seen: BTreeMap<(&'a Uid, DeviceFlag), (Seq, i64)>,
    pub system_uids: BTreeMap<&'a Uid, SystemUidChange>,
    pub lifetimes: Vec<NewLifetime<'a>>,
    pub lifetime_stops: Vec<(uuid::Uuid, Seq, i64)>,
    /// The last seq folded in: the checkpoint the changes bring the view to.
    pub last: Option<Seq>,
    seen_users: std::collections::HashSet<&'a Uid>,
    token_at: HashMap<(&'a Uid, DeviceFlag), usize>,
    session_at: HashMap<SessionId, usize>,
    ended_before: std::collections::HashSet<SessionId>,
    lifetime_at: HashMap<uuid::Uuid, usize>,
}

impl<'a> RowChanges<'a> {
    /// The changes of the events of `batch` after `done` (those up to it are already in the
    /// view).
    pub fn of(batch: &'a [RecordedEvent], done: Seq) -> Self {
        let mut changes = RowChanges::default();
        for r in batch.iter().filter(|r| r.seq > done) {
            changes.add(r);
        }
        changes
    }

    /// Folds in the next event.
    pub fn add(&mut self, r: &'a RecordedEvent) {
        let (seq, at) = (r.seq, r.recorded_at);
        self.last = Some(seq);
        match &r.event {
            Event::TokenUpdated(e) => {
                if self.seen_users.insert(&e.uid) {
                    self.users.push(NewUser {
                        uid: &e.uid,
                        seq,
                        at,
                    });
                }
                let row = TokenRow {
                    uid: &e.uid,
                    flag: e.device_flag,
                    level: e.device_level,
                    hash: Some(e.token_hash),
                    seq,
                    at,
                };
                match self.token_at.get(&(&e.uid, e.device_flag)) {
                    Some(&i) => self.tokens[i] = row,
                    None => {
                        self.token_at
                            .insert((&e.uid, e.device_flag), self.tokens.len());
                        self.tokens.push(row);
                    }
                }
            }
            Event::DeviceQuit(e) => {
                for t in &mut self.tokens {
                    if t.uid == &e.uid && e.device_flag.covers(t.flag) && t.hash.is_some() {
                        t.hash = None;
                        t.seq = seq;
                        t.at = at;
                    }
                }
                self.token_clears.push(TokenClear {
                    uid: &e.uid,
                    scope: e.device_flag,
                    seq,
                    at,
                });
            }
            Event::Connected(e) => {
                if self.session_at.contains_key(&e.session_id) {
                    return;
                }
                self.session_at.insert(e.session_id, self.sessions.len());
                self.sessions.push(NewSession {
                    connected: e,
                    seq,
                    at,
                    ended: None,
                });
            }
            Event::Disconnected(e) => {
                // Events come in seq order: the last end of a uid and flag is its latest.
                self.last_seen.insert((&e.uid, e.device_flag), (seq, at));
                let end = SessionEnd {
                    seq,
                    at,
                    reason: e.reason,
                };
                match self.session_at.get(&e.session_id) {
                    Some(&i) => {
                        let s = &mut self.sessions[i];
                        s.ended.get_or_insert(end);
                    }
                    None => {
                        if self.ended_before.insert(e.session_id) {
                            self.session_ends.push((e.session_id, end));
                        }
                    }
                }
            }
            Event::SystemUidsAdded(e) => {
                for uid in &e.uids {
                    let change = self.system_uids.entry(uid).or_default();
                    change.added.get_or_insert(seq);
                }
            }
            Event::SystemUidsRemoved(e) => {
                for uid in &e.uids {
                    let change = self.system_uids.entry(uid).or_default();
                    change.removed = true;
                    change.added = None;
                }
            }
            Event::NodeStarted(e) => {
                if self.lifetime_at.contains_key(&e.boot_id) {
                    return;
                }
                self.lifetime_at.insert(e.boot_id, self.lifetimes.len());
                self.lifetimes.push(NewLifetime {
                    start: e,
                    seq,
                    at,
                    stopped: None,
                });
            }
            Event::NodeStopped(e) => {
                // Every stop goes to the rows of earlier batches too: when the lifetime started
                // in an earlier batch, its start here inserts nothing and only the update
                // stops it; when it did not, the update finds no row, as a stop before its
                // start would, one at a time.
                self.lifetime_stops.push((e.boot_id, seq, at));
                if let Some(&i) = self.lifetime_at.get(&e.boot_id) {
                    self.lifetimes[i].stopped = Some((seq, at));
                }
            }
        }
    }
}
