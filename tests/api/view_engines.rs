//! The SQL view on PostgreSQL beside the one on SQLite: the same history pages, the same dump
//! for text that needs quoting, two writers of one shared view that never apply an event twice,
//! and a database that cannot be reached reported as storage unavailable.
//!
//! The properties over generated logs live in `properties` (`postgres::`, `engines_agree_*`);
//! these are the cases a generator would rarely make.

use std::collections::BTreeSet;

use wkuser::domain::event::{Connected, Disconnected, NodeLifetime, NodeStart, SystemUids};
use wkuser::domain::*;
use wkuser::view::{PostgresView, SessionRecord, ViewError, ViewStore};

use crate::helpers::{Engine, TestView, ViewFactory};

/// A log under construction: each event gets the next seq.
#[derive(Default)]
struct Log(Vec<RecordedEvent>);

impl Log {
    fn push(&mut self, event: Event) {
        let seq = Seq(self.0.len() as u64 + 1);
        self.0.push(RecordedEvent {
            seq,
            event_id: uuid::Uuid::now_v7(),
            recorded_at: 1_700_000_000_000 + seq.0 as i64 * 10,
            node_id: NodeId(2),
            event,
        });
    }

    fn token(&mut self, uid: &Uid, flag: u8, token: &str) {
        self.push(Event::TokenUpdated(wkuser::domain::event::TokenUpdated {
            uid: uid.clone(),
            device_flag: DeviceFlag(flag),
            device_level: DeviceLevel::Master,
            token_hash: Token::parse(token).unwrap().hash(),
        }));
    }

    fn connect(&mut self, uid: &Uid, flag: u8, device: &str, peer: &str) -> SessionId {
        let session_id = SessionId::new();
        self.push(Event::Connected(Connected {
            session_id,
            uid: uid.clone(),
            device_flag: DeviceFlag(flag),
            device_level: DeviceLevel::Slave,
            device_id: DeviceId::parse(device).unwrap(),
            node_id: NodeId(2),
            peer: peer.into(),
        }));
        session_id
    }

    fn close(&mut self, uid: &Uid, flag: u8, session_id: SessionId, reason: CloseReason) {
        self.push(Event::Disconnected(Disconnected {
            session_id,
            uid: uid.clone(),
            device_flag: DeviceFlag(flag),
            reason,
        }));
    }

    fn last(&self) -> Seq {
        self.0.last().map_or(Seq(0), |r| r.seq)
    }
}

fn uid(s: &str) -> Uid {
    Uid::parse(s).unwrap()
}

/// One view per engine, each with `log` applied in batches of `batch`.
async fn both_with(log: &Log, batch: usize) -> Vec<(ViewFactory, TestView)> {
    let mut out = Vec::new();
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let views = ViewFactory::new(engine).await;
        let view = views.fresh().await;
        for part in log.0.chunks(batch) {
            view.apply(part).await.unwrap();
        }
        out.push((views, view));
    }
    out
}

/// Walks `uid`'s history back from the newest, `page` at a time.
async fn all_pages(view: &TestView, uid: &Uid, page: u32) -> Vec<Vec<SessionRecord>> {
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let got = view.sessions(uid, before, page).await.unwrap();
        let full = got.len() == page as usize;
        before = got.last().map(|s| s.session_id);
        if !got.is_empty() {
            pages.push(got);
        }
        if !full {
            return pages;
        }
    }
}

