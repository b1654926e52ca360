//! The state of one user, as far as deciding needs it.
//!
//! Owns [`UserState`]: the token slot (hash and level, or cleared) of each device flag and the
//! open sessions, with the distinct online flags kept beside them for the onlinestatus path.
//! Promises: its changes are small, total steps that only `evolve` calls, so the state is
//! always a fold of events. Must never: decide anything (that is `decide`'s job) or fail.

use std::collections::BTreeSet;

use super::ids::*;

/// What a device flag of a user holds for authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSlot {
    Active {
        hash: TokenHash,
        level: DeviceLevel,
    },
    /// Cleared by a device quit: the flag was known, and its token no longer admits anyone.
    Cleared,
}

/// An authenticated connection that has not ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub session_id: SessionId,
    pub device_flag: DeviceFlag,
    pub device_level: DeviceLevel,
    pub device_id: DeviceId,
    /// The node that holds the session's socket.
    pub node_id: NodeId,
}

/// The part of the state a command is decided against (see `Command::subject`).
#[derive(Debug, Clone, Copy)]
pub enum StateOf<'a> {
    User(&'a UserState),
    SystemUids(&'a BTreeSet<Uid>),
    Node,
}

impl<'a> StateOf<'a> {
    /// The user's state; an empty one when the command is not about a user.
    pub fn user(self) -> &'a UserState {
        static EMPTY: UserState = UserState::EMPTY;
        match self {
            StateOf::User(u) => u,
            _ => &EMPTY,
        }
    }

    /// The system uids; an empty set when the command is not about them.
    pub fn system_uids(self) -> &'a BTreeSet<Uid> {
        static EMPTY: BTreeSet<Uid> = BTreeSet::new();
        match self {
            StateOf::SystemUids(s) => s,
            _ => &EMPTY,
        }
    }
}

/// Everything known about one uid that commands are decided against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    /// Sorted by flag; a user has a handful at most, so a vector beats a map.
    tokens: Vec<(DeviceFlag, TokenSlot)>,
    sessions: Vec<OpenSession>,
    /// The distinct flags of `sessions`, kept beside them so that the onlinestatus path reads
    /// them without following the sessions' heap pointer.
    online: OnlineFlags,
}

/// Up to [`OnlineFlags::INLINE`] distinct online flags, ascending, stored inline; more (rare:
/// a user on five device types at once) are read from the sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnlineFlags {
    len: u8,
    flags: [u8; OnlineFlags::INLINE],
}

impl OnlineFlags {
    const INLINE: usize = 4;
    const MANY: u8 = u8::MAX;

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The flags, ascending; `None` when there are more than fit inline (ask the sessions).
    pub fn inline(&self) -> Option<impl Iterator<Item = DeviceFlag> + '_> {
        (self.len != Self::MANY).then(|| {
            self.flags[..self.len as usize]
                .iter()
                .map(|f| DeviceFlag(*f))
        })
    }

    fn of(sessions: &[OpenSession]) -> Self {
        Self::from_flags(sessions.iter().map(|s| s.device_flag))
    }

    /// The set of `flags` (in any order, repeats allowed).
    pub fn from_flags(flags: impl IntoIterator<Item = DeviceFlag>) -> Self {
        let mut out = OnlineFlags::default();
        for flag in flags {
            let f = flag.0;
            let held = &out.flags[..out.len as usize];
            if let Err(at) = held.binary_search(&f) {
                if out.len as usize == Self::INLINE {
                    return OnlineFlags {
                        len: Self::MANY,
                        flags: out.flags,
                    };
                }
                out.flags.copy_within(at..out.len as usize, at + 1);
                out.flags[at] = f;
                out.len += 1;
            }
        }
        out
    }
}

impl UserState {
    /// A user nothing is known of.
    pub const EMPTY: UserState = UserState {
        tokens: Vec::new(),
        sessions: Vec::new(),
        online: OnlineFlags {
            len: 0,
            flags: [0; OnlineFlags::INLINE],
        },
    };

    pub fn token(&self, flag: DeviceFlag) -> Option<TokenSlot> {
        self.tokens
            .binary_search_by_key(&flag, |(f, _)| *f)
            .ok()
            .map(|i| self.tokens[i].1)
    }

