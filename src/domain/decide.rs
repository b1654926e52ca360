//! `decide`: a command, judged against the state of its subject, becomes events.
//!
//! Owns the rules of device levels and kicks (`protocol.md` 3.5), of authentication (which
//! sessions a token update, a device quit or a connect closes, and with which reason) and of
//! system uids (only real changes are recorded, so adding and removing are idempotent). Promises
//! purity: the same state and command always give the same events, so the write path can decide
//! under a per-uid lock and the tests can state rules as given-events / when-command /
//! then-events. Must never: touch a clock, a socket or the log; every id it needs (the new
//! session's) comes in with the command.

use std::collections::BTreeSet;

use super::command::Command;
use super::event::*;
use super::ids::*;
use super::state::{StateOf, TokenSlot, UserState};

/// Why a connect is refused. Told to the server log, never to the client (it sees "auth fail").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no token registered for this device flag")]
    NoToken,
    #[error("token cleared by a device quit")]
    Cleared,
    #[error("token mismatch")]
    Mismatch,
}

/// A command that the state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("auth fail: {0}")]
    Auth(#[from] AuthFailure),
}

/// Decides what a command means, against the state of its subject (see `Command::subject`).
/// An empty vector: nothing changes.
pub fn decide(state: StateOf<'_>, command: &Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::AddSystemUids { uids } => Ok(change_system_uids(state.system_uids(), true, uids)),
        Command::RemoveSystemUids { uids } => {
            Ok(change_system_uids(state.system_uids(), false, uids))
        }
        Command::StartNode(start) => Ok(vec![Event::NodeStarted(start.clone())]),
        Command::StopNode(stop) => Ok(vec![Event::NodeStopped(stop.clone())]),
        user_command => decide_for_user(state.user(), user_command),
    }
}

fn decide_for_user(state: &UserState, command: &Command) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::SetToken {
            uid,
            device_flag,
            device_level,
            token_hash,
        } => {
            let mut events = vec![Event::TokenUpdated(TokenUpdated {
                uid: uid.clone(),
                device_flag: *device_flag,
                device_level: *device_level,
                token_hash: *token_hash,
            })];
            if *device_level == DeviceLevel::Master {
                close_sessions(state, uid, CloseReason::TokenUpdated, &mut events, |s| {
                    s.device_flag == *device_flag
                });
            }
            Ok(events)
        }
        Command::QuitDevice { uid, scope } => {
            let has_token = state
                .tokens()
                .any(|(f, slot)| scope.covers(f) && matches!(slot, TokenSlot::Active { .. }));
            let mut events = Vec::new();
            if has_token {
                events.push(Event::DeviceQuit(DeviceQuit {
                    uid: uid.clone(),
                    device_flag: *scope,
                }));
            }
            close_sessions(state, uid, CloseReason::DeviceQuit, &mut events, |s| {
                scope.covers(s.device_flag)
            });
            Ok(events)
        }
        Command::Connect {
            session_id,
            uid,
            device_flag,
            device_id,
            presented,
            node_id,
            peer,
        } => {
            let level = match state.token(*device_flag) {
                None => return Err(AuthFailure::NoToken.into()),
                Some(TokenSlot::Cleared) => return Err(AuthFailure::Cleared.into()),
                Some(TokenSlot::Active { hash, level }) => {
                    if !hash.matches(presented) {
                        return Err(AuthFailure::Mismatch.into());
                    }
                    level
                }
            };
            let mut events = Vec::new();
            for s in state.sessions() {
                if s.device_flag != *device_flag {
                    continue;
                }
                let same_device = s.device_id == *device_id;
                let reason = match (level, same_device) {
                    (_, true) => CloseReason::Replaced,
                    (DeviceLevel::Master, false) => CloseReason::MasterLogin,
                    (DeviceLevel::Slave, false) => continue,
                };
                events.push(disconnected(uid, s.session_id, s.device_flag, reason));
            }
            events.push(Event::Connected(Connected {
                session_id: *session_id,
                uid: uid.clone(),
                device_flag: *device_flag,
                device_level: level,
                device_id: device_id.clone(),
                node_id: *node_id,
                peer: peer.clone(),
            }));
            Ok(events)
        }
        Command::Disconnect {
            uid,
            session_id,
            reason,
        } => Ok(state
            .session(*session_id)
            .map(|s| vec![disconnected(uid, s.session_id, s.device_flag, *reason)])
            .unwrap_or_default()),
        Command::AddSystemUids { .. }
        | Command::RemoveSystemUids { .. }
        | Command::StartNode(_)
        | Command::StopNode(_) => Ok(Vec::new()),
    }
}

fn disconnected(
    uid: &Uid,
    session_id: SessionId,
    device_flag: DeviceFlag,
    reason: CloseReason,
) -> Event {
    Event::Disconnected(Disconnected {
        session_id,
        uid: uid.clone(),
        device_flag,
        reason,
    })
}