#[tokio::test]
async fn sessions_are_paged_newest_first_alike_on_both_engines() {
    let (pager, other) = (uid("pager"), uid("other"));
    let mut log = Log::default();
    log.token(&pager, 1, "t1");
    let mut ids = Vec::new();
    let mut others = Vec::new();
    let mut open_flags = BTreeSet::new();
    for i in 0..23u8 {
        let flag = 1 + i % 4;
        let id = log.connect(&pager, flag, &format!("device-{i}"), "10.0.0.1:4000");
        ids.push(id);
        if i % 3 == 0 {
            log.close(
                &pager,
                flag,
                id,
                CloseReason::ALL[i as usize % CloseReason::ALL.len()],
            );
        } else {
            open_flags.insert(flag);
        }
        if i % 5 == 0 {
            others.push(log.connect(&other, 1, "o", "10.0.0.2:4000"));
        }
    }
    // The model: every session of the user, newest (greatest id) first.
    ids.sort_unstable_by_key(|id| std::cmp::Reverse(id.0));
    let mut answers = Vec::new();
    for (_views, view) in both_with(&log, 6).await {
        let pages = all_pages(&view, &pager, 5).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 5, 5, 3]
        );
        let walked: Vec<SessionId> = pages.iter().flatten().map(|s| s.session_id).collect();
        assert_eq!(walked, ids);
        assert!(pages.iter().flatten().all(|s| s.uid == pager));

        // `before` need not be one of the user's sessions.
        let cut = others[2];
        let older = view.sessions(&pager, Some(cut), 100).await.unwrap();
        let expected: Vec<SessionId> = ids.iter().copied().filter(|id| id.0 < cut.0).collect();
        assert_eq!(
            older.iter().map(|s| s.session_id).collect::<Vec<_>>(),
            expected
        );
        assert!(view.sessions(&pager, None, 0).await.unwrap().is_empty());
        assert!(view
            .sessions(&uid("nobody"), None, 10)
            .await
            .unwrap()
            .is_empty());

        let snapshot = view.history_snapshot(&pager, 5).await;
        assert_eq!(snapshot.checkpoint, log.last());
        assert_eq!(snapshot.sessions, pages[0]);
        assert_eq!(
            snapshot.open_flags,
            open_flags
                .iter()
                .map(|f| DeviceFlag(*f))
                .collect::<Vec<_>>()
        );
        answers.push((pages, older, snapshot));
        view.close().await;
    }
    assert_eq!(answers[0], answers[1], "SQLite and PostgreSQL answer alike");
}