    pub fn tokens(&self) -> impl Iterator<Item = (DeviceFlag, TokenSlot)> + '_ {
        self.tokens.iter().copied()
    }

    pub fn sessions(&self) -> &[OpenSession] {
        &self.sessions
    }

    pub fn session(&self, id: SessionId) -> Option<&OpenSession> {
        self.sessions.iter().find(|s| s.session_id == id)
    }

    /// The distinct online flags as kept inline.
    pub fn online(&self) -> OnlineFlags {
        self.online
    }

    /// The flags this user is online on, ascending, each once, without allocating.
    pub fn online_flags(&self) -> impl Iterator<Item = DeviceFlag> + '_ {
        let inline = (self.online.len != OnlineFlags::MANY).then_some(self.online.len as usize);
        let mut at = 0;
        let mut last: Option<DeviceFlag> = None;
        std::iter::from_fn(move || match inline {
            Some(len) => {
                let next = (at < len).then(|| DeviceFlag(self.online.flags[at]));
                at += 1;
                next
            }
            // Many flags: a repeated minimum search over the sessions.
            None => {
                let next = self
                    .sessions
                    .iter()
                    .map(|s| s.device_flag)
                    .filter(|f| last.is_none_or(|l| *f > l))
                    .min()?;
                last = Some(next);
                Some(next)
            }
        })
    }

    pub fn is_online(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// True when nothing is left worth keeping in memory for this user.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.sessions.is_empty()
    }

    pub(super) fn set_token(&mut self, flag: DeviceFlag, slot: TokenSlot) {
        match self.tokens.binary_search_by_key(&flag, |(f, _)| *f) {
            Ok(i) => self.tokens[i].1 = slot,
            Err(i) => self.tokens.insert(i, (flag, slot)),
        }
    }

    /// Clears the active tokens of the flags `scope` covers.
    pub(super) fn clear_tokens(&mut self, scope: QuitScope) {
        for (flag, slot) in &mut self.tokens {
            if scope.covers(*flag) {
                *slot = TokenSlot::Cleared;
            }
        }
    }

    /// Opens a session (once: a session already open is left as it is).
    pub(super) fn open(&mut self, session: OpenSession) {
        if self.session(session.session_id).is_none() {
            self.sessions.push(session);
            self.online = OnlineFlags::of(&self.sessions);
        }
    }

    pub(super) fn close(&mut self, session_id: SessionId) {
        self.sessions.retain(|s| s.session_id != session_id);
        self.online = OnlineFlags::of(&self.sessions);
    }

    /// Rebuilds a state from rows of the SQL view (start-up): tokens then open sessions.
    pub fn from_parts(
        tokens: impl IntoIterator<Item = (DeviceFlag, TokenSlot)>,
        sessions: impl IntoIterator<Item = OpenSession>,
    ) -> Self {
        let mut state = UserState::default();
        for (flag, slot) in tokens {
            state.set_token(flag, slot);
        }
        state.sessions.extend(sessions);
        state.online = OnlineFlags::of(&state.sessions);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Connected, Disconnected, Event};
    use crate::domain::evolve::evolve;

    fn connect(state: &mut UserState, flag: u8) -> SessionId {
        let session_id = SessionId::new();
        evolve(
            state,
            &Event::Connected(Connected {
                session_id,
                uid: Uid::parse("u").unwrap(),
                device_flag: DeviceFlag(flag),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse(&format!("d{flag}")).unwrap(),
                node_id: NodeId(1),
                peer: String::new(),
            }),
        );
        session_id
    }

    #[test]
    fn online_flags_are_ascending_and_distinct_inline_or_not() {
        let mut state = UserState::default();
        let mut ids = Vec::new();
        for flag in [9, 3, 3, 200, 0, 7, 1] {
            ids.push((flag, connect(&mut state, flag)));
            let mut expected: Vec<u8> = ids.iter().map(|(f, _)| *f).collect();
            expected.sort();
            expected.dedup();
            let got: Vec<u8> = state.online_flags().map(|f| f.0).collect();
            assert_eq!(got, expected);
        }
        for (flag, id) in ids {
            evolve(
                &mut state,
                &Event::Disconnected(Disconnected {
                    session_id: id,
                    uid: Uid::parse("u").unwrap(),
                    device_flag: DeviceFlag(flag),
                    reason: CloseReason::ClientClosed,
                }),
            );
        }
        assert_eq!(state.online_flags().count(), 0);
    }
}
