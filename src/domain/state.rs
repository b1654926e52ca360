//! The state of one user, as far as deciding needs it, and `evolve`, which moves it by one event.
//!
//! Owns [`UserState`]: the token slot (hash and level, or cleared) of each device flag and the
//! open sessions. Promises that `evolve` is pure, total and deterministic: the same events in the
//! same order always give the same state, whatever process folds them. Must never: decide
//! anything (that is `decide`'s job) or fail (an event is a fact; it is applied as it is).

use super::event::Event;
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
}

/// Everything known about one uid that commands are decided against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    /// Sorted by flag; a user has a handful at most, so a vector beats a map.
    tokens: Vec<(DeviceFlag, TokenSlot)>,
    sessions: Vec<OpenSession>,
}

impl UserState {
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

    /// The flags this user is online on, ascending, each once, without allocating (a user has
    /// a handful of sessions at most, so a repeated minimum search beats sorting a copy).
    pub fn online_flags(&self) -> impl Iterator<Item = DeviceFlag> + '_ {
        let mut last: Option<DeviceFlag> = None;
        std::iter::from_fn(move || {
            let next = self
                .sessions
                .iter()
                .map(|s| s.device_flag)
                .filter(|f| last.is_none_or(|l| *f > l))
                .min()?;
            last = Some(next);
            Some(next)
        })
    }

    pub fn is_online(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// True when nothing is left worth keeping in memory for this user.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.sessions.is_empty()
    }

    fn set_token(&mut self, flag: DeviceFlag, slot: TokenSlot) {
        match self.tokens.binary_search_by_key(&flag, |(f, _)| *f) {
            Ok(i) => self.tokens[i].1 = slot,
            Err(i) => self.tokens.insert(i, (flag, slot)),
        }
    }

    /// Applies one event about this user. Events about other users or none are ignored.
    pub fn evolve(&mut self, event: &Event) {
        match event {
            Event::TokenUpdated(e) => self.set_token(
                e.device_flag,
                TokenSlot::Active {
                    hash: e.token_hash,
                    level: e.device_level,
                },
            ),
            Event::DeviceQuit(e) => {
                for (flag, slot) in &mut self.tokens {
                    if e.device_flag.covers(*flag) {
                        *slot = TokenSlot::Cleared;
                    }
                }
            }
            Event::Connected(e) => {
                if self.session(e.session_id).is_none() {
                    self.sessions.push(OpenSession {
                        session_id: e.session_id,
                        device_flag: e.device_flag,
                        device_level: e.device_level,
                        device_id: e.device_id.clone(),
                    });
                }
            }
            Event::Disconnected(e) => self.sessions.retain(|s| s.session_id != e.session_id),
            Event::SystemUidsAdded(_)
            | Event::SystemUidsRemoved(_)
            | Event::NodeStarted(_)
            | Event::NodeStopped(_) => {}
        }
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
        state
    }
}
