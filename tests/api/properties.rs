//! Properties over generated command sequences (proptest), checked against the real stores:
//! memory restored the start-up way equals the fold of the log; the SQL view equals a replay of
//! the log however the log is cut into batches; onlinestatus answers what a naive model of
//! the fold says. The view's properties run on each engine (`sqlite::`, `postgres::`), and a
//! SQLite view and a PostgreSQL view of one log answer alike (`engines_agree`).
//!
//! A sequence is made the way the server makes one: each command is decided against the state
//! so far, and its events are folded in and given the next seqs. The reference is
//! [`Fold`], the plain fold of the log by the one `evolve`.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use wkuser::apply::Subscribers;
use wkuser::domain::event::{NodeLifetime, NodeStart};
use wkuser::domain::*;
use wkuser::http::onlinestatus;
use wkuser::presence::Presence;
use wkuser::view::ViewState;

use crate::helpers::{Engine, TestView, ViewFactory};

const UIDS: [&str; 4] = ["ann", "bob", "cy", "dee"];

#[derive(Debug, Clone)]
enum Step {
    SetToken {
        uid: usize,
        flag: u8,
        master: bool,
        token: u8,
    },
    Quit {
        uid: usize,
        scope: Option<u8>,
    },
    Connect {
        uid: usize,
        flag: u8,
        device: u8,
        token: u8,
    },
    /// Close the n-th open session of the uid, if it has any.
    Close {
        uid: usize,
        nth: usize,
        reason: usize,
    },
    SystemUids {
        add: bool,
        uids: Vec<usize>,
    },
    /// A lifetime of one of a few boot ids starts or stops (again, perhaps: both are
    /// idempotent in the view).
    NodeLifetime {
        start: bool,
        boot: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let uid = 0..UIDS.len();
    prop_oneof![
        3 => (uid.clone(), 0u8..3, any::<bool>(), 0u8..2)
            .prop_map(|(uid, flag, master, token)| Step::SetToken { uid, flag, master, token }),
        1 => (uid.clone(), proptest::option::of(0u8..3)).prop_map(|(uid, scope)| Step::Quit { uid, scope }),
        4 => (uid.clone(), 0u8..3, 0u8..3, 0u8..2)
            .prop_map(|(uid, flag, device, token)| Step::Connect { uid, flag, device, token }),
        3 => (uid.clone(), 0usize..4, 0..CloseReason::ALL.len())
            .prop_map(|(uid, nth, reason)| Step::Close { uid, nth, reason }),
        1 => (any::<bool>(), proptest::collection::vec(uid, 1..3))
            .prop_map(|(add, uids)| Step::SystemUids { add, uids }),
        1 => (any::<bool>(), 0u8..3).prop_map(|(start, boot)| Step::NodeLifetime { start, boot }),
    ]
}

fn uid(i: usize) -> Uid {
    Uid::parse(UIDS[i]).unwrap()
}

fn hash(token: u8) -> TokenHash {
    Token::parse(&format!("token-{token}")).unwrap().hash()
}

fn command(fold: &Fold, step: &Step) -> Option<Command> {
    Some(match step {
        Step::SetToken {
            uid: u,
            flag,
            master,
            token,
        } => Command::SetToken {
            uid: uid(*u),
            device_flag: DeviceFlag(*flag),
            device_level: if *master {
                DeviceLevel::Master
            } else {
                DeviceLevel::Slave
            },
            token_hash: hash(*token),
        },
        Step::Quit { uid: u, scope } => Command::QuitDevice {
            uid: uid(*u),
            scope: scope.map_or(QuitScope::All, |f| QuitScope::One(DeviceFlag(f))),
        },
        Step::Connect {
            uid: u,
            flag,
            device,
            token,
        } => Command::Connect {
            session_id: SessionId::new(),
            uid: uid(*u),
            device_flag: DeviceFlag(*flag),
            device_id: DeviceId::parse(&format!("device-{device}")).unwrap(),
            presented: hash(*token),
            node_id: NodeId(1),
            peer: "127.0.0.1:1".into(),
        },
        Step::Close {
            uid: u,
            nth,
            reason,
        } => {
            let sessions = fold.users.get(&uid(*u))?.sessions();
            let session = sessions.get(nth % sessions.len().max(1))?;
            Command::Disconnect {
                uid: uid(*u),
                session_id: session.session_id,
                reason: CloseReason::ALL[*reason],
            }
        }
        Step::SystemUids { add, uids } => {
            let uids = uids.iter().map(|u| uid(*u)).collect();
            if *add {
                Command::AddSystemUids { uids }
            } else {
                Command::RemoveSystemUids { uids }
            }
        }
        Step::NodeLifetime { start, boot } => {
            // Made from the boot's number, so that a stop finds the start of the same boot.
            let boot_id =
                uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | *boot as u128);
            let version = "test 'quoted' \\ back".to_string();
            if *start {
                Command::StartNode(NodeStart {
                    node_id: NodeId(1),
                    boot_id,
                    version,
                    api_addr: None,
                    ws_addr: None,
                })
            } else {
                Command::StopNode(NodeLifetime {
                    node_id: NodeId(1),
                    boot_id,
                    version,
                })
            }
        }
    })
}

