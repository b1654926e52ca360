//! The hot in-memory projection: token hashes and levels, open sessions, system uids.
//!
//! Owns the state every hot read is answered from (`/user/onlinestatus`, the token check of a
//! connect, `/user/systemuids`). It is moved only by [`Presence::apply`], which runs `evolve`
//! after an event is durable, so a reader never sees what the log might still lose. Promises:
//! no global lock on the read path (users live in a sharded map laid out for a million of them,
//! [`uid_map::UidMap`], and onlinestatus reads a second, sharded one that holds only the online
//! users, [`online::OnlineIndex`]: a reader waits at most for a writer of the same shard, for
//! the length of one `evolve`); the online index and the count of open sessions always equal
//! the users' sessions once `apply` returns. Must never: do I/O, or hold a shard across an
//! `.await`.

pub mod online;
pub mod uid_map;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::domain::{
    evolve, DeviceFlag, Event, OpenSession, State, StateOf, Subject, TokenSlot, Uid, UserState,
};
use online::OnlineIndex;
use uid_map::{MapValue, UidMap};

impl MapValue for UserState {
    fn is_empty(&self) -> bool {
        UserState::is_empty(self)
    }
}

#[derive(Default)]
pub struct Presence {
    users: UidMap<UserState>,
    /// Open sessions in all, kept as they open and close, so that `/stats` and `/metrics` need
    /// not walk a million users.
    sessions: AtomicUsize,
    /// The online users only, with their flags: what onlinestatus reads. Most users are
    /// offline at any moment, so this map is a small fraction of `users`, mostly in cache,
    /// and an offline uid costs one probe of it.
    online: OnlineIndex,
    system_uids: RwLock<BTreeSet<Uid>>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the projection from the SQL view's rows at start-up, each row straight into its
    /// user's state (nothing is gathered on the side: at a million users that would cost as
    /// much memory again).
    pub fn load(
        tokens: impl IntoIterator<Item = (Uid, DeviceFlag, TokenSlot)>,
        sessions: impl IntoIterator<Item = (Uid, OpenSession)>,
        system_uids: impl IntoIterator<Item = Uid>,
    ) -> Self {
        let presence = Presence::default();
        presence.restore(tokens, sessions, system_uids);
        presence
    }

    /// [`Presence::load`] into this projection, which nothing has moved yet (start-up, before
    /// anything is served, when the view was rebuilt before memory).
    pub fn restore(
        &self,
        tokens: impl IntoIterator<Item = (Uid, DeviceFlag, TokenSlot)>,
        sessions: impl IntoIterator<Item = (Uid, OpenSession)>,
        system_uids: impl IntoIterator<Item = Uid>,
    ) {
        for (uid, flag, slot) in tokens {
            self.users.update(&uid, |u| u.restore_token(flag, slot));
        }
        for (uid, session) in sessions {
            self.users.update(&uid, |u| {
                u.restore_session(session);
                self.online.set(&uid, u.online());
            });
        }
        self.sessions
            .store(self.count_sessions(), Ordering::Relaxed);
        *self.system_uids.write() = system_uids.into_iter().collect();
    }

