//! What survives a graceful restart (memory state, SQL view, the log's dense `seq`), and that the
//! SQL view a run leaves behind equals a fresh replay of its log (`architecture.md` section 4).

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wkuser::domain::{CloseReason, DeviceFlag, Event, NodeId, Seq, TokenSlot, UserState};
use wkuser::log::{EventLog, SledStore};
use wkuser::view::{projector, SqliteView, ViewDump, ViewStore};

use crate::helpers::*;

fn user_state(app: &TestApp, uid: &str) -> UserState {
    app.server()
        .write_path()
        .presence()
        .with_user(uid, |s| s.clone())
}

/// The rows of one table of a dump.
fn table<'a>(dump: &'a ViewDump, name: &str) -> &'a [String] {
    &dump
        .tables
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no table {name} in the dump"))
        .1
}

#[tokio::test]
async fn a_restart_keeps_tokens_system_uids_and_the_seq() {
    let mut app = spawn_app().await;
    app.set_token("alice", "alice-ios", 1, 1).await;
    app.set_token("alice", "alice-web", 3, 0).await;
    app.set_token("bob", "bob-android", 2, 1).await;
    app.set_token("bob", "bob-desktop", 4, 0).await;
    app.set_token("carol", "carol-ios", 1, 0).await;
    app.set_token("carol", "carol-web", 3, 1).await;
    let quit = app
        .post(
            "/user/device_quit",
            &json!({"uid": "carol", "device_flag": 1}),
        )
        .await;
    assert_eq!(quit, (200, json!({"status": 200})));
    let quit = app
        .post(
            "/user/device_quit",
            &json!({"uid": "bob", "device_flag": -1}),
        )
        .await;
    assert_eq!(quit, (200, json!({"status": 200})));
    for (path, uids) in [
        ("/user/systemuids_add", json!(["sys-b", "sys-a", "sys-c"])),
        ("/user/systemuids_remove", json!(["sys-c"])),
    ] {
        assert_eq!(
            app.post(path, &json!({ "uids": uids })).await,
            (200, json!({"status": 200}))
        );
    }
    // A connection open across the restart: closed by the shutdown, recorded as such.
    let (mut ws, answer) = app.ws_connect("alice", "alice-web", 3, "web-1").await;
    assert_connected(&answer);
    let closed = tokio::spawn(async move { close_code(&mut ws).await });

    let uids = ["alice", "bob", "carol"];
    let memory_before: Vec<_> = uids
        .iter()
        .map(|u| user_state(&app, u).tokens().collect::<Vec<_>>())
        .collect();
    app.view_caught_up().await;
    let view_before = app.server().view().dump().await.expect("dump");
    let last_before = app.server().write_path().log().last_durable();
    let events_before = app.events();

    tokio::time::timeout(Duration::from_secs(20), app.restart())
        .await
        .expect("restart within 20 s");
    assert_eq!(closed.await.unwrap(), Some(1001), "closed as going away");

    // The memory state: tokens, levels, cleared slots and system uids are back; no session.
    for (uid, before) in uids.iter().zip(&memory_before) {
        let state = user_state(&app, uid);
        assert_eq!(&state.tokens().collect::<Vec<_>>(), before, "{uid}");
        assert!(state.sessions().is_empty(), "{uid}: {:?}", state.sessions());
    }
    assert_eq!(
        user_state(&app, "carol").token(DeviceFlag(1)),
        Some(TokenSlot::Cleared)
    );
    assert_eq!(app.system_uids().await, json!(["sys-a", "sys-b"]));
    assert_eq!(app.online(&uids).await, json!([]));

    // The seq: dense across the restart, which appended exactly the shutdown's close,
    // NodeStopped and NodeStarted.
    let events = app.events();
    let last_after = app.server().write_path().log().last_durable();
    assert_eq!(last_after, Seq(last_before.0 + 3));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=last_after.0).collect::<Vec<_>>());
    assert_eq!(&events[..events_before.len()], &events_before[..]);
    let tail: Vec<&Event> = events[events_before.len()..]
        .iter()
        .map(|e| &e.event)
        .collect();
    let Event::NodeStarted(first_boot) = &events[0].event else {
        panic!("the log starts with NodeStarted: {:?}", events[0]);
    };
    match tail.as_slice() {
        [Event::Disconnected(d), Event::NodeStopped(stopped), Event::NodeStarted(started)] => {
            assert_eq!(d.uid.as_str(), "alice");
            assert_eq!(d.reason, CloseReason::ServerShutdown);
            assert_eq!(stopped.boot_id, first_boot.boot_id);
            assert_ne!(started.boot_id, first_boot.boot_id);
            assert_eq!(started.node_id, NodeId(1));
        }
        other => panic!("unexpected restart events: {other:?}"),
    }

    // The SQL view: the same tokens and system uids; the session closed as server_shutdown.
    app.view_caught_up().await;
    let view_after = app.server().view().dump().await.expect("dump");
    for name in ["users", "tokens", "system_uids"] {
        assert_eq!(
            table(&view_after, name),
            table(&view_before, name),
            "{name}"
        );
        assert!(!table(&view_after, name).is_empty(), "{name}");
    }
    let sessions = table(&view_after, "device_sessions");
    assert_eq!(sessions.len(), 1);
    assert!(
        sessions[0].ends_with(",'server_shutdown'"),
        "{}",
        sessions[0]
    );
    assert_eq!(
        table(&view_after, "projector_checkpoint"),
        [format!("last_seq={}", last_after.0)]
    );
    let state = app.server().view().load_state().await.expect("state");
    assert_eq!(state.checkpoint, last_after);
    assert!(state.open_sessions.is_empty());
    assert_eq!(state.tokens.len(), 6);
    assert_eq!(
        state
            .system_uids
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>(),
        ["sys-a", "sys-b"]
    );

    // Authentication after the restart: registered tokens admit, cleared and wrong ones do not.
    let mut sockets = Vec::new();
    for (uid, token, flag) in [
        ("alice", "alice-ios", 1),
        ("alice", "alice-web", 3),
        ("carol", "carol-web", 3),
    ] {
        let (ws, answer) = app
            .ws_connect(uid, token, flag, &format!("{uid}-{flag}"))
            .await;
        assert_connected(&answer);
        sockets.push(ws);
    }
    for (uid, token, flag, dev) in [
        ("carol", "carol-ios", 1, "cleared"),
        ("bob", "bob-android", 2, "cleared-all-2"),
        ("bob", "bob-desktop", 4, "cleared-all-4"),
        ("alice", "alice-web", 1, "wrong"),
    ] {
        let (_ws, answer) = app.ws_connect(uid, token, flag, dev).await;
        assert_eq!(answer, auth_fail(&format!("c-{dev}")), "{uid} {flag}");
    }
    // The next seq follows the last: the three connects (still open) are the next three events.
    let events = app.events();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=last_after.0 + 3).collect::<Vec<_>>());
    assert!(events[last_after.0 as usize..]
        .iter()
        .all(|e| matches!(e.event, Event::Connected(_))));
    assert_eq!(app.online(&["alice"]).await.as_array().unwrap().len(), 2);
    drop(sockets);
}