/// The log a sequence of steps makes, and its fold.
fn log_of(steps: &[Step]) -> (Vec<RecordedEvent>, Fold) {
    let mut fold = Fold::default();
    let mut log = Vec::new();
    let nobody = UserState::default();
    for step in steps {
        let Some(command) = command(&fold, step) else {
            continue;
        };
        let state = match command.subject() {
            Subject::User(u) => StateOf::User(fold.users.get(u).unwrap_or(&nobody)),
            Subject::SystemUids => StateOf::SystemUids(&fold.system_uids),
            Subject::Node => StateOf::Node,
        };
        // A refused connect records nothing.
        let Ok(events) = decide(state, &command) else {
            continue;
        };
        for event in events {
            evolve(&mut fold, &event);
            let seq = Seq(log.len() as u64 + 1);
            log.push(RecordedEvent {
                seq,
                event_id: uuid::Uuid::now_v7(),
                recorded_at: 1_700_000_000_000 + seq.0 as i64,
                node_id: NodeId(1),
                event,
            });
        }
    }
    (log, fold)
}

/// `log` cut after each index in `cuts` (taken modulo its length).
fn batches<'a>(log: &'a [RecordedEvent], cuts: &[usize]) -> Vec<&'a [RecordedEvent]> {
    let mut at: BTreeSet<usize> = cuts.iter().map(|c| c % (log.len() + 1)).collect();
    at.insert(0);
    at.insert(log.len());
    let at: Vec<usize> = at.into_iter().collect();
    at.windows(2).map(|w| &log[w[0]..w[1]]).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh view of `views`' engine with `parts` applied in order.
async fn view_of(views: &ViewFactory, parts: &[&[RecordedEvent]]) -> TestView {
    let view = views.fresh().await;
    for part in parts {
        view.apply(part).await.unwrap();
    }
    view
}

/// A log and the cuts of it into batches.
fn cut_logs() -> impl Strategy<Value = (Vec<Step>, Vec<usize>)> {
    (
        proptest::collection::vec(step(), 1..80),
        proptest::collection::vec(any::<usize>(), 0..6),
    )
}

/// Runs `property` over `cases` inputs drawn from `strategy` and fails with the smallest input
/// that breaks it. Each case makes the views it needs from one factory of `engine` and runs
/// them on one runtime, both made once for the run: the views of a PostgreSQL run are schemas
/// of one database, dropped at the end.
fn check<S: Strategy>(
    engine: Engine,
    cases: u32,
    strategy: S,
    property: impl Fn(&tokio::runtime::Runtime, &ViewFactory, S::Value) -> Result<(), TestCaseError>,
) {
    let rt = runtime();
    let views = rt.block_on(ViewFactory::new(engine));
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&strategy, |value| property(&rt, &views, value));
    drop(views);
    if let Err(e) = result {
        panic!("on {engine:?}: {e}");
    }
}

fn the_view_equals_a_replay_of_the_log(
    rt: &tokio::runtime::Runtime,
    views: &ViewFactory,
    (steps, cuts): (Vec<Step>, Vec<usize>),
) -> Result<(), TestCaseError> {
    let (log, _) = log_of(&steps);
    let (cut, one_by_one) = rt.block_on(async {
        let cut = view_of(views, &batches(&log, &cuts)).await;
        let singles: Vec<&[RecordedEvent]> = log.chunks(1).collect();
        let one = view_of(views, &singles).await;
        // A batch applied again changes nothing.
        for part in batches(&log, &cuts) {
            cut.apply(part).await.unwrap();
        }
        let dumps = (cut.dump().await.unwrap(), one.dump().await.unwrap());
        cut.close().await;
        one.close().await;
        dumps
    });
    let differences = cut.differences(&one_by_one, 10);
    prop_assert!(differences.is_empty(), "{:#?}", differences);
    prop_assert_eq!(cut, one_by_one);
    Ok(())
}

fn memory_restored_the_start_up_way_equals_the_fold(
    rt: &tokio::runtime::Runtime,
    views: &ViewFactory,
    (steps, snapshot_at, cuts): (Vec<Step>, usize, Vec<usize>),
) -> Result<(), TestCaseError> {
    let (log, fold) = log_of(&steps);
    let k = snapshot_at % (log.len() + 1);
    let memory = rt.block_on(async {
        // The view holds the log up to k; start-up restores memory from it, then hands the
        // rest of the log to the subscribers, in whatever batches it is read.
        let view = view_of(views, &batches(&log[..k], &cuts)).await;
        let state = view.load_state().await.unwrap();
        view.close().await;
        assert_eq!(state.checkpoint, Seq(k as u64));
        let presence = Arc::new(Presence::load(
            state.tokens,
            state.open_sessions,
            state.system_uids,
        ));
        let subscribers = Subscribers::new(presence.clone(), state.checkpoint);
        for part in batches(&log[k..], &cuts) {
            subscribers.publish(part);
        }
        presence
    });
    prop_assert_eq!(memory.snapshot(), fold);
    Ok(())
}

