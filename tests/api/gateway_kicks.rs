//! Kicks and device levels (`protocol.md` 3.5): device_quit and master token updates send the
//! exact kick notification (no `id` key) and close within 2 s whatever the client does; master
//! and slave connects replace what the contract says and nothing more; each close is recorded
//! with its reason and seen by `/user/onlinestatus` as soon as the kick is acknowledged.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use wkuser::domain::CloseReason;

use crate::helpers::*;

const DEV_A: &str = "web_1a2b3c4d_1700000000000";
const DEV_B: &str = "web_5e6f7a8b_1700000000001";
const DEV_C: &str = "web_9c0d1e2f_1700000000002";

/// The contract's 2 s for a kicked socket to close, plus a margin for a shared machine.
const KICK_BOUND: Duration = Duration::from_millis(2500);

/// Reads the kick notification (exact bytes, no `id` key) and then the close frame (1000).
async fn assert_kicked(ws: &mut Ws, reason: &str) {
    let text = next_text(ws).await;
    assert_eq!(text, kick_text(reason));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v.get("id").is_none(),
        "a notification carries no id key: {text}"
    );
    assert_eq!(expect_close(ws).await, 1000);
}

/// Reads a close frame (1000) with no notification before it.
async fn assert_closed_silently(ws: &mut Ws) {
    match next_frame(ws).await {
        Frame::Close(Some(1000)) => {}
        other => panic!("expected a silent close 1000, got {other:?}"),
    }
}

#[tokio::test]
async fn device_quit_kicks_its_flag_and_the_old_token_cannot_come_back() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u1", "t", 2, 0).await;
    let mut web = connected(&app, "u1", "t", 1, DEV_A).await;
    let mut other_flag = connected(&app, "u1", "t", 2, DEV_B).await;

    app.device_quit("u1", 1).await;
    // Durable before the 200: offline on flag 1 at once, flag 2 untouched.
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 2, "online": 1}])
    );
    timeout(KICK_BOUND, assert_kicked(&mut web, "device quit"))
        .await
        .expect("kicked and closed within the bound");
    assert_pings(&mut other_flag).await;
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::DeviceQuit]);

    // The kicked client cannot come back with its old token.
    let id = rpc_id();
    let (mut again, answer) =
        first_frame(&app, &easy_connect("u1", "t", DEV_A, 1, now_ms(), &id)).await;
    assert_eq!(answer, auth_fail_text(&id));
    assert_eq!(expect_close(&mut again).await, 1008);
    // A new token lets it in again.
    app.set_token("u1", "t2", 1, 0).await;
    let _back = connected(&app, "u1", "t2", 1, DEV_A).await;
}

#[tokio::test]
async fn device_quit_minus_one_kicks_every_flag() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u1", "t", 2, 1).await;
    app.set_token("u2", "t", 1, 0).await;
    let mut a = connected(&app, "u1", "t", 1, DEV_A).await;
    let mut b = connected(&app, "u1", "t", 1, DEV_B).await;
    let mut c = connected(&app, "u1", "t", 2, DEV_C).await;
    let mut bystander = connected(&app, "u2", "t", 1, DEV_A).await;

    app.device_quit("u1", -1).await;
    assert_eq!(
        app.online(&["u1", "u2"]).await,
        json!([{"uid": "u2", "device_flag": 1, "online": 1}])
    );
    for ws in [&mut a, &mut b, &mut c] {
        timeout(KICK_BOUND, assert_kicked(ws, "device quit"))
            .await
            .expect("kicked and closed within the bound");
    }
    assert_pings(&mut bystander).await;
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::DeviceQuit; 3]);
    for flag in [1, 2] {
        let id = rpc_id();
        let (_ws, answer) =
            first_frame(&app, &easy_connect("u1", "t", DEV_A, flag, now_ms(), &id)).await;
        assert_eq!(
            answer,
            auth_fail_text(&id),
            "flag {flag} still admits the cleared token"
        );
    }
}

#[tokio::test]
async fn a_kicked_client_that_ignores_the_kick_is_closed_within_two_seconds() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 3, 0).await;
    // Bare clients: they never answer the close frame and never pong.
    let mut quitter = app.raw_ws().await;
    quitter.connect_as("u1", "t", 1, DEV_A).await;
    let mut updated = app.raw_ws().await;
    updated.connect_as("u2", "t", 3, DEV_A).await;

    for (ws, kick, reason) in [
        (&mut quitter, "u1", "device quit"),
        (&mut updated, "u2", "token updated"),
    ] {
        if kick == "u1" {
            app.device_quit("u1", 1).await;
        } else {
            app.set_token("u2", "t", 3, 1).await;
        }
        let acknowledged = Instant::now();
        let read_all = async {
            let notification = ws.read_frame().await.expect("the kick notification");
            assert_eq!(notification.text(), kick_text(reason));
            let close = ws.read_frame().await.expect("a close frame");
            assert_eq!(close.close_code(), 1000);
            // The client reads nothing more: it waits for the server to end the stream.
            assert_eq!(ws.read_frame().await, None, "data after the close frame");
            // And the socket is closed, not only half-closed: writing to it soon fails.
            let ping = RawWs::masked_text(&easy_ping("late"));
            eventually(
                &format!("{kick}: a write to the closed socket to fail"),
                async || {
                    use tokio::io::AsyncWriteExt;
                    ws.tcp.write_all(&ping).await.map_err(|e| e.kind())
                },
                Result::is_err,
            )
            .await
            .unwrap_err();
        };
        timeout(KICK_BOUND, read_all)
            .await
            .unwrap_or_else(|_| panic!("{kick}: not closed within {KICK_BOUND:?} of the 200"));
        assert!(acknowledged.elapsed() <= KICK_BOUND);
    }
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::DeviceQuit]);
    assert_eq!(app.close_reasons("u2"), vec![CloseReason::TokenUpdated]);
}

