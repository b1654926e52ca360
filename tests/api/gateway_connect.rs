//! The gateway's first frame (`protocol.md` 3.1, 3.2): the EasySDK's connect accepted as it is
//! written, the success result's exact bytes after a durable `Connected`, the auth failure for
//! every bad credential or param, a silent 1008 for anything that is not a connect (text that
//! is not UTF-8 included), and a silent 1002 for a frame that breaks RFC 6455.

use serde_json::{json, Value};
use wkuser::domain::{DeviceFlag, Event};

use crate::helpers::*;

#[tokio::test]
async fn easysdk_connect_gets_the_exact_result_after_a_durable_connected() {
    let app = spawn_app_with(&["--node-id", "7"]).await;
    app.set_token("u1", "t1", 1, 0).await;
    let id = "5f0e1f7c-7f2b-4c43-9d2c-4b8e0d1f2a3b";
    let device = "web_1a2b3c4d_1700000000000";
    let ts = 1_700_000_000_000i64;
    let before = now_ms();
    let (mut ws, answer) = first_frame(&app, &easy_connect("u1", "t1", device, 1, ts, id)).await;
    let after = now_ms();
    // Online as soon as the result arrives: no sleep, no poll.
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );

    let v: Value = serde_json::from_str(&answer).unwrap();
    let diff = v["result"]["timeDiff"]
        .as_i64()
        .expect("timeDiff is an integer");
    assert!(
        (before - ts..=after - ts).contains(&diff),
        "timeDiff {diff} is not server ms - clientTimestamp"
    );
    assert_eq!(
        answer,
        format!(
            r#"{{"jsonrpc":"2.0","id":"{id}","result":{{"serverKey":"","salt":"","timeDiff":{diff},"reasonCode":1,"serverVersion":1,"nodeId":7}}}}"#
        )
    );

    // The Connected event was durable before the answer.
    let recorded = app
        .events()
        .into_iter()
        .find(|r| matches!(r.event, Event::Connected(_)))
        .expect("a Connected event");
    assert!(app.server().write_path().log().last_durable() >= recorded.seq);
    assert_eq!(recorded.node_id.0, 7);
    let Event::Connected(c) = recorded.event else {
        unreachable!()
    };
    assert_eq!(c.uid.as_str(), "u1");
    assert_eq!(c.device_flag, DeviceFlag(1));
    assert_eq!(c.device_id.as_str(), device);
    assert_eq!(c.node_id.0, 7);

    assert_pings(&mut ws).await;
}

