//! Last seen (protocol.md section 8): `POST /user/lastseen` from memory, right after restarts
//! and crashes, in the session history and in `wkuser audit`.

use serde_json::{json, Value};
use wkuser::domain::{CloseReason, Event, RecordedEvent, Seq};

use crate::cli::{dir, stderr, stdout, wkuser};
use crate::helpers::*;

/// The time of the `Disconnected` of the session whose `Connected` names `device`, as the
/// answers show times.
fn ended_at(events: &[RecordedEvent], device: &str) -> String {
    let session = events
        .iter()
        .find_map(|r| match &r.event {
            Event::Connected(c) if c.device_id.as_str() == device => Some(c.session_id),
            _ => None,
        })
        .expect("the device connected");
    let at = events
        .iter()
        .find_map(|r| match &r.event {
            Event::Disconnected(d) if d.session_id == session => Some(r.recorded_at),
            _ => None,
        })
        .expect("the session ended");
    wkuser::human::format_ms(at)
}

async fn lastseen(app: &TestApp, uids: Value) -> Value {
    let (status, body) = app.post("/user/lastseen", &uids).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_row_per_flag_ever_seen_uids_in_request_order_null_while_online() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u1", "t", 2, 0).await;
    app.set_token("u2", "t", 3, 0).await;
    app.set_token("never", "t", 1, 0).await;
    let (mut a, _) = app.ws_connect("u1", "t", 1, "a").await;
    let (_b, _) = app.ws_connect("u1", "t", 2, "b").await;
    let (mut c, _) = app.ws_connect("u2", "t", 3, "c").await;
    let (_d, _) = app.ws_connect("u2", "t", 3, "d").await;
    a.close(None).await.unwrap();
    c.close(None).await.unwrap();
    app.wait_online(
        &["u1", "u2"],
        json!([{"uid": "u1", "device_flag": 2, "online": 1}, {"uid": "u2", "device_flag": 3, "online": 1}]),
    )
    .await;
    let events = app.events();
    let answer = lastseen(&app, json!(["u2", "nobody", "never", "u1", "u2"])).await;
    assert_eq!(
        answer,
        json!([
            // Another device of u2's flag 3 is still open: online, whatever ended before.
            {"uid": "u2", "device_flag": 3, "online": 1, "last_seen_at": null},
            {"uid": "u1", "device_flag": 1, "online": 0, "last_seen_at": ended_at(&events, "a")},
            {"uid": "u1", "device_flag": 2, "online": 1, "last_seen_at": null},
        ])
    );
    assert_eq!(lastseen(&app, json!([])).await, json!([]));
}

#[tokio::test]
async fn its_body_is_refused_as_onlinestatus_refuses_it() {
    let app = spawn_app_with(&["--max-uids-per-request", "2"]).await;
    for body in [
        "{}",
        "[1]",
        r#"["bad uid"]"#,
        r#"["a","b","c"]"#,
        "not json",
        r#"["____system"]"#,
    ] {
        let seen = app.post_raw("/user/lastseen", body).await;
        let online = app.post_raw("/user/onlinestatus", body).await;
        assert_eq!(seen.0, 400, "{body}: {seen:?}");
        assert_eq!(seen, online, "{body}");
    }
}

#[tokio::test]
async fn last_seen_is_right_after_a_restart_and_in_the_history_and_the_audit() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u1", "t", 2, 0).await;
    let (mut a, _) = app.ws_connect("u1", "t", 1, "a").await;
    let (_b, _) = app.ws_connect("u1", "t", 2, "b").await;
    a.close(None).await.unwrap();
    app.wait_online(
        &["u1"],
        json!([{"uid": "u1", "device_flag": 2, "online": 1}]),
    )
    .await;
    let before = app.events();
    let a_ended = ended_at(&before, "a");
    let (status, page) = app.get("/user/sessions?uid=u1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["last_seen"],
        json!([{"device_flag": 1, "device_name": "iOS", "last_seen_at": a_ended}])
    );
    // The stop closes b (server_shutdown); the restart reads last seen from the view.
    app.restart().await;
    let after = app.events();
    let b_ended = ended_at(&after, "b");
    let expected = json!([
        {"uid": "u1", "device_flag": 1, "online": 0, "last_seen_at": a_ended},
        {"uid": "u1", "device_flag": 2, "online": 0, "last_seen_at": b_ended},
    ]);
    assert_eq!(lastseen(&app, json!(["u1"])).await, expected);
    let (_, page) = app.get("/user/sessions?uid=u1").await;
    assert_eq!(
        page["last_seen"],
        json!([
            {"device_flag": 1, "device_name": "iOS", "last_seen_at": a_ended},
            {"device_flag": 2, "device_name": "Android", "last_seen_at": b_ended},
        ])
    );
    app.stop().await;
    let audit = wkuser(&["audit", "u1", "--data-dir", &dir(&app)]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    assert!(
        stdout(&audit).contains(&format!(
            "last seen: iOS (flag 1) {a_ended}, Android (flag 2) {b_ended}"
        )),
        "{}",
        stdout(&audit)
    );
}

#[tokio::test]
async fn after_a_crash_the_sessions_it_left_are_last_seen_when_the_restart_closed_them() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = start_node(dir.path()).await;
    let set = json!({"uid": "u", "token": "t", "device_flag": 1, "device_level": 0});
    node.post_ok(&http, "/user/token", set).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text(easy_connect(
            "u",
            "t",
            "dev",
            1,
            now_ms(),
            "c",
        )),
    )
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await.unwrap()["result"]["reasonCode"], 1);
    node.sigkill().await;

    let node = start_node(dir.path()).await;
    let answer: Value = http
        .post(format!("{}/user/lastseen", node.api))
        .body(r#"["u"]"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    node.sigterm_and_wait().await;
    let log = wkuser::ops::open_stopped_log(dir.path()).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    log.close().await;
    let restart_close = events
        .iter()
        .find(|r| matches!(&r.event, Event::Disconnected(d) if d.reason == CloseReason::ServerRestart))
        .expect("the restart closed the session");
    assert_eq!(
        answer,
        json!([{"uid": "u", "device_flag": 1, "online": 0,
                "last_seen_at": wkuser::human::format_ms(restart_close.recorded_at)}])
    );
}

#[tokio::test]
async fn a_view_made_before_last_seen_is_filled_from_its_sessions_when_migrated() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    for device in ["a", "b"] {
        let (mut ws, _) = app.ws_connect("u1", "t", 1, device).await;
        ws.close(None).await.unwrap();
        app.wait_offline("u1").await;
    }
    let b_ended = ended_at(&app.events(), "b");
    app.stop().await;
    // As the first schema left it: no table, no record of its migration.
    let view = app.data_dir.join("view.sqlite");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE last_seen")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let fresh = start_on(&app.data_dir, Vec::new()).await;
    assert_eq!(
        lastseen(&fresh, json!(["u1"])).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 0, "last_seen_at": b_ended}])
    );
}
