//! `evolve`: the one function that moves state by one event, whoever holds the state.
//!
//! Owns the meaning of every event for the state that commands are decided against and hot
//! reads are answered from: a user's tokens and open sessions, and the set of system uids. The
//! holders differ (the server's sharded in-memory projection, a plain [`Fold`] in tests and
//! checks, one [`UserState`] when a single user is folded), so each implements [`State`] and
//! `evolve` says what changes. Promises: pure, total and deterministic: the same events in the
//! same order give the same state in every holder. Must never: decide (that is `decide`'s job),
//! fail (an event is a fact), or do I/O.

use std::collections::{BTreeMap, BTreeSet};

use super::event::Event;
use super::ids::Uid;
use super::state::{OpenSession, TokenSlot, UserState};

/// Somewhere state is kept: gives `evolve` the part one event changes.
pub trait State {
    /// Changes the state of `uid` (an unknown uid starts from an empty state).
    fn user(&mut self, uid: &Uid, change: impl FnOnce(&mut UserState));
    /// Changes the set of system uids.
    fn system_uids(&mut self, change: impl FnOnce(&mut BTreeSet<Uid>));
}

/// Applies one event.
pub fn evolve(state: &mut impl State, event: &Event) {
    match event {
        Event::TokenUpdated(e) => state.user(&e.uid, |u| {
            u.set_token(
                e.device_flag,
                TokenSlot::Active {
                    hash: e.token_hash,
                    level: e.device_level,
                },
            )
        }),
        Event::DeviceQuit(e) => state.user(&e.uid, |u| u.clear_tokens(e.device_flag)),
        Event::Connected(e) => state.user(&e.uid, |u| {
            u.open(OpenSession {
                session_id: e.session_id,
                device_flag: e.device_flag,
                device_level: e.device_level,
                device_id: e.device_id.clone(),
                node_id: e.node_id,
            })
        }),
        Event::Disconnected(e) => state.user(&e.uid, |u| u.close(e.session_id)),
        Event::SystemUidsAdded(e) => state.system_uids(|set| set.extend(e.uids.iter().cloned())),
        Event::SystemUidsRemoved(e) => state.system_uids(|set| {
            for uid in &e.uids {
                set.remove(uid);
            }
        }),
        Event::NodeStarted(_) | Event::NodeStopped(_) => {}
    }
}

/// One user's state folded on its own: the caller hands it that user's events only.
impl State for UserState {
    fn user(&mut self, _uid: &Uid, change: impl FnOnce(&mut UserState)) {
        change(self)
    }

    fn system_uids(&mut self, _change: impl FnOnce(&mut BTreeSet<Uid>)) {}
}

/// The whole state as plain ordered maps: the reference fold of a log, for checks and tests.
/// Users left with nothing (no token, no session) are dropped, as the server drops them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    pub users: BTreeMap<Uid, UserState>,
    pub system_uids: BTreeSet<Uid>,
}

impl Fold {
    /// The fold of `events`, in order.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut fold = Fold::default();
        for event in events {
            evolve(&mut fold, event);
        }
        fold
    }
}

impl State for Fold {
    fn user(&mut self, uid: &Uid, change: impl FnOnce(&mut UserState)) {
        let state = self.users.entry(uid.clone()).or_default();
        change(state);
        if state.is_empty() {
            self.users.remove(uid);
        }
    }

    fn system_uids(&mut self, change: impl FnOnce(&mut BTreeSet<Uid>)) {
        change(&mut self.system_uids)
    }
}