#[tokio::test]
async fn text_that_needs_quoting_dumps_alike_on_both_engines() {
    let odd = uid(r"o'neil\x");
    let mut log = Log::default();
    log.token(&odd, 3, "t'\\1");
    let session = log.connect(&odd, 3, "dév 'ice' \"1\" \\ 🙂", "[::1]:5200");
    log.connect(&odd, 4, r"\\'", "'peer'");
    log.close(&odd, 3, session, CloseReason::DeviceQuit);
    log.push(Event::SystemUidsAdded(SystemUids {
        uids: vec![odd.clone(), uid("plain")],
    }));
    let boot_id = uuid::Uuid::now_v7();
    log.push(Event::NodeStarted(NodeStart {
        node_id: NodeId(2),
        boot_id,
        version: r"v'1\".into(),
        api_addr: None,
        ws_addr: None,
    }));
    log.push(Event::NodeStopped(NodeLifetime {
        node_id: NodeId(2),
        boot_id,
        version: r"v'1\".into(),
    }));
    let mut dumps = Vec::new();
    for (_views, view) in both_with(&log, 3).await {
        dumps.push(view.dump().await.unwrap());
        view.close().await;
    }
    let differences = dumps[0].differences(&dumps[1], 10);
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(dumps[0], dumps[1]);
    let users = &dumps[1].tables[0];
    assert_eq!(users.0, "users");
    assert_eq!(
        users.1,
        [format!(r"'o''neil\x',1,{}", 1_700_000_000_010i64)]
    );
    let sessions = &dumps[1].tables[2].1;
    assert!(
        sessions
            .iter()
            .any(|row| row.contains(r#"'dév ''ice'' "1" \ 🙂'"#) && row.ends_with(",'device_quit'")),
        "{sessions:#?}"
    );
}

/// Quits that cover one token row twice in a batch: the row keeps the first (the second finds
/// it cleared), on both engines, as one event at a time would leave it.
#[tokio::test]
async fn a_token_quit_twice_in_one_batch_keeps_its_first_quit() {
    let a = uid("a");
    let quit = |scope| {
        Event::DeviceQuit(wkuser::domain::event::DeviceQuit {
            uid: a.clone(),
            device_flag: scope,
        })
    };
    let mut log = Log::default();
    log.token(&a, 1, "t1");
    log.token(&a, 2, "t2");
    // Batches of two: these two quits share one; the last finds both rows cleared.
    log.push(quit(QuitScope::One(DeviceFlag(1))));
    log.push(quit(QuitScope::All));
    log.push(quit(QuitScope::All));
    let reference = {
        let views = ViewFactory::new(Engine::Sqlite).await;
        let view = views.fresh().await;
        for part in log.0.chunks(1) {
            view.apply(part).await.unwrap();
        }
        view.dump().await.unwrap()
    };
    let tokens = &reference.tables[1].1;
    assert!(tokens[0].starts_with("'a',1,1,NULL,3,"), "{tokens:#?}");
    assert!(tokens[1].starts_with("'a',2,1,NULL,4,"), "{tokens:#?}");
    for (views, view) in both_with(&log, 2).await {
        let dump = view.dump().await.unwrap();
        view.close().await;
        let differences = dump.differences(&reference, 10);
        assert!(
            differences.is_empty(),
            "{:?}: {differences:#?}",
            views.engine()
        );
    }
}

/// A varied log: tokens set and quit, sessions opened and closed, system uids, a lifetime.
fn busy_log() -> Log {
    let uids: Vec<Uid> = ["a", "b", "c"].into_iter().map(uid).collect();
    let mut log = Log::default();
    let mut open = Vec::new();
    for i in 0..90usize {
        let u = &uids[i % uids.len()];
        let flag = (i % 3) as u8;
        match i % 6 {
            0 | 3 => log.token(u, flag, &format!("t{i}")),
            1 | 4 => open.push((u.clone(), flag, log.connect(u, flag, "d", "127.0.0.1:1"))),
            2 => {
                if let Some((u, flag, id)) = open.pop() {
                    log.close(&u, flag, id, CloseReason::ClientClosed);
                }
            }
            _ => {
                let scope = if i % 4 == 1 {
                    QuitScope::All
                } else {
                    QuitScope::One(DeviceFlag(flag))
                };
                log.push(Event::DeviceQuit(wkuser::domain::event::DeviceQuit {
                    uid: u.clone(),
                    device_flag: scope,
                }));
                let change = SystemUids {
                    uids: vec![u.clone()],
                };
                log.push(if i % 2 == 0 {
                    Event::SystemUidsAdded(change)
                } else {
                    Event::SystemUidsRemoved(change)
                });
            }
        }
    }
    log
}

/// Two nodes' projectors writing one shared view at once, each in its own batches, leave it as
/// one writer applying the log one event at a time would: each waits for the other's
/// checkpoint and skips what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_postgres_view_apply_every_event_once() {
    let log = busy_log();
    let reference = {
        let views = ViewFactory::new(Engine::Sqlite).await;
        let view = views.fresh().await;
        for part in log.0.chunks(1) {
            view.apply(part).await.unwrap();
        }
        let dump = view.dump().await.unwrap();
        view.close().await;
        dump
    };
    let views = ViewFactory::new(Engine::Postgres).await;
    for (a, b) in [(3, 4), (5, 2), (1, 7), (11, 13)] {
        let url = views.fresh_url().await;
        let (first, second) = (
            PostgresView::connect(&url, 2).await.unwrap(),
            PostgresView::connect(&url, 2).await.unwrap(),
        );
        let write = |view: PostgresView, size: usize| {
            let events = log.0.clone();
            tokio::spawn(async move {
                for part in events.chunks(size) {
                    view.apply(part).await.unwrap();
                }
                view
            })
        };
        let (first, second) = (write(first, a), write(second, b));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        let dump = first.dump().await.unwrap();
        let differences = dump.differences(&reference, 10);
        assert!(
            differences.is_empty(),
            "batches of {a} and {b}: {differences:#?}"
        );
        assert_eq!(dump, reference, "batches of {a} and {b}");
        assert_eq!(second.checkpoint().await.unwrap(), log.last());
        first.close().await;
        second.close().await;
    }
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_storage_unavailable() {
    // A port nothing listens on: taken from the system, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = PostgresView::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"), 1)
        .await
        .err()
        .expect("no database there");
    assert!(
        matches!(refused, ViewError::Unavailable(_)),
        "{refused:?} is storage unavailable"
    );
    assert!(!refused.is_damage(), "an unreachable database is no damage");

    // A view whose pool is gone answers the same, whatever the call.
    let views = ViewFactory::new(Engine::Postgres).await;
    let view = PostgresView::connect(&views.fresh_url().await, 1)
        .await
        .unwrap();
    view.close().await;
    let closed = view.checkpoint().await.unwrap_err();
    assert!(matches!(closed, ViewError::Unavailable(_)), "{closed:?}");
    let closed = view.apply(&busy_log().0[..3]).await.unwrap_err();
    assert!(matches!(closed, ViewError::Unavailable(_)), "{closed:?}");
}
