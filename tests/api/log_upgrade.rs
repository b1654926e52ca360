//! A data directory of a build before the binary event encoding, started by this one: its log
//! holds JSON envelopes, which are read as they are (users, tokens, sessions, system uids,
//! history; its log is of the layout of a sled key per event too, and is converted at start),
//! while every new event is stored binary; the operator tools show both, and the
//! mixed log verifies, restarts and moves into PostgreSQL with both kinds of bytes intact.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;
use wkuser::domain::encoding::binary;
use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::log::{LogStore, SledStore};

use crate::cli::{assert_exit, stderr, stdout, wkuser};
use crate::helpers::*;

/// Session ids of the old log: u1's closed one, u2's left open by a crash.
const U1_SESSION: u128 = 0x01a2_1f9c_0000_7000_8000_0000_0000_00a1;
const U2_SESSION: u128 = 0x01a2_1f9c_0000_7000_8000_0000_0000_00a2;

fn old_events() -> Vec<Event> {
    let uid = |s: &str| Uid::parse(s).unwrap();
    let hash = |t: &str| Token::parse(t).unwrap().hash();
    vec![
        Event::TokenUpdated(TokenUpdated {
            uid: uid("u1"),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            token_hash: hash("old-secret-1"),
        }),
        Event::TokenUpdated(TokenUpdated {
            uid: uid("u2"),
            device_flag: DeviceFlag(2),
            device_level: DeviceLevel::Slave,
            token_hash: hash("old-secret-2"),
        }),
        Event::Connected(Connected {
            session_id: SessionId(Uuid::from_u128(U1_SESSION)),
            uid: uid("u1"),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            device_id: DeviceId::parse("old-phone").unwrap(),
            node_id: NodeId(1),
            peer: "127.0.0.1:40001".into(),
        }),
        Event::Disconnected(Disconnected {
            session_id: SessionId(Uuid::from_u128(U1_SESSION)),
            uid: uid("u1"),
            device_flag: DeviceFlag(1),
            reason: CloseReason::ClientClosed,
        }),
        Event::Connected(Connected {
            session_id: SessionId(Uuid::from_u128(U2_SESSION)),
            uid: uid("u2"),
            device_flag: DeviceFlag(2),
            device_level: DeviceLevel::Slave,
            device_id: DeviceId::parse("old-tablet").unwrap(),
            node_id: NodeId(1),
            peer: "127.0.0.1:40002".into(),
        }),
        Event::SystemUidsAdded(SystemUids {
            uids: vec![uid("robot")],
        }),
    ]
}

/// A data directory as a build before the binary encoding left it after a crash: a lifetime
/// started (a `NodeStarted` v1, the golden file's bytes), tokens, u1's closed session, u2's
/// session left open, a system uid; no view yet. Returns the directory and each event's
/// stored bytes, by seq from 1.
fn old_data_dir() -> (TempDir, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/events/NodeStarted.v1.json");
    let started = std::fs::read_to_string(golden)
        .unwrap()
        .trim_end()
        .to_owned();
    let mut stored = vec![started.into_bytes()];
    let mut records = vec![];
    for (i, event) in old_events().into_iter().enumerate() {
        let rec = RecordedEvent {
            seq: Seq(i as u64 + 2),
            event_id: Uuid::now_v7(),
            recorded_at: 1_795_820_000_100 + i as i64,
            node_id: NodeId(1),
            event,
        };
        stored.push(rec.encode_as_json());
        records.push(rec);
    }
    // Written as the build before wrote it: without sled's compression, a sled key per
    // event (the layout before the packed one, converted when this build opens it).
    let first = RecordedEvent::decode(Seq(1), &stored[0]).unwrap();
    let rows: Vec<(Seq, Vec<u8>, Vec<Uid>)> = std::iter::once(&first)
        .chain(&records)
        .zip(&stored)
        .map(|(rec, bytes)| (rec.seq, bytes.clone(), rec.event.uids().to_vec()))
        .collect();
    crate::log_layout::write_old_layout(&dir.path().join("log"), &rows);
    (dir, stored)
}