#[tokio::test]
async fn the_view_equals_a_fresh_replay_of_the_log() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t1", 1, 1).await;
    app.set_token("u1", "t1-web", 3, 0).await;
    app.set_token("u2", "t2", 2, 0).await;
    app.set_token("u3", "t3", 1, 0).await;
    let mut open = Vec::new();
    for (uid, token, flag, dev) in [
        ("u1", "t1", 1, "phone"),
        ("u1", "t1-web", 3, "browser"),
        ("u2", "t2", 2, "tablet"),
        ("u3", "t3", 1, "laptop"),
    ] {
        let (ws, answer) = app.ws_connect(uid, token, flag, dev).await;
        assert_connected(&answer);
        open.push(ws);
    }
    // A client that leaves, a client replaced by a master login, a token update that kicks,
    // a device quit that kicks, a failed connect.
    let mut leaving = open.remove(3);
    leaving
        .send(Message::text(r#"{"method":"disconnect","id":"bye"}"#))
        .await
        .unwrap();
    let _ = close_code(&mut leaving).await;
    let (_phone2, answer) = app.ws_connect("u1", "t1", 1, "phone-2").await;
    assert_connected(&answer);
    app.set_token("u1", "t1-new", 1, 1).await;
    assert_eq!(
        app.post(
            "/user/device_quit",
            &json!({"uid": "u2", "device_flag": -1})
        )
        .await,
        (200, json!({"status": 200}))
    );
    let (_ws, answer) = app.ws_connect("u2", "t2", 2, "again").await;
    assert_eq!(answer, auth_fail("c-again"));
    for (path, uids) in [
        ("/user/systemuids_add", json!(["s1", "s2", "s3"])),
        ("/user/systemuids_remove", json!(["s2"])),
    ] {
        assert_eq!(
            app.post(path, &json!({ "uids": uids })).await,
            (200, json!({"status": 200}))
        );
    }
    app.wait_online(
        &["u1", "u2", "u3"],
        json!([{"uid": "u1", "device_flag": 3, "online": 1}]),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stop within 20 s");
    drop(open);

    let store = SledStore::open(&app.data_dir.join("log")).expect("log opens after the stop");
    let log = EventLog::start(Arc::new(store), NodeId(1)).expect("log starts");
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = SqliteView::open(&fresh_dir.path().join("fresh.sqlite"))
        .await
        .expect("fresh view");
    let until = log.last_durable();
    let reached = projector::project(&log, &fresh, Seq(0), until, |_| {})
        .await
        .expect("replay");
    assert_eq!(reached, until);
    let live = SqliteView::open(&app.data_dir.join("view.sqlite"))
        .await
        .expect("live view");
    let (fresh_dump, live_dump) = (fresh.dump().await.unwrap(), live.dump().await.unwrap());
    fresh.close().await;
    live.close().await;
    log.close().await;

    assert_eq!(fresh_dump.differences(&live_dump, 20), Vec::<String>::new());
    assert_eq!(fresh_dump, live_dump);
    // The comparison has something to compare: every kind of row is there.
    for name in [
        "users",
        "tokens",
        "device_sessions",
        "system_uids",
        "node_lifetimes",
    ] {
        assert!(!table(&live_dump, name).is_empty(), "{name} is empty");
    }
    assert_eq!(
        table(&live_dump, "projector_checkpoint"),
        [format!("last_seq={}", until.0)]
    );
    let sessions = table(&live_dump, "device_sessions");
    for reason in [
        "client_closed",
        "master_login",
        "token_updated",
        "device_quit",
        "server_shutdown",
    ] {
        assert!(
            sessions
                .iter()
                .any(|s| s.ends_with(&format!(",'{reason}'"))),
            "no session closed as {reason}: {sessions:#?}"
        );
    }
    assert!(
        sessions.iter().all(|s| !s.ends_with(",NULL")),
        "a session left open: {sessions:#?}"
    );
}

#[tokio::test]
async fn a_lost_view_is_rebuilt_from_the_log_at_start() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t1", 1, 1).await;
    app.set_token("u2", "t2", 2, 0).await;
    app.set_token("u2", "t2-web", 3, 0).await;
    assert_eq!(
        app.post("/user/device_quit", &json!({"uid": "u2", "device_flag": 3}))
            .await,
        (200, json!({"status": 200}))
    );
    assert_eq!(
        app.post("/user/systemuids_add", &json!({"uids": ["s9", "s1"]}))
            .await,
        (200, json!({"status": 200}))
    );
    let (mut ws, answer) = app.ws_connect("u1", "t1", 1, "d1").await;
    assert_connected(&answer);
    ws.send(Message::text(r#"{"method":"disconnect","id":"bye"}"#))
        .await
        .unwrap();
    let _ = close_code(&mut ws).await;
    app.wait_online(&["u1"], json!([])).await;
    app.view_caught_up().await;
    let before = app.server().view().dump().await.expect("dump");
    let memory_before: Vec<_> = ["u1", "u2"]
        .iter()
        .map(|u| user_state(&app, u).tokens().collect::<Vec<_>>())
        .collect();
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stop within 20 s");

    let mut removed = 0;
    for file in files_under(&app.data_dir) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("view.sqlite") {
            std::fs::remove_file(&file).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 1, "the view file was found and removed");
    tokio::time::timeout(Duration::from_secs(20), app.restart())
        .await
        .expect("start within 20 s");

    for (uid, before) in ["u1", "u2"].iter().zip(&memory_before) {
        assert_eq!(
            &user_state(&app, uid).tokens().collect::<Vec<_>>(),
            before,
            "{uid}"
        );
    }
    assert_eq!(app.system_uids().await, json!(["s1", "s9"]));
    let (_ws, answer) = app.ws_connect("u2", "t2-web", 3, "cleared").await;
    assert_eq!(answer, auth_fail("c-cleared"));
    let (_ws, answer) = app.ws_connect("u2", "t2", 2, "d2").await;
    assert_connected(&answer);
    app.view_caught_up().await;
    let after = app.server().view().dump().await.expect("dump");
    for name in ["users", "tokens", "system_uids"] {
        assert_eq!(table(&after, name), table(&before, name), "{name}");
    }
    // The closed session is back as it was; the new one follows it.
    let sessions = table(&after, "device_sessions");
    assert_eq!(sessions.len(), 2);
    assert!(sessions.contains(&table(&before, "device_sessions")[0]));
}