#[tokio::test]
async fn optional_fields_may_be_absent_and_jsonrpc_may_be_present() {
    let app = spawn_app().await;
    app.set_token("u0", "t0", 0, 0).await;
    let id = rpc_id();
    // No jsonrpc, no deviceFlag (so 0), no deviceId, no clientTimestamp (so timeDiff 0).
    let (mut ws, answer) = first_frame(
        &app,
        &format!(r#"{{"method":"connect","params":{{"uid":"u0","token":"t0"}},"id":"{id}"}}"#),
    )
    .await;
    assert_eq!(
        answer,
        format!(
            r#"{{"jsonrpc":"2.0","id":"{id}","result":{{"serverKey":"","salt":"","timeDiff":0,"reasonCode":1,"serverVersion":1,"nodeId":1}}}}"#
        )
    );
    assert_eq!(
        app.online(&["u0"]).await,
        json!([{"uid": "u0", "device_flag": 0, "online": 1}])
    );
    let made = app.connected_events("u0");
    assert_eq!(made.len(), 1);
    assert!(
        !made[0].device_id.as_str().is_empty(),
        "the server makes a deviceId"
    );
    assert_pings(&mut ws).await;

    // `"jsonrpc":"2.0"` is accepted too, and the ignored EasySDK fields do no harm.
    app.set_token("u2", "t2", 1, 0).await;
    let id = rpc_id();
    let (_ws2, answer) = first_frame(
        &app,
        &format!(
            r#"{{"jsonrpc":"2.0","method":"connect","params":{{"uid":"u2","token":"t2","deviceFlag":1,"version":1,"clientKey":"k","header":{{}}}},"id":"{id}"}}"#
        ),
    )
    .await;
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["result"]["reasonCode"], 1, "{answer}");

    // Without deviceFlag the flag is 0: a token registered only for flag 1 does not admit it.
    let id = rpc_id();
    let (mut ws3, answer) = first_frame(
        &app,
        &format!(r#"{{"method":"connect","params":{{"uid":"u2","token":"t2"}},"id":"{id}"}}"#),
    )
    .await;
    assert_eq!(answer, auth_fail_text(&id));
    assert_eq!(expect_close(&mut ws3).await, 1008);
}

/// Sends `frame` (with `{id}` replaced) as a first frame; asserts the exact auth failure, then
/// a close with 1008.
async fn assert_auth_fails(app: &TestApp, case: &str, frame: &str) {
    let id = rpc_id();
    let (mut ws, answer) = first_frame(app, &frame.replace("{id}", &id)).await;
    assert_eq!(answer, auth_fail_text(&id), "case: {case}");
    assert_eq!(expect_close(&mut ws).await, 1008, "case: {case}");
}

#[tokio::test]
async fn bad_credentials_and_bad_params_answer_auth_fail_then_close_1008() {
    let app = spawn_app().await;
    app.set_token("u1", "right", 1, 0).await;
    app.set_token("gone", "old", 1, 1).await;
    app.device_quit("gone", 1).await;
    let dev = "web_1a2b3c4d_1700000000000";
    let ts = now_ms();
    let connect =
        |uid: &str, token: &str, flag: u8| easy_connect(uid, token, dev, flag, ts, "{id}");
    let cases = [
        ("unknown uid", connect("nobody", "right", 1)),
        ("known uid, unregistered flag", connect("u1", "right", 2)),
        ("wrong token", connect("u1", "wrong", 1)),
        ("token cleared by device_quit", connect("gone", "old", 1)),
        ("invalid uid (space)", connect("a b", "right", 1)),
        ("invalid uid (@)", connect("a@b", "right", 1)),
        (
            "missing uid",
            r#"{"method":"connect","params":{"token":"right","deviceFlag":1},"id":"{id}"}"#.into(),
        ),
        (
            "non-string uid",
            r#"{"method":"connect","params":{"uid":5,"token":"right","deviceFlag":1},"id":"{id}"}"#
                .into(),
        ),
        (
            "missing token",
            r#"{"method":"connect","params":{"uid":"u1","deviceFlag":1},"id":"{id}"}"#.into(),
        ),
        (
            "non-string token",
            r#"{"method":"connect","params":{"uid":"u1","token":7,"deviceFlag":1},"id":"{id}"}"#
                .into(),
        ),
        (
            "deviceFlag 256",
            r#"{"method":"connect","params":{"uid":"u1","token":"right","deviceFlag":256},"id":"{id}"}"#
                .into(),
        ),
        (
            "deviceFlag -1",
            r#"{"method":"connect","params":{"uid":"u1","token":"right","deviceFlag":-1},"id":"{id}"}"#
                .into(),
        ),
        ("no params", r#"{"method":"connect","id":"{id}"}"#.into()),
    ];
    for (case, frame) in &cases {
        assert_auth_fails(&app, case, frame).await;
    }
    assert_eq!(app.online(&["u1", "gone", "nobody"]).await, json!([]));
    assert!(
        !app.events()
            .iter()
            .any(|r| matches!(r.event, Event::Connected(_))),
        "a refused connect recorded a session"
    );
    assert_eq!(
        app.server().write_path().subscribers().live().len(),
        0,
        "a refused connect stayed registered for close orders"
    );
    // The right token still works after all that.
    let _ws = connected(&app, "u1", "right", 1, dev).await;
}

#[tokio::test]
async fn other_first_frames_are_closed_1008_without_a_reply() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let params = r#"{"uid":"u1","token":"t","deviceFlag":1}"#;
    let cases = [
        ("not JSON", "hello".to_string()),
        ("truncated JSON", r#"{"method":"connect","#.to_string()),
        ("not an object", "[1,2]".to_string()),
        ("a string", r#""connect""#.to_string()),
        (
            "another method",
            format!(r#"{{"method":"ping","id":"{}"}}"#, rpc_id()),
        ),
        (
            "no method",
            format!(r#"{{"params":{params},"id":"{}"}}"#, rpc_id()),
        ),
        (
            "missing id",
            format!(r#"{{"method":"connect","params":{params}}}"#),
        ),
        (
            "null id",
            format!(r#"{{"method":"connect","params":{params},"id":null}}"#),
        ),
        (
            "numeric id",
            format!(r#"{{"method":"connect","params":{params},"id":1}}"#),
        ),
        (
            "jsonrpc 1.0",
            format!(
                r#"{{"jsonrpc":"1.0","method":"connect","params":{params},"id":"{}"}}"#,
                rpc_id()
            ),
        ),
    ];
    for (case, frame) in &cases {
        let mut ws = app.ws_open().await;
        send_text(&mut ws, frame.as_str()).await;
        match next_frame(&mut ws).await {
            Frame::Close(Some(code)) => assert_eq!(code, 1008, "case: {case}"),
            other => panic!("case {case}: expected a close 1008 and nothing else, got {other:?}"),
        }
    }
    assert_eq!(app.online(&["u1"]).await, json!([]));
}

#[tokio::test]
async fn a_first_frame_that_is_not_utf8_is_closed_1008_without_a_reply() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let connect = easy_connect("u1", "t", "d1", 1, now_ms(), "c1");
    // A connect that would succeed but for one byte that is never UTF-8 (in its deviceId), as
    // one frame, and as a valid fragment followed by a broken one.
    let mut whole = connect.clone().into_bytes();
    whole[connect.find("\"d1\"").unwrap() + 1] = 0xff;
    let split = connect.find("\"token\"").unwrap();
    let mut fragments = RawWs::masked(0x1, false, &connect.as_bytes()[..split]);
    let broken = [b"\xc3\x28".as_slice(), &connect.as_bytes()[split..]].concat();
    fragments.extend(RawWs::masked(0x0, true, &broken));
    for (case, bytes) in [
        ("one frame", RawWs::masked(0x1, true, &whole)),
        ("fragments", fragments),
    ] {
        let mut raw = app.raw_ws().await;
        raw.tcp.write_all(&bytes).await.unwrap();
        let close = raw.read_final_close(case).await;
        assert_eq!(close.close_code(), 1008, "{case}");
    }
    assert_eq!(app.online(&["u1"]).await, json!([]));
    assert!(app.connected_events("u1").is_empty());
}

#[tokio::test]
async fn a_first_frame_that_breaks_rfc6455_is_closed_1002_without_a_reply() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    // A connect that would succeed but for its framing.
    let connect = easy_connect("u1", "t", "d1", 1, now_ms(), "c1");
    let mut reserved = RawWs::masked_text(&connect);
    reserved[0] |= 0x40;
    for (case, bytes, reason) in [
        ("RSV1 set", reserved, "reserved bits set"),
        ("unmasked", RawWs::unmasked_text(&connect), "unmasked frame"),
    ] {
        let mut raw = app.raw_ws().await;
        raw.tcp.write_all(&bytes).await.unwrap();
        let close = raw.read_final_close(case).await;
        assert_eq!(
            (close.close_code(), close.close_reason()),
            (1002, reason),
            "{case}"
        );
    }
    assert_eq!(app.online(&["u1"]).await, json!([]));
    assert!(app.connected_events("u1").is_empty());
}

#[tokio::test]
async fn extreme_client_timestamps_neither_break_the_session_nor_leave_it_online() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 1, 0).await;
    for (uid, ts) in [("u1", i64::MIN), ("u2", i64::MAX)] {
        let id = rpc_id();
        let before = now_ms();
        let (mut ws, answer) = first_frame(&app, &easy_connect(uid, "t", "d1", 1, ts, &id)).await;
        let after = now_ms();
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["id"], json!(id));
        assert_eq!(v["result"]["reasonCode"], 1, "{answer}");
        // server ms - clientTimestamp, saturated where i64 cannot hold it.
        let diff = v["result"]["timeDiff"].as_i64().expect("an integer");
        let lo = before.saturating_sub(ts);
        let hi = after.saturating_sub(ts);
        assert!((lo..=hi).contains(&diff), "{uid}: timeDiff {diff}");
        assert_eq!(
            app.online(&[uid]).await,
            json!([{"uid": uid, "device_flag": 1, "online": 1}])
        );
        let bye = rpc_id();
        send_text(
            &mut ws,
            format!(r#"{{"method":"disconnect","id":"{bye}"}}"#),
        )
        .await;
        assert_eq!(next_text(&mut ws).await, empty_result(&bye));
        assert_eq!(expect_close(&mut ws).await, 1000);
        app.wait_offline(uid).await;
        assert_eq!(
            app.close_reasons(uid),
            vec![wkuser::domain::CloseReason::ClientClosed]
        );
    }
}

#[tokio::test]
async fn a_plain_http_request_on_the_websocket_port_gets_426_in_the_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.server().ws_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("answered and closed within 5 s")
        .expect("read without a reset");
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole HTTP answer");
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], 426);
    assert!(body["msg"].as_str().unwrap().contains("WebSocket"));

    // The gateway still upgrades real clients, and the refused request left no trace.
    app.set_token("u1", "t1", 1, 0).await;
    let (_ws, answer) = app.ws_connect("u1", "t1", 1, "d1").await;
    assert_connected(&answer);
    assert_eq!(
        app.events()
            .iter()
            .filter(|r| matches!(r.event, Event::Connected(_)))
            .count(),
        1
    );
}