/// The store's properties, on one engine; PostgreSQL is given fewer cases, since each of its
/// views costs a schema and a round trip per statement.
macro_rules! view_properties {
    ($engine:ident, $module:ident, $cases:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn the_view_equals_a_replay_of_the_log_however_it_is_cut() {
                check(
                    Engine::$engine,
                    $cases,
                    cut_logs(),
                    the_view_equals_a_replay_of_the_log,
                );
            }

            #[test]
            fn memory_restored_the_start_up_way_equals_the_fold_of_the_log() {
                check(
                    Engine::$engine,
                    $cases,
                    (
                        proptest::collection::vec(step(), 1..80),
                        any::<usize>(),
                        proptest::collection::vec(any::<usize>(), 0..6),
                    ),
                    memory_restored_the_start_up_way_equals_the_fold,
                );
            }
        }
    };
}

view_properties!(Sqlite, sqlite, 48);
view_properties!(Postgres, postgres, 32);

/// What the in-memory projection would be rebuilt from `state`.
fn restored(state: ViewState) -> Fold {
    Presence::load(state.tokens, state.open_sessions, state.system_uids).snapshot()
}

/// A SQLite view and a PostgreSQL view of one log, each cut its own way, hold the same rows
/// (their dumps are equal, text for text), restore the same memory, and page every user's
/// history alike.
#[test]
fn engines_agree_on_the_rows_the_state_and_the_history_of_one_log() {
    let sqlite = runtime().block_on(ViewFactory::new(Engine::Sqlite));
    check(
        Engine::Postgres,
        24,
        (
            cut_logs(),
            proptest::collection::vec(any::<usize>(), 0..6),
            1u32..5,
        ),
        |rt, postgres, ((steps, cuts), other_cuts, page)| {
            let (log, _) = log_of(&steps);
            let lite = rt.block_on(view_of(&sqlite, &batches(&log, &cuts)));
            let pg = rt.block_on(view_of(postgres, &batches(&log, &other_cuts)));
            let dumps = (
                rt.block_on(lite.dump()).unwrap(),
                rt.block_on(pg.dump()).unwrap(),
            );
            let differences = dumps.0.differences(&dumps.1, 10);
            prop_assert!(differences.is_empty(), "{:#?}", differences);
            prop_assert_eq!(&dumps.0, &dumps.1);
            prop_assert_eq!(
                restored(rt.block_on(lite.load_state()).unwrap()),
                restored(rt.block_on(pg.load_state()).unwrap())
            );
            for u in 0..UIDS.len() {
                let uid = uid(u);
                prop_assert_eq!(
                    rt.block_on(lite.history_snapshot(&uid, page)),
                    rt.block_on(pg.history_snapshot(&uid, page))
                );
                // Every page, walked back from the newest by the last id of the one before.
                let mut before = None;
                loop {
                    let a = rt.block_on(lite.sessions(&uid, before, page)).unwrap();
                    let b = rt.block_on(pg.sessions(&uid, before, page)).unwrap();
                    prop_assert_eq!(&a, &b);
                    match a.last() {
                        Some(last) if a.len() == page as usize => before = Some(last.session_id),
                        _ => break,
                    }
                }
            }
            rt.block_on(lite.close());
            rt.block_on(pg.close());
            Ok(())
        },
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn onlinestatus_answers_what_a_naive_model_says(
        steps in proptest::collection::vec(step(), 1..80),
        asked in proptest::collection::vec(0..UIDS.len() + 2, 0..12),
    ) {
        let (log, fold) = log_of(&steps);
        let presence = Arc::new(Presence::new());
        Subscribers::new(presence.clone(), Seq(0)).publish(&log);
        // Two uids no event names, asked too.
        let names: Vec<String> = asked
            .iter()
            .map(|i| UIDS.get(*i).map_or_else(|| format!("nobody{i}"), |u| u.to_string()))
            .collect();
        let answer: serde_json::Value =
            serde_json::from_slice(&onlinestatus::render(&presence, &names)).unwrap();
        // The model: each uid once, in the order first asked; its distinct online flags,
        // ascending.
        let mut seen = BTreeSet::new();
        let mut model = Vec::new();
        for name in &names {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(user) = Uid::parse(name).ok().and_then(|u| fold.users.get(&u)) else {
                continue;
            };
            let flags: BTreeSet<u8> = user.sessions().iter().map(|s| s.device_flag.0).collect();
            for flag in flags {
                model.push(serde_json::json!({"uid": name, "device_flag": flag, "online": 1}));
            }
        }
        prop_assert_eq!(answer, serde_json::Value::Array(model));
    }
}
