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
///
/// Laid out for the common user, who has a token on one flag and no session open: that token
/// is held inline, and everything else (tokens of other flags, open sessions) behind one
/// pointer that is `None` for that user. 48 bytes in all, with no allocation of its own (see
/// "Memory at a million users" in docs/performance.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    /// The token slot of the lowest flag that has one; `None` only when no flag has.
    first: Option<(DeviceFlag, TokenSlot)>,
    /// `None` when it would be empty (every change keeps it so, so that equal states compare
    /// equal).
    more: Option<Box<MoreState>>,
}

/// What few users have: tokens on several flags, open sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MoreState {
    /// The flags above `first`'s, ascending; a user has a handful at most, so a vector beats a
    /// map.
    tokens: Vec<(DeviceFlag, TokenSlot)>,
    sessions: Vec<OpenSession>,
    /// The distinct flags of `sessions`, kept beside them so that the onlinestatus path reads
    /// them without following the sessions' heap pointer.
    online: OnlineFlags,
}

impl MoreState {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.sessions.is_empty()
    }

    fn set_token(&mut self, flag: DeviceFlag, slot: TokenSlot) {
        match self.tokens.binary_search_by_key(&flag, |(f, _)| *f) {
            Ok(i) => self.tokens[i].1 = slot,
            Err(i) => {
                // Room for exactly what is held: a vector's first push makes room for four.
                self.tokens.reserve_exact(1);
                self.tokens.insert(i, (flag, slot));
            }
        }
    }
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
        first: None,
        more: None,
    };

    pub fn token(&self, flag: DeviceFlag) -> Option<TokenSlot> {
        match self.first {
            Some((f, slot)) if f == flag => Some(slot),
            Some((f, _)) if f < flag => {
                let tokens = &self.more.as_deref()?.tokens;
                tokens
                    .binary_search_by_key(&flag, |(f, _)| *f)
                    .ok()
                    .map(|i| tokens[i].1)
            }
            _ => None,
        }
    }

    /// The token slot of each flag that has one, flags ascending.
    pub fn tokens(&self) -> impl Iterator<Item = (DeviceFlag, TokenSlot)> + '_ {
        let more = self.more.as_deref().map_or(&[][..], |m| &m.tokens[..]);
        self.first.into_iter().chain(more.iter().copied())
    }

    pub fn sessions(&self) -> &[OpenSession] {
        self.more.as_deref().map_or(&[], |m| &m.sessions)
    }

    pub fn session(&self, id: SessionId) -> Option<&OpenSession> {
        self.sessions().iter().find(|s| s.session_id == id)
    }

    /// The distinct online flags as kept inline.
    pub fn online(&self) -> OnlineFlags {
        self.more
            .as_deref()
            .map_or_else(OnlineFlags::default, |m| m.online)
    }

    /// The flags this user is online on, ascending, each once, without allocating.
    pub fn online_flags(&self) -> impl Iterator<Item = DeviceFlag> + '_ {
        let online = self.online();
        let sessions = self.sessions();
        let inline = (online.len != OnlineFlags::MANY).then_some(online.len as usize);
        let mut at = 0;
        let mut last: Option<DeviceFlag> = None;
        std::iter::from_fn(move || match inline {
            Some(len) => {
                let next = (at < len).then(|| DeviceFlag(online.flags[at]));
                at += 1;
                next
            }
            // Many flags: a repeated minimum search over the sessions.
            None => {
                let next = sessions
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
        !self.sessions().is_empty()
    }

    /// True when nothing is left worth keeping in memory for this user.
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_none()
    }

    fn more_mut(&mut self) -> &mut MoreState {
        self.more.get_or_insert_with(Default::default)
    }

    /// Drops `more` once it holds nothing.
    fn shrink(&mut self) {
        if self.more.as_deref().is_some_and(MoreState::is_empty) {
            self.more = None;
        }
    }

    pub(super) fn set_token(&mut self, flag: DeviceFlag, slot: TokenSlot) {
        match self.first {
            None => self.first = Some((flag, slot)),
            Some((f, _)) if f == flag => self.first = Some((flag, slot)),
            // A lower flag takes the inline place; the one there moves to the others.
            Some((f, held)) if flag < f => {
                self.first = Some((flag, slot));
                self.more_mut().set_token(f, held);
            }
            Some(_) => self.more_mut().set_token(flag, slot),
        }
    }

    /// Clears the active tokens of the flags `scope` covers.
    pub(super) fn clear_tokens(&mut self, scope: QuitScope) {
        let more = self.more.as_deref_mut().map(|m| &mut m.tokens);
        for (flag, slot) in self.first.iter_mut().chain(more.into_iter().flatten()) {
            if scope.covers(*flag) {
                *slot = TokenSlot::Cleared;
            }
        }
    }

    /// Opens a session (once: a session already open is left as it is).
    pub(super) fn open(&mut self, session: OpenSession) {
        if self.session(session.session_id).is_none() {
            let more = self.more_mut();
            more.sessions.reserve_exact(1);
            more.sessions.push(session);
            more.online = OnlineFlags::of(&more.sessions);
        }
    }

    pub(super) fn close(&mut self, session_id: SessionId) {
        if let Some(more) = self.more.as_deref_mut() {
            more.sessions.retain(|s| s.session_id != session_id);
            more.online = OnlineFlags::of(&more.sessions);
        }
        self.shrink();
    }

    /// Restores a token slot from a row of the SQL view (start-up).
    pub fn restore_token(&mut self, flag: DeviceFlag, slot: TokenSlot) {
        self.set_token(flag, slot)
    }

    /// Restores an open session from a row of the SQL view (start-up), after the tokens.
    pub fn restore_session(&mut self, session: OpenSession) {
        self.open(session)
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

    /// The common user (a token on one flag, nobody online) fits in 48 bytes with no
    /// allocation: what a million known users cost rests on it.
    #[test]
    fn a_user_with_one_token_is_48_bytes_and_allocates_nothing() {
        assert_eq!(std::mem::size_of::<UserState>(), 48);
        let mut state = UserState::default();
        state.set_token(DeviceFlag(3), TokenSlot::Cleared);
        assert!(state.more.is_none());
    }

    /// Tokens come back ascending by flag, whichever order they were set in and whichever one
    /// is held inline; a session's end leaves the state equal to one that never had it.
    #[test]
    fn tokens_are_ascending_and_a_closed_session_leaves_no_trace() {
        let slot = |n: u8| TokenSlot::Active {
            hash: TokenHash([n; 32]),
            level: DeviceLevel::Slave,
        };
        let mut state = UserState::default();
        for flag in [5u8, 9, 2, 7, 0] {
            state.set_token(DeviceFlag(flag), slot(flag));
        }
        let flags: Vec<u8> = state.tokens().map(|(f, _)| f.0).collect();
        assert_eq!(flags, [0, 2, 5, 7, 9]);
        for flag in [0u8, 2, 5, 7, 9] {
            assert_eq!(state.token(DeviceFlag(flag)), Some(slot(flag)));
        }
        for absent in [1u8, 4, 10, 255] {
            assert_eq!(state.token(DeviceFlag(absent)), None);
        }
        state.clear_tokens(QuitScope::One(DeviceFlag(7)));
        state.clear_tokens(QuitScope::One(DeviceFlag(0)));
        assert_eq!(state.token(DeviceFlag(7)), Some(TokenSlot::Cleared));
        assert_eq!(state.token(DeviceFlag(0)), Some(TokenSlot::Cleared));
        assert_eq!(state.token(DeviceFlag(9)), Some(slot(9)));

        let mut one = UserState::default();
        one.set_token(DeviceFlag(1), slot(1));
        let before = one.clone();
        let id = connect(&mut one, 1);
        assert!(one.is_online() && one.more.is_some());
        one.close(id);
        assert_eq!(one, before);
        assert!(one.more.is_none());
        state.clear_tokens(QuitScope::All);
        assert!(state.tokens().all(|(_, s)| s == TokenSlot::Cleared));
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
