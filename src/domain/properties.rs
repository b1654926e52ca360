//! Properties of `decide` and `evolve` over any sequence of commands (proptest): the invariants
//! of device levels, of closing and of clearing hold after every step, and a refusal names the
//! reason the state gives. (That memory, the SQL view and onlinestatus agree with the fold of
//! the log is checked over the real stores, in the integration tests' `properties`.)

use std::collections::HashSet;

use proptest::prelude::*;

use super::command::Command;
use super::decide::{decide, AuthFailure, Rejection};
use super::event::Event;
use super::evolve::evolve;
use super::ids::*;
use super::state::{StateOf, TokenSlot, UserState};

#[derive(Debug, Clone)]
enum Step {
    SetToken {
        flag: u8,
        master: bool,
        token: u8,
    },
    Quit {
        scope: Option<u8>,
    },
    Connect {
        flag: u8,
        device: u8,
        token: u8,
    },
    /// Close the n-th open session (modulo their number), or a session that never existed.
    Close {
        nth: usize,
        reason: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0u8..3, any::<bool>(), 0u8..2).prop_map(|(flag, master, token)| Step::SetToken { flag, master, token }),
        1 => proptest::option::of(0u8..3).prop_map(|scope| Step::Quit { scope }),
        3 => (0u8..3, 0u8..3, 0u8..2).prop_map(|(flag, device, token)| Step::Connect { flag, device, token }),
        2 => (0usize..8, 0usize..CloseReason::ALL.len()).prop_map(|(nth, reason)| Step::Close { nth, reason }),
    ]
}

fn uid() -> Uid {
    Uid::parse("u").unwrap()
}

fn hash(token: u8) -> TokenHash {
    Token::parse(&format!("token-{token}")).unwrap().hash()
}

fn command(state: &UserState, step: &Step) -> Command {
    match *step {
        Step::SetToken {
            flag,
            master,
            token,
        } => Command::SetToken {
            uid: uid(),
            device_flag: DeviceFlag(flag),
            device_level: if master {
                DeviceLevel::Master
            } else {
                DeviceLevel::Slave
            },
            token_hash: hash(token),
        },
        Step::Quit { scope } => Command::QuitDevice {
            uid: uid(),
            scope: scope.map_or(QuitScope::All, |f| QuitScope::One(DeviceFlag(f))),
        },
        Step::Connect {
            flag,
            device,
            token,
        } => Command::Connect {
            session_id: SessionId::new(),
            uid: uid(),
            device_flag: DeviceFlag(flag),
            device_id: DeviceId::parse(&format!("device-{device}")).unwrap(),
            presented: hash(token),
            node_id: NodeId(1),
            peer: "127.0.0.1:1".into(),
        },
        Step::Close { nth, reason } => {
            let sessions = state.sessions();
            let session_id = if sessions.is_empty() || nth >= 6 {
                SessionId::new()
            } else {
                sessions[nth % sessions.len()].session_id
            };
            Command::Disconnect {
                uid: uid(),
                session_id,
                reason: CloseReason::ALL[reason],
            }
        }
    }
}

fn check_invariants(state: &UserState) -> Result<(), TestCaseError> {
    for (flag, slot) in state.tokens() {
        let open = state
            .sessions()
            .iter()
            .filter(|s| s.device_flag == flag)
            .count();
        match slot {
            TokenSlot::Active {
                level: DeviceLevel::Master,
                ..
            } => prop_assert!(open <= 1, "master flag {flag} has {open} open sessions"),
            TokenSlot::Cleared => {
                prop_assert_eq!(open, 0, "cleared flag {} still has sessions", flag)
            }
            TokenSlot::Active { .. } => {}
        }
    }
    for s in state.sessions() {
        prop_assert!(
            matches!(state.token(s.device_flag), Some(TokenSlot::Active { .. })),
            "session on flag {} without an active token",
            s.device_flag
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decide_and_evolve_keep_the_invariants(steps in proptest::collection::vec(step(), 1..60)) {
        let mut state = UserState::default();
        let mut opened = HashSet::new();
        let mut closed = HashSet::new();
        for step in &steps {
            let cmd = command(&state, step);
            match decide(StateOf::User(&state), &cmd) {
                Ok(events) => {
                    for e in &events {
                        match e {
                            Event::Connected(c) => prop_assert!(opened.insert(c.session_id)),
                            Event::Disconnected(d) => {
                                prop_assert!(state.session(d.session_id).is_some(), "closing a session that is not open");
                                prop_assert!(closed.insert(d.session_id), "session closed twice");
                            }
                            _ => {}
                        }
                        evolve(&mut state, e);
                    }
                }
                Err(Rejection::Auth(why)) => {
                    let Command::Connect { device_flag, presented, .. } = &cmd else {
                        return Err(TestCaseError::fail(format!("only connects are refused, not {cmd:?}")));
                    };
                    let expected = match state.token(*device_flag) {
                        None => AuthFailure::NoToken,
                        Some(TokenSlot::Cleared) => AuthFailure::Cleared,
                        Some(TokenSlot::Active { hash, .. }) => {
                            prop_assert!(!hash.matches(presented), "a matching token was refused");
                            AuthFailure::Mismatch
                        }
                    };
                    prop_assert_eq!(why, expected);
                }
            }
            // A cleared token admits nobody.
            for (flag, slot) in state.tokens() {
                if slot == TokenSlot::Cleared {
                    for token in 0..2 {
                        let probe = Command::Connect {
                            session_id: SessionId::new(),
                            uid: uid(),
                            device_flag: flag,
                            device_id: DeviceId::parse("probe").unwrap(),
                            presented: hash(token),
                            node_id: NodeId(1),
                            peer: "127.0.0.1:1".into(),
                        };
                        prop_assert_eq!(decide(StateOf::User(&state), &probe), Err(Rejection::Auth(AuthFailure::Cleared)));
                    }
                }
            }
            check_invariants(&state)?;
        }
    }
}