/// Every stored event's seq and first byte, read from the stopped directory's log.
fn first_bytes(data_dir: &Path) -> Vec<(u64, u8)> {
    let store = Arc::new(SledStore::open(&data_dir.join("log")).unwrap());
    store
        .read_after(Seq(0), 10_000)
        .unwrap()
        .into_iter()
        .map(|(seq, bytes)| (seq.0, bytes[0]))
        .collect()
}

/// The operator form an old event has always had: its stored JSON with the seq first.
fn operator_form(seq: usize, stored: &[u8]) -> String {
    let json = std::str::from_utf8(stored).unwrap();
    format!("{{\"seq\":{seq},{}", &json[1..])
}

/// How `NodeStarted` v1 of the golden file has always been shown: upcast to v2.
const NODE_STARTED_V1_SHOWN: &str = r#"{"seq":1,"event_id":"01a21f9c-0000-7000-8000-000000000007","recorded_at":1795820000006,"node_id":1,"type":"NodeStarted","version":2,"data":{"node_id":1,"boot_id":"01a21f9c-0000-7000-8000-0000000000bb","version":"0.1.0","api_addr":null,"ws_addr":null}}"#;

async fn admitted(app: &TestApp, uid: &str, token: &str, flag: u8) -> Ws {
    let (ws, answer) = app.ws_connect(uid, token, flag, "new-device").await;
    assert_connected(&answer);
    ws
}

#[tokio::test]
async fn an_old_json_log_is_read_as_it_is_and_grows_in_binary() {
    let (dir, stored) = old_data_dir();
    let old = stored.len() as u64;
    let data_dir = dir.path().to_path_buf();

    let mut app = start_on(&data_dir, vec![]).await;
    // u2's session, open when the old build crashed, is closed as a restart's; the tokens set
    // before work; the system uid is there.
    assert_eq!(app.online(&["u1", "u2"]).await, json!([]));
    assert_eq!(app.system_uids().await, json!(["robot"]));
    let mut u1 = admitted(&app, "u1", "old-secret-1", 1).await;
    let u2 = admitted(&app, "u2", "old-secret-2", 2).await;
    let (_, refused) = app.ws_connect("u1", "not-its-token", 1, "x").await;
    assert_eq!(refused["error"]["code"], 2, "{refused}");
    app.wait_online(
        &["u1", "u2"],
        json!([{"uid":"u1","device_flag":1,"online":1},{"uid":"u2","device_flag":2,"online":1}]),
    )
    .await;
    app.view_caught_up().await;

    // The history of the old log, from the view and from the log's uid index.
    let (status, page) = app.get("/user/sessions?uid=u2").await;
    assert_eq!(status, 200, "{page}");
    let sessions = page["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{page}");
    let crashed = &sessions[1];
    assert_eq!(
        crashed["session_id"],
        Uuid::from_u128(U2_SESSION).to_string()
    );
    assert_eq!(crashed["device_id"], "old-tablet");
    assert_eq!(crashed["reason"], "server_restart");
    let (status, events) = app.get("/events?uid=u1").await;
    assert_eq!(status, 200, "{events}");
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["TokenUpdated", "Connected", "Disconnected", "Connected"]
    );
    let old_u1: Vec<Value> = [2usize, 4, 5]
        .iter()
        .map(|&seq| serde_json::from_str(&operator_form(seq, &stored[seq - 1])).unwrap())
        .collect();
    assert_eq!(events["events"].as_array().unwrap()[..3], old_u1[..]);

    u1.close(None).await.unwrap();
    let _ = close_code(&mut u1).await;
    drop(u2);
    app.wait_offline("u1").await;
    app.stop().await;

    // The log keeps the setting it was created with (sled opens it with no other).
    let conf = std::fs::read(data_dir.join("log/conf")).unwrap();
    assert!(
        String::from_utf8_lossy(&conf).contains("use_compression: false"),
        "{conf:?}"
    );
    // The old events kept their JSON bytes; everything after them is binary.
    let bytes = first_bytes(&data_dir);
    assert!(bytes.len() as u64 > old + 4, "{bytes:?}");
    for (seq, first) in &bytes {
        let expected = if *seq <= old { b'{' } else { binary::FORMAT };
        assert_eq!(*first, expected, "seq {seq}: {bytes:?}");
    }

    // The operator tools read both: `events` shows the old ones exactly as before.
    let dir_arg = data_dir.display().to_string();
    let listed = wkuser(&["events", "--uid", "u1", "--data-dir", &dir_arg]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    let expected_old: Vec<String> = [2usize, 4, 5]
        .iter()
        .map(|&seq| operator_form(seq, &stored[seq - 1]))
        .collect();
    assert_eq!(lines[..3], expected_old[..], "{lines:#?}");
    assert_eq!(
        lines.len(),
        5,
        "the old three, a Connected and a Disconnected: {lines:#?}"
    );
    let all = wkuser(&["events", "--data-dir", &dir_arg]).await;
    let first_line = stdout(&all).lines().next().unwrap().to_owned();
    assert_eq!(first_line, NODE_STARTED_V1_SHOWN);
    let verified = wkuser(&["verify", "--data-dir", &dir_arg]).await;
    assert_exit(&verified, 0);

    // A start over the mixed log finds everything again.
    app.restart().await;
    let _u1 = admitted(&app, "u1", "old-secret-1", 1).await;
    let _u2 = admitted(&app, "u2", "old-secret-2", 2).await;
    assert_eq!(app.system_uids().await, json!(["robot"]));
    app.stop().await;
}