fn close_sessions(
    state: &UserState,
    uid: &Uid,
    reason: CloseReason,
    events: &mut Vec<Event>,
    which: impl Fn(&super::state::OpenSession) -> bool,
) {
    events.extend(
        state
            .sessions()
            .iter()
            .filter(|s| which(s))
            .map(|s| disconnected(uid, s.session_id, s.device_flag, reason)),
    );
}

/// An add (`adding`) or a remove of system uids against the current set: only real changes
/// become events.
fn change_system_uids(current: &BTreeSet<Uid>, adding: bool, uids: &[Uid]) -> Vec<Event> {
    let mut changed: Vec<Uid> = uids
        .iter()
        .filter(|u| current.contains(*u) != adding)
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        return Vec::new();
    }
    let payload = SystemUids { uids: changed };
    vec![if adding {
        Event::SystemUidsAdded(payload)
    } else {
        Event::SystemUidsRemoved(payload)
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evolve::{evolve, Fold};

    fn uid() -> Uid {
        Uid::parse("u1").unwrap()
    }
    fn hash(t: &str) -> TokenHash {
        Token::parse(t).unwrap().hash()
    }
    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    /// Folds `given` events into a fresh state, decides `when`, returns the events.
    fn given_when(given: &[Event], when: Command) -> Result<Vec<Event>, Rejection> {
        let mut state = UserState::default();
        for e in given {
            evolve(&mut state, e);
        }
        decide(StateOf::User(&state), &when)
    }

    fn token(flag: u8, level: DeviceLevel, t: &str) -> Event {
        Event::TokenUpdated(TokenUpdated {
            uid: uid(),
            device_flag: DeviceFlag(flag),
            device_level: level,
            token_hash: hash(t),
        })
    }

    fn connect_cmd(session: SessionId, flag: u8, device: &str, t: &str) -> Command {
        Command::Connect {
            session_id: session,
            uid: uid(),
            device_flag: DeviceFlag(flag),
            device_id: dev(device),
            presented: hash(t),
            node_id: NodeId(1),
            peer: "127.0.0.1:1".into(),
        }
    }

    fn connected(session: SessionId, flag: u8, level: DeviceLevel, device: &str) -> Event {
        Event::Connected(Connected {
            session_id: session,
            uid: uid(),
            device_flag: DeviceFlag(flag),
            device_level: level,
            device_id: dev(device),
            node_id: NodeId(1),
            peer: "127.0.0.1:1".into(),
        })
    }

    fn closed(session: SessionId, flag: u8, reason: CloseReason) -> Event {
        disconnected(&uid(), session, DeviceFlag(flag), reason)
    }

    #[test]
    fn connect_needs_a_registered_matching_uncleared_token() {
        let s = SessionId::new();
        assert_eq!(
            given_when(&[], connect_cmd(s, 1, "d", "t")),
            Err(Rejection::Auth(AuthFailure::NoToken))
        );
        let given = [token(1, DeviceLevel::Slave, "t")];
        assert_eq!(
            given_when(&given, connect_cmd(s, 1, "d", "x")),
            Err(Rejection::Auth(AuthFailure::Mismatch))
        );
        assert_eq!(
            given_when(&given, connect_cmd(s, 2, "d", "t")),
            Err(Rejection::Auth(AuthFailure::NoToken))
        );
        assert_eq!(
            given_when(&given, connect_cmd(s, 1, "d", "t")),
            Ok(vec![connected(s, 1, DeviceLevel::Slave, "d")])
        );
        let quit = Event::DeviceQuit(DeviceQuit {
            uid: uid(),
            device_flag: QuitScope::All,
        });
        assert_eq!(
            given_when(&[given[0].clone(), quit], connect_cmd(s, 1, "d", "t")),
            Err(Rejection::Auth(AuthFailure::Cleared))
        );
    }

    #[test]
    fn master_connect_replaces_every_other_connection_of_its_flag() {
        let (a, b, c, new) = (
            SessionId::new(),
            SessionId::new(),
            SessionId::new(),
            SessionId::new(),
        );
        let given = [
            token(1, DeviceLevel::Slave, "t"),
            connected(a, 1, DeviceLevel::Slave, "phone"),
            connected(b, 1, DeviceLevel::Slave, "tablet"),
            token(2, DeviceLevel::Slave, "t"),
            connected(c, 2, DeviceLevel::Slave, "phone"),
            token(1, DeviceLevel::Master, "t"),
        ];
        assert_eq!(
            given_when(&given, connect_cmd(new, 1, "phone", "t")),
            Ok(vec![
                closed(a, 1, CloseReason::Replaced),
                closed(b, 1, CloseReason::MasterLogin),
                connected(new, 1, DeviceLevel::Master, "phone"),
            ])
        );
    }

    #[test]
    fn slave_connect_replaces_only_its_own_device() {
        let (a, b, new) = (SessionId::new(), SessionId::new(), SessionId::new());
        let given = [
            token(1, DeviceLevel::Slave, "t"),
            connected(a, 1, DeviceLevel::Slave, "phone"),
            connected(b, 1, DeviceLevel::Slave, "tablet"),
        ];
        assert_eq!(
            given_when(&given, connect_cmd(new, 1, "tablet", "t")),
            Ok(vec![
                closed(b, 1, CloseReason::Replaced),
                connected(new, 1, DeviceLevel::Slave, "tablet"),
            ])
        );
    }

    #[test]
    fn master_token_update_kicks_its_flag_and_slave_update_kicks_nobody() {
        let (a, b) = (SessionId::new(), SessionId::new());
        let given = [
            token(1, DeviceLevel::Slave, "t"),
            token(2, DeviceLevel::Slave, "t"),
            connected(a, 1, DeviceLevel::Slave, "phone"),
            connected(b, 2, DeviceLevel::Slave, "phone"),
        ];
        let set = |level| Command::SetToken {
            uid: uid(),
            device_flag: DeviceFlag(1),
            device_level: level,
            token_hash: hash("t"),
        };
        assert_eq!(
            given_when(&given, set(DeviceLevel::Master)),
            Ok(vec![
                token(1, DeviceLevel::Master, "t"),
                closed(a, 1, CloseReason::TokenUpdated)
            ])
        );
        assert_eq!(
            given_when(&given, set(DeviceLevel::Slave)),
            Ok(vec![token(1, DeviceLevel::Slave, "t")])
        );
    }

    #[test]
    fn device_quit_clears_and_kicks_its_scope_and_is_idempotent() {
        let (a, b) = (SessionId::new(), SessionId::new());
        let given = [
            token(1, DeviceLevel::Slave, "t"),
            token(2, DeviceLevel::Slave, "t"),
            connected(a, 1, DeviceLevel::Slave, "phone"),
            connected(b, 2, DeviceLevel::Slave, "phone"),
        ];
        let quit = |scope| Command::QuitDevice { uid: uid(), scope };
        let one = QuitScope::One(DeviceFlag(2));
        assert_eq!(
            given_when(&given, quit(one)),
            Ok(vec![
                Event::DeviceQuit(DeviceQuit {
                    uid: uid(),
                    device_flag: one
                }),
                closed(b, 2, CloseReason::DeviceQuit),
            ])
        );
        assert_eq!(
            given_when(&given, quit(QuitScope::All)),
            Ok(vec![
                Event::DeviceQuit(DeviceQuit {
                    uid: uid(),
                    device_flag: QuitScope::All
                }),
                closed(a, 1, CloseReason::DeviceQuit),
                closed(b, 2, CloseReason::DeviceQuit),
            ])
        );
        assert_eq!(given_when(&[], quit(QuitScope::All)), Ok(vec![]));
        let mut after = given.to_vec();
        after.extend(given_when(&given, quit(QuitScope::All)).unwrap());
        assert_eq!(given_when(&after, quit(QuitScope::All)), Ok(vec![]));
    }

    #[test]
    fn a_session_closes_at_most_once() {
        let a = SessionId::new();
        let given = [
            token(1, DeviceLevel::Slave, "t"),
            connected(a, 1, DeviceLevel::Slave, "d"),
        ];
        let bye = Command::Disconnect {
            uid: uid(),
            session_id: a,
            reason: CloseReason::ClientClosed,
        };
        let first = given_when(&given, bye.clone()).unwrap();
        assert_eq!(first, vec![closed(a, 1, CloseReason::ClientClosed)]);
        let mut after = given.to_vec();
        after.extend(first);
        assert_eq!(given_when(&after, bye), Ok(vec![]));
    }

    #[test]
    fn system_uids_add_and_remove_only_what_changes() {
        let u = |s: &str| Uid::parse(s).unwrap();
        let add = |uids: &[&str]| Command::AddSystemUids {
            uids: uids.iter().map(|s| u(s)).collect(),
        };
        let remove = |uids: &[&str]| Command::RemoveSystemUids {
            uids: uids.iter().map(|s| u(s)).collect(),
        };
        let on =
            |fold: &Fold, c: &Command| decide(StateOf::SystemUids(&fold.system_uids), c).unwrap();
        let mut fold = Fold::default();
        let added = on(&fold, &add(&["b", "a", "b"]));
        assert_eq!(
            added,
            vec![Event::SystemUidsAdded(SystemUids {
                uids: vec![u("a"), u("b")]
            })]
        );
        evolve(&mut fold, &added[0]);
        assert!(on(&fold, &add(&["a"])).is_empty());
        assert!(on(&fold, &remove(&["c"])).is_empty());
        let removed = on(&fold, &remove(&["a", "c"]));
        evolve(&mut fold, &removed[0]);
        assert_eq!(
            fold.system_uids.into_iter().collect::<Vec<_>>(),
            vec![u("b")]
        );
    }
}