    /// Runs `f` on the state `subject` is decided against.
    pub fn with_state<R>(&self, subject: Subject<'_>, f: impl FnOnce(StateOf<'_>) -> R) -> R {
        match subject {
            Subject::User(uid) => self.with_user(uid.as_str(), |u| f(StateOf::User(u))),
            Subject::SystemUids => f(StateOf::SystemUids(&self.system_uids.read())),
            Subject::Node => f(StateOf::Node),
        }
    }

    /// Runs `f` on the user's state (an empty state for an unknown uid).
    pub fn with_user<R>(&self, uid: &str, f: impl FnOnce(&UserState) -> R) -> R {
        self.users
            .read(uid, |state| f(state.unwrap_or(&UserState::EMPTY)))
    }

    /// Calls `f` for each flag `uid` is online on, ascending.
    pub fn for_each_online_flag(&self, uid: &str, mut f: impl FnMut(DeviceFlag)) {
        self.for_each_online(&[uid], |_, flag| f(flag));
    }

    /// Calls `f(i, flag)` for each flag of each distinct online uid of `uids`, at the uid's
    /// first position `i`: `i` ascending, then flags ascending. The onlinestatus path: the uids
    /// are read from the index in one batch, and a uid listed twice is answered once.
    pub fn for_each_online<S: AsRef<str>>(&self, uids: &[S], mut f: impl FnMut(usize, DeviceFlag)) {
        self.online
            .for_each_online_once(uids, |i, flags| match flags.inline() {
                Some(inline) => inline.for_each(|flag| f(i, flag)),
                // More flags than fit inline: rare, read from the user's sessions.
                None => self.with_user(uids[i].as_ref(), |state| {
                    state.online_flags().for_each(|flag| f(i, flag))
                }),
            });
    }

    /// Applies a committed event: [`evolve`] on this projection.
    pub fn apply(&self, event: &Event) {
        evolve(&mut Writer(self), event)
    }

    pub fn system_uids(&self) -> Vec<Uid> {
        self.system_uids.read().iter().cloned().collect()
    }

    /// Every open session (start-up and shutdown close them all).
    pub fn open_sessions(&self) -> Vec<(Uid, OpenSession)> {
        let mut out = Vec::new();
        self.users.for_each(|uid, state| {
            out.extend(state.sessions().iter().map(|s| (uid.clone(), s.clone())));
        });
        out
    }

    /// Forgets everything: start-up, when the snapshot memory was restored from turns out to
    /// come from a damaged view, builds memory again from the whole log.
    pub fn clear(&self) {
        self.users.clear();
        self.sessions.store(0, Ordering::Relaxed);
        self.online.clear();
        self.system_uids.write().clear();
    }

    /// The whole projection as a plain [`Fold`], to compare with a fold of the log.
    pub fn snapshot(&self) -> crate::domain::Fold {
        crate::domain::Fold {
            users: {
                let mut users = std::collections::BTreeMap::new();
                self.users.for_each(|uid, state| {
                    users.insert(uid.clone(), state.clone());
                });
                users
            },
            system_uids: self.system_uids.read().clone(),
        }
    }

    /// Users the projection holds, without walking them (for `/metrics`).
    pub fn known_users(&self) -> usize {
        self.users.len()
    }

    /// Known users and open sessions, for logs and metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.sessions.load(Ordering::Relaxed))
    }

    /// Open sessions, counted by walking every user.
    fn count_sessions(&self) -> usize {
        let mut sessions = 0;
        self.users
            .for_each(|_, state| sessions += state.sessions().len());
        sessions
    }
}

/// The projection as `evolve` sees it: one user's shard locked for the length of one change,
/// the online index and the count of sessions moved with it, and a user left with nothing
/// dropped (by the map).
struct Writer<'a>(&'a Presence);

impl State for Writer<'_> {
    fn user(&mut self, uid: &Uid, change: impl FnOnce(&mut UserState)) {
        let presence = self.0;
        presence.users.update(uid, |state| {
            let (was, sessions_before) = (state.online(), state.sessions().len());
            change(state);
            let now = state.online();
            if now != was {
                presence.online.set(uid, now);
            }
            let sessions_after = state.sessions().len();
            if sessions_after > sessions_before {
                presence
                    .sessions
                    .fetch_add(sessions_after - sessions_before, Ordering::Relaxed);
            } else {
                presence
                    .sessions
                    .fetch_sub(sessions_before - sessions_after, Ordering::Relaxed);
            }
        });
    }

    fn system_uids(&mut self, change: impl FnOnce(&mut BTreeSet<Uid>)) {
        change(&mut self.0.system_uids.write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Connected, Disconnected};
    use crate::domain::{CloseReason, DeviceId, DeviceLevel, NodeId, SessionId};

    fn flags_of(p: &Presence, uid: &str) -> Vec<u8> {
        let mut out = Vec::new();
        p.for_each_online_flag(uid, |f| out.push(f.0));
        out
    }

    #[test]
    fn the_online_index_follows_every_connect_and_disconnect() {
        let p = Presence::new();
        let uid = Uid::parse("u").unwrap();
        let mut open = Vec::new();
        // Six flags: past the inline capacity, and back.
        for flag in [5u8, 1, 5, 9, 2, 7, 3] {
            let session_id = SessionId::new();
            p.apply(&Event::Connected(Connected {
                session_id,
                uid: uid.clone(),
                device_flag: DeviceFlag(flag),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse(&format!("d{}", open.len())).unwrap(),
                node_id: NodeId(1),
                peer: String::new(),
            }));
            open.push((flag, session_id));
            let expected: Vec<u8> = p.with_user("u", |s| s.online_flags().map(|f| f.0).collect());
            assert_eq!(flags_of(&p, "u"), expected);
        }
        assert_eq!(flags_of(&p, "u"), vec![1, 2, 3, 5, 7, 9]);
        while let Some((flag, session_id)) = open.pop() {
            p.apply(&Event::Disconnected(Disconnected {
                session_id,
                uid: uid.clone(),
                device_flag: DeviceFlag(flag),
                reason: CloseReason::ClientClosed,
            }));
            let expected: Vec<u8> = p.with_user("u", |s| s.online_flags().map(|f| f.0).collect());
            assert_eq!(flags_of(&p, "u"), expected);
        }
        assert!(flags_of(&p, "u").is_empty());
        assert!(p.online.is_empty(), "nobody online: the index is empty");
    }
}
