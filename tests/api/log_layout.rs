//! A data directory whose log a build before the packed layout wrote (a sled key per event in
//! tree `events`, a key per index row in tree `by_uid`), started by this build: the real binary
//! converts the log when it opens it (saying so in its log), and users, tokens, sessions and
//! each user's history are all there; the operator tools read the converted log, `verify`
//! passes, and the old trees are gone for good across a restart.

use std::path::Path;

use serde_json::Value;
use uuid::Uuid;
use wkuser::domain::event::*;
use wkuser::domain::*;

use crate::cli::{assert_exit, stderr, stdout, wkuser};
use crate::helpers::*;

const USERS: u64 = 30;
const SESSIONS: u64 = 300;

fn uid(i: u64) -> Uid {
    Uid::parse(&format!("u{i}")).unwrap()
}

fn token(i: u64) -> String {
    format!("old-secret-{i}")
}

/// The old log's events: every user's token, then sessions opened and closed in turn over the
/// users, the last one left open (a crash).
fn old_events() -> Vec<RecordedEvent> {
    let mut events = vec![];
    for i in 0..USERS {
        events.push(Event::TokenUpdated(TokenUpdated {
            uid: uid(i),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            token_hash: Token::parse(&token(i)).unwrap().hash(),
        }));
    }
    for s in 0..SESSIONS {
        let (user, session_id) = (
            uid(s % USERS),
            SessionId(Uuid::from_u128(u128::from(s) + 1)),
        );
        events.push(Event::Connected(Connected {
            session_id,
            uid: user.clone(),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            device_id: DeviceId::parse(&format!("old-device-{s}")).unwrap(),
            node_id: NodeId(1),
            peer: "127.0.0.1:40000".into(),
        }));
        if s + 1 < SESSIONS {
            events.push(Event::Disconnected(Disconnected {
                session_id,
                uid: user,
                device_flag: DeviceFlag(1),
                reason: CloseReason::ClientClosed,
            }));
        }
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| RecordedEvent {
            seq: Seq(i as u64 + 1),
            event_id: Uuid::now_v7(),
            recorded_at: 1_795_820_000_000 + i as i64,
            node_id: NodeId(1),
            event,
        })
        .collect()
}

/// Writes `events` (seq, stored bytes, uids) as the build before the packed layout did, with
/// sled itself: tree `events`, seq (big endian) -> bytes; tree `by_uid`, uid ++ 0x00 ++ seq ->
/// nothing. Uncompressed, as that build created its logs.
pub(crate) fn write_old_layout(log_dir: &Path, events: &[(Seq, Vec<u8>, Vec<Uid>)]) {
    let db = sled::Config::new().path(log_dir).open().unwrap();
    let (tree, index) = (
        db.open_tree("events").unwrap(),
        db.open_tree("by_uid").unwrap(),
    );
    for (seq, bytes, uids) in events {
        tree.insert(seq.to_key(), bytes.as_slice()).unwrap();
        for uid in uids {
            let mut key = uid.as_str().as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&seq.to_key());
            index.insert(key, &[][..]).unwrap();
        }
    }
    db.flush().unwrap();
}

/// The names of the trees of the stopped log.
fn tree_names(log_dir: &Path) -> Vec<String> {
    let db = sled::Config::new().path(log_dir).open().unwrap();
    db.tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The event ids `/events?uid=` answers for `user` on `api`.
async fn history(api: &str, user: &str) -> Vec<String> {
    let page: Value = reqwest::get(format!("{api}/events?uid={user}&limit=1000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids_of(events: &[RecordedEvent], user: &str) -> Vec<String> {
    events
        .iter()
        .filter(|r| r.event.uids().iter().any(|u| u.as_str() == user))
        .map(|r| r.event_id.to_string())
        .collect()
}

#[tokio::test]
async fn a_log_of_a_key_per_event_is_converted_at_start_and_everything_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let log_dir = data_dir.join("log");
    let old = old_events();
    let stored: Vec<(Seq, Vec<u8>, Vec<Uid>)> = old
        .iter()
        .map(|r| (r.seq, r.encode(), r.event.uids().to_vec()))
        .collect();
    write_old_layout(&log_dir, &stored);

    let node = start_node(&data_dir).await;
    let said = node.stderr.lock().join("\n");
    assert!(
        said.contains("converting the log to its packed layout"),
        "{said}"
    );
    assert!(
        said.contains("converting the log: 100% of its events"),
        "{said}"
    );
    for i in [0, 7, 28] {
        let user = format!("u{i}");
        assert_eq!(
            history(&node.api, &user).await,
            ids_of(&old, &user),
            "{user}"
        );
    }
    // u29's session, open when the old build crashed, is closed by this start.
    let u29 = history(&node.api, "u29").await;
    assert_eq!(u29[..u29.len() - 1], ids_of(&old, "u29")[..]);
    let answer = crate::ops_postgres::connect(&node.ws, "u7", &token(7), 1).await;
    assert_connected(&answer);
    node.sigterm_and_wait().await;

    let names = tree_names(&log_dir);
    assert!(
        !names.iter().any(|n| n == "events" || n == "by_uid"),
        "the old trees are dropped: {names:?}"
    );
    let dir_arg = data_dir.display().to_string();
    let listed = wkuser(&["events", "--uid", "u3", "--data-dir", &dir_arg]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed_ids: Vec<String> = stdout(&listed)
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed_ids, ids_of(&old, "u3"));
    let all = wkuser(&["events", "--data-dir", &dir_arg]).await;
    assert!(
        stdout(&all).lines().count() > old.len() + 2,
        "the old events, a lifetime, u7's session"
    );
    let verified = wkuser(&["verify", "--data-dir", &dir_arg]).await;
    assert_exit(&verified, 0);

    // A restart opens the packed log as it is: the sessions of the old log are in the view,
    // the tokens admit, the history grows.
    let mut app = start_on(&data_dir, vec![]).await;
    let (status, page) = app.get("/user/sessions?uid=u9&limit=100").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["sessions"].as_array().unwrap().len() as u64,
        SESSIONS / USERS,
        "{page}"
    );
    let _u3 = admitted(&app, "u3", &token(3)).await;
    app.view_caught_up().await;
    let now = history(&app.api, "u3").await;
    assert_eq!(now[..ids_of(&old, "u3").len()], ids_of(&old, "u3")[..]);
    assert_eq!(
        now.len(),
        ids_of(&old, "u3").len() + 1,
        "u3's new Connected"
    );
    app.restart().await;
    assert_eq!(
        history(&app.api, "u3").await.len(),
        now.len() + 1,
        "and its Disconnected"
    );
    app.stop().await;
    let verified = wkuser(&["verify", "--data-dir", &dir_arg]).await;
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
}

async fn admitted(app: &TestApp, uid: &str, token: &str) -> Ws {
    let (ws, answer) = app.ws_connect(uid, token, 1, "new-device").await;
    assert_connected(&answer);
    ws
}