#[tokio::test]
async fn a_mixed_log_moves_into_postgresql_byte_for_byte_and_a_node_there_reads_it() {
    let (dir, stored) = old_data_dir();
    let data_dir = dir.path().to_path_buf();
    let mut app = start_on(&data_dir, vec![]).await;
    app.set_token("u3", "new-secret-3", 1, 0).await;
    app.stop().await;
    let dir_arg = data_dir.display().to_string();

    let db = TestDatabase::create().await;
    let moved = wkuser(&[
        "migrate-to-postgres",
        "--data-dir",
        &dir_arg,
        "--database-url",
        &db.url,
    ])
    .await;
    assert_eq!(moved.status.code(), Some(0), "{}", stderr(&moved));
    let bodies: Vec<(i64, Vec<u8>)> = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let rows = sqlx::query_as("SELECT seq, body FROM log_events ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        rows
    };
    let store = SledStore::open(&data_dir.join("log")).unwrap();
    let in_sled: Vec<(i64, Vec<u8>)> = store
        .read_after(Seq(0), 10_000)
        .unwrap()
        .into_iter()
        .map(|(seq, bytes)| (seq.0 as i64, bytes))
        .collect();
    drop(store);
    assert_eq!(bodies, in_sled, "the bytes moved as they were");
    assert_eq!(bodies[1].1, stored[1], "an old event, still JSON");
    assert_eq!(
        bodies.last().unwrap().1[0],
        binary::FORMAT,
        "a new one, binary"
    );

    let before = wkuser(&["events", "--data-dir", &dir_arg]).await;
    let after = wkuser(&["events", "--database-url", &db.url]).await;
    assert_eq!(stdout(&after), stdout(&before), "{}", stderr(&after));

    // A node on the database admits the tokens of both encodings, and appends binary.
    let node_dir = tempfile::tempdir().unwrap();
    let node = start_node_with(node_dir.path(), "info", &["--database-url", &db.url]).await;
    for (uid, token, flag) in [("u1", "old-secret-1", 1), ("u3", "new-secret-3", 1)] {
        let answer = crate::ops_postgres::connect(&node.ws, uid, token, flag).await;
        assert_connected(&answer);
    }
    node.sigterm_and_wait().await;
    let verified = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_exit(&verified, 0);
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (json, binary_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE get_byte(body, 0) = 123), \
         count(*) FILTER (WHERE get_byte(body, 0) = 1) FROM log_events",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(json, stored.len() as i64);
    assert!(
        binary_rows > bodies.len() as i64 - json,
        "the node appended binary events"
    );
}