#[tokio::test]
async fn a_master_token_update_kicks_its_flag_and_a_slave_one_kicks_nobody() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u1", "t", 2, 0).await;
    let mut a = connected(&app, "u1", "t", 1, DEV_A).await;
    let mut b = connected(&app, "u1", "t", 1, DEV_B).await;
    let mut c = connected(&app, "u1", "t", 2, DEV_C).await;

    // Level 0, even with a new token: nobody is kicked, the sessions stay.
    app.set_token("u1", "new", 1, 0).await;
    assert_pings(&mut a).await;
    assert_pings(&mut b).await;
    assert!(app.close_reasons("u1").is_empty());

    // Level 1, even with the same token: every connection of flag 1 is kicked.
    app.set_token("u1", "new", 1, 1).await;
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 2, "online": 1}])
    );
    for ws in [&mut a, &mut b] {
        timeout(KICK_BOUND, assert_kicked(ws, "token updated"))
            .await
            .expect("kicked and closed within the bound");
    }
    assert_pings(&mut c).await;
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::TokenUpdated; 2]);
    // The updated token admits; the old one does not.
    let id = rpc_id();
    let (_old, answer) = first_frame(&app, &easy_connect("u1", "t", DEV_A, 1, now_ms(), &id)).await;
    assert_eq!(answer, auth_fail_text(&id));
    let _new = connected(&app, "u1", "new", 1, DEV_A).await;
}

#[tokio::test]
async fn a_master_connect_replaces_the_other_connections_of_its_flag() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 1).await;
    app.set_token("u1", "t", 2, 1).await;
    let mut a = connected(&app, "u1", "t", 1, DEV_A).await;
    let mut other_flag = connected(&app, "u1", "t", 2, DEV_A).await;

    // Another deviceId: the old one is told "login in other device".
    let mut b = connected(&app, "u1", "t", 1, DEV_B).await;
    timeout(KICK_BOUND, assert_kicked(&mut a, "login in other device"))
        .await
        .expect("kicked and closed within the bound");
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::MasterLogin]);

    // The same deviceId (a reconnect): closed without a notification.
    let mut b2 = connected(&app, "u1", "t", 1, DEV_B).await;
    timeout(KICK_BOUND, assert_closed_silently(&mut b))
        .await
        .expect("closed within the bound");
    assert_eq!(
        app.close_reasons("u1"),
        vec![CloseReason::MasterLogin, CloseReason::Replaced]
    );

    assert_pings(&mut b2).await;
    assert_pings(&mut other_flag).await;
    assert_eq!(
        app.online(&["u1"]).await,
        json!([
            {"uid": "u1", "device_flag": 1, "online": 1},
            {"uid": "u1", "device_flag": 2, "online": 1}
        ])
    );
    assert_eq!(app.server().write_path().presence().counts().1, 2);
}

#[tokio::test]
async fn a_slave_connect_replaces_only_its_own_device() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut a = connected(&app, "u1", "t", 1, DEV_A).await;
    let mut b = connected(&app, "u1", "t", 1, DEV_B).await;
    let mut c = connected(&app, "u1", "t", 1, DEV_C).await;
    assert_eq!(app.server().write_path().presence().counts().1, 3);

    let mut b2 = connected(&app, "u1", "t", 1, DEV_B).await;
    timeout(KICK_BOUND, assert_closed_silently(&mut b))
        .await
        .expect("closed within the bound");
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::Replaced]);
    for ws in [&mut a, &mut c, &mut b2] {
        assert_pings(ws).await;
    }
    assert_eq!(app.server().write_path().presence().counts().1, 3);
}

#[tokio::test]
async fn a_kicked_client_that_does_not_read_at_all_is_closed_within_two_seconds() {
    // A slow-reader limit far past the test's length: the kick, not the queue, ends the
    // session, however slow the machine.
    let app = spawn_app_with(&["--slow-reader-limit", "60s"]).await;
    app.set_token("u1", "t", 1, 0).await;
    let (mut unread, writer) = flooding_client(&app, "u1", "t", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.device_quit("u1", 1).await;
    let acknowledged = Instant::now();
    assert_eq!(app.online(&["u1"]).await, json!([]));
    // Whatever was sent before is read and dropped; the stream must end within the bound.
    read_to_end_within(&mut unread, KICK_BOUND).await;
    assert!(acknowledged.elapsed() <= KICK_BOUND);
    timeout(Duration::from_secs(5), writer)
        .await
        .expect("the client's writes end once the server drops the socket")
        .unwrap();
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::DeviceQuit]);
}
