//! A session after connect (`protocol.md` 3.1, 3.3, 3.4, 3.5): ping, the client's disconnect,
//! ignored notifications, unsupported methods, parse errors, the message size limit, binary
//! frames, the first-frame and idle limits, slow readers, and the graceful stop; each close
//! recorded with its reason, and the last frames of a close (kick notification, close frame)
//! reaching a client whose queue was full for a moment. Text that is not UTF-8 and frames that
//! break RFC 6455 are in `gateway_bad_frames.rs`.

use serde_json::json;
use wkuser::domain::CloseReason;

use crate::helpers::*;

pub(crate) const DEV: &str = "web_1a2b3c4d_1700000000000";

#[tokio::test]
async fn ping_is_answered_with_an_empty_result_echoing_the_id() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    let id = "0b9a4c7e-2f1d-4e8a-9c3b-5d6e7f8a9b0c";
    send_text(&mut ws, format!(r#"{{"method":"ping","id":"{id}"}}"#)).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"jsonrpc":"2.0","id":"0b9a4c7e-2f1d-4e8a-9c3b-5d6e7f8a9b0c","result":{}}"#
    );
    // Twice in a row, and with "jsonrpc":"2.0" present.
    assert_pings(&mut ws).await;
    send_text(&mut ws, r#"{"jsonrpc":"2.0","method":"ping","id":"p2"}"#).await;
    assert_eq!(next_text(&mut ws).await, empty_result("p2"));
    // Numbers outside the contract's string ids come back as they were written, those that
    // serde_json would hold as floats too.
    for id in ["7", "1e2", "-0.0", "12345678901234567890123"] {
        send_text(&mut ws, format!(r#"{{"method":"ping","id":{id}}}"#)).await;
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
        );
    }
}

#[tokio::test]
async fn client_disconnect_request_is_answered_then_closed_as_client_closed() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    let id = rpc_id();
    send_text(&mut ws, format!(r#"{{"method":"disconnect","id":"{id}"}}"#)).await;
    assert_eq!(next_text(&mut ws).await, empty_result(&id));
    assert_eq!(expect_close(&mut ws).await, 1000);
    app.wait_offline("u1").await;
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ClientClosed]);
}

#[tokio::test]
async fn client_close_frame_and_dropped_socket_are_client_closed() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    ws.close(None).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws).await,
        Frame::Close(_) | Frame::Gone
    ));
    app.wait_offline("u1").await;

    let ws2 = connected(&app, "u2", "t", 1, DEV).await;
    drop(ws2);
    app.wait_offline("u2").await;

    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ClientClosed]);
    assert_eq!(app.close_reasons("u2"), vec![CloseReason::ClientClosed]);
}

#[tokio::test]
async fn recvack_is_ignored_and_the_session_stays_open() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    send_text(
        &mut ws,
        r#"{"method":"recvack","params":{"header":{"noPersist":false,"redDot":true,"syncOnce":false},"messageId":"1234567890","messageSeq":1}}"#,
    )
    .await;
    // The next frame is the ping's answer: nothing was sent for the notification.
    assert_pings(&mut ws).await;
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );
}

#[tokio::test]
async fn a_disconnect_notification_is_ignored_and_the_session_stays_open() {
    // Only the request form (with an id) closes; a notification is ignored like any other.
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    send_text(&mut ws, r#"{"method":"disconnect"}"#).await;
    send_text(
        &mut ws,
        r#"{"jsonrpc":"2.0","method":"disconnect","params":{}}"#,
    )
    .await;
    // The next frame is the ping's answer: nothing was sent for the notifications.
    assert_pings(&mut ws).await;
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );
    assert!(app.close_reasons("u1").is_empty());
}

#[tokio::test]
async fn send_and_subscribe_are_not_supported_and_the_session_stays_open() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    for frame in [
        r#"{"method":"send","params":{"header":{"redDot":true},"setting":0,"clientMsgNo":"m1","channelId":"u2","channelType":1,"payload":{"type":1,"content":"hi"}},"id":"{id}"}"#,
        r#"{"method":"subscribe","params":{"channelId":"g1","channelType":2},"id":"{id}"}"#,
        r#"{"method":"whatever","id":"{id}"}"#,
    ] {
        let id = rpc_id();
        send_text(&mut ws, frame.replace("{id}", &id)).await;
        assert_eq!(
            next_text(&mut ws).await,
            format!(
                r#"{{"jsonrpc":"2.0","id":"{id}","error":{{"code":-32601,"message":"method not supported by this server"}}}}"#
            )
        );
    }
    assert_pings(&mut ws).await;
}

#[tokio::test]
async fn unparsable_frames_get_a_parse_error_and_the_session_stays_open() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    let null_id = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#;
    for (frame, expected) in [
        ("not json at all".to_string(), null_id.to_string()),
        (
            r#"{"method":"ping","id":"p"#.to_string(),
            null_id.to_string(),
        ),
        ("[]".to_string(), null_id.to_string()),
        (
            r#"{"id":"x1","params":{}}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":"x1","error":{"code":-32700,"message":"parse error"}}"#
                .to_string(),
        ),
    ] {
        send_text(&mut ws, frame.as_str()).await;
        assert_eq!(next_text(&mut ws).await, expected, "frame: {frame}");
    }
    assert_pings(&mut ws).await;
}

#[tokio::test]
async fn a_message_of_exactly_the_limit_is_allowed_and_one_byte_more_closes_1009() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;

    // A ping padded with whitespace to exactly 65,536 bytes.
    let ping = easy_ping("big");
    let padded = format!("{ping}{}", " ".repeat(65_536 - ping.len()));
    assert_eq!(padded.len(), 65_536);
    send_text(&mut ws, padded).await;
    assert_eq!(next_text(&mut ws).await, empty_result("big"));

    // A ping with an extra field, exactly 65,536 bytes.
    let head = r#"{"method":"ping","id":"big2","pad":""#;
    let extra = format!("{head}{}\"}}", "x".repeat(65_536 - head.len() - 2));
    assert_eq!(extra.len(), 65_536);
    send_text(&mut ws, extra).await;
    assert_eq!(next_text(&mut ws).await, empty_result("big2"));

    // One byte more.
    let over = format!("{ping}{}", " ".repeat(65_537 - ping.len()));
    assert_eq!(over.len(), 65_537);
    send_text(&mut ws, over).await;
    assert_eq!(expect_close(&mut ws).await, 1009);
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ProtocolError]);
    assert_eq!(app.online(&["u1"]).await, json!([]));
}

#[tokio::test]
async fn the_size_limit_applies_to_the_message_after_reassembly_of_fragments() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut raw = app.raw_ws().await;
    raw.connect_as("u1", "t", 1, DEV).await;

    // A small ping in three fragments.
    raw.send_fragments(&[r#"{"method":"pi"#, r#"ng","id":"#, r#""f1"}"#])
        .await;
    assert_eq!(raw.read_frame().await.unwrap().text(), empty_result("f1"));

    // Exactly 65,536 bytes in two fragments of 32,768.
    let ping = easy_ping("f2");
    let whole = format!("{ping}{}", " ".repeat(65_536 - ping.len()));
    raw.send_fragments(&[&whole[..32_768], &whole[32_768..]])
        .await;
    assert_eq!(raw.read_frame().await.unwrap().text(), empty_result("f2"));

    // 65,537 bytes in two fragments, each well under the limit.
    let ping = easy_ping("f3");
    let whole = format!("{ping}{}", " ".repeat(65_537 - ping.len()));
    raw.send_fragments(&[&whole[..32_768], &whole[32_768..]])
        .await;
    assert_eq!(raw.read_frame().await.unwrap().close_code(), 1009);
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ProtocolError]);
    assert_eq!(app.online(&["u1"]).await, json!([]));
}

#[tokio::test]
async fn a_binary_frame_after_connect_closes_1003_as_protocol_error() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut ws).await, 1003);
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ProtocolError]);
    assert_eq!(app.online(&["u1"]).await, json!([]));
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_1008_at_the_first_frame_limit() {
    let app = spawn_app_with(&["--first-frame-timeout", "300ms"]).await;
    let mut ws = app.ws_open().await;
    assert_eq!(expect_close(&mut ws).await, 1008);
    assert!(app.events().iter().all(|r| !matches!(
        r.event,
        wkuser::domain::Event::Connected(_) | wkuser::domain::Event::Disconnected(_)
    )));
}

#[tokio::test]
async fn an_idle_session_is_closed_1000_as_idle_timeout() {
    let app = spawn_app_with(&["--idle-timeout", "1s"]).await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    // Inbound frames keep it open past the limit: a ping every 250 ms for 1.5 s.
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        assert_pings(&mut ws).await;
    }
    assert!(app.close_reasons("u1").is_empty());
    // Then silence.
    assert_eq!(expect_close(&mut ws).await, 1000);
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::IdleTimeout]);
    assert_eq!(app.online(&["u1"]).await, json!([]));
}

#[tokio::test]
async fn a_graceful_stop_closes_sessions_1001_and_a_restart_leaves_nobody_online() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 2, 1).await;
    let mut a = connected(&app, "u1", "t", 1, DEV).await;
    let mut b = connected(&app, "u2", "t", 2, "web_99999999_1700000000001").await;
    // A socket that has not connected yet is closed too.
    let mut pending = app.ws_open().await;
    let (_, code_a, code_b, code_p) = tokio::join!(
        app.stop(),
        expect_close(&mut a),
        expect_close(&mut b),
        expect_close(&mut pending)
    );
    assert_eq!((code_a, code_b, code_p), (1001, 1001, 1001));

    let fresh = start_on(&app.data_dir, vec![]).await;
    assert_eq!(fresh.close_reasons("u1"), vec![CloseReason::ServerShutdown]);
    assert_eq!(fresh.close_reasons("u2"), vec![CloseReason::ServerShutdown]);
    assert_eq!(fresh.online(&["u1", "u2"]).await, json!([]));
    // The tokens survived the restart: both can connect again.
    let _a = connected(&fresh, "u1", "t", 1, DEV).await;
    assert_eq!(
        fresh.online(&["u1", "u2"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );
    let mut fresh = fresh;
    fresh.stop().await;
}

#[tokio::test]
async fn a_burst_of_pipelined_requests_is_answered_in_full_and_in_order() {
    // More requests at once than the outbound queue holds (256): a client that reads its
    // answers is not a slow consumer, however many frames arrive in one read.
    const N: usize = 1000;
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    use futures_util::SinkExt;
    for i in 0..N {
        ws.feed(tokio_tungstenite::tungstenite::Message::text(easy_ping(
            &format!("p{i}"),
        )))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..N {
        assert_eq!(
            next_text(&mut ws).await,
            empty_result(&format!("p{i}")),
            "answer {i}"
        );
    }
    assert_pings(&mut ws).await;
    assert!(app.close_reasons("u1").is_empty());
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_closed_as_slow_consumer() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let (mut unread, writer) = flooding_client(&app, "u1", "t", 1).await;
    closed_as_slow_consumer(&app, "u1").await;
    // The client reads nothing, so nothing orders this check after the in-memory update that
    // follows the durable `Disconnected`: wait for it rather than race it.
    app.wait_offline("u1").await;
    // The socket is gone: the client's writes fail, and reading reaches the end.
    tokio::time::timeout(std::time::Duration::from_secs(5), writer)
        .await
        .expect("the client's writes end once the server drops the socket")
        .unwrap();
    read_to_end_within(&mut unread, std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_graceful_stop_is_not_held_up_by_clients_that_ignore_it() {
    // A slow-reader limit far past the test's length: the stop, not the queue, ends the
    // session that does not read, however slow the machine.
    let mut app = spawn_app_with(&["--slow-reader-limit", "60s"]).await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 1, 0).await;
    // One never answers the close frame; the other does not read at all.
    let mut silent = app.raw_ws().await;
    silent.connect_as("u1", "t", 1, DEV).await;
    let (mut unread, writer) = flooding_client(&app, "u2", "t", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("the stop finished");
    let close = silent.read_frame().await.expect("a close frame");
    assert_eq!(close.close_code(), 1001);
    assert_eq!(silent.read_frame().await, None);
    read_to_end_within(&mut unread, std::time::Duration::from_secs(5)).await;
    writer.abort();

    let fresh = start_on(&app.data_dir, vec![]).await;
    assert_eq!(fresh.close_reasons("u1"), vec![CloseReason::ServerShutdown]);
    assert_eq!(fresh.close_reasons("u2"), vec![CloseReason::ServerShutdown]);
    assert_eq!(fresh.online(&["u1", "u2"]).await, json!([]));
    let mut fresh = fresh;
    fresh.stop().await;
}

/// Reads until the server's answer to our close frame (RFC 6455 5.5.1); its code, or `None`
/// when the connection ended without one.
async fn close_reply(ws: &mut Ws) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("no close reply within 5 s"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(1005, |f| u16::from(f.code)))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_close_frame_is_answered_with_a_close_frame_before_and_after_connect() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let bye = || {
        Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
    };

    let mut ws = connected(&app, "u1", "t", 1, DEV).await;
    ws.send(bye()).await.unwrap();
    assert_eq!(
        close_reply(&mut ws).await,
        Some(1000),
        "the close is answered"
    );

    let mut early = app.ws_open().await;
    early.send(bye()).await.unwrap();
    assert_eq!(
        close_reply(&mut early).await,
        Some(1000),
        "also before connect"
    );
}

#[tokio::test]
async fn a_close_the_log_refused_is_recorded_once_the_log_recovers() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (mut app, failing, _) = flaky_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, DEV).await;

    failing.store(true, Ordering::SeqCst);
    // The socket still closes at once: the session does not wait for the log.
    ws.close(None).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws).await,
        Frame::Close(_) | Frame::Gone
    ));
    // The session has ended (it leaves the registry of live connections just before it tries
    // to record its close); give that append a moment to fail.
    eventually(
        "the session to leave the registry of live connections",
        async || app.server().write_path().subscribers().live().len(),
        |live| *live == 0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing durable, so memory still shows the session.
    assert_eq!(
        app.online(&["u1"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );

    failing.store(false, Ordering::SeqCst);
    eventually(
        "u1 offline with its close recorded once, after the log recovered",
        async || (app.online(&["u1"]).await, app.close_reasons("u1")),
        |(online, reasons)| *online == json!([]) && *reasons == vec![CloseReason::ClientClosed],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_slow_reader_that_reads_again_gets_its_1008_close() {
    use std::time::Duration;
    // A short queue: what the client must read before the close stays small.
    let app = spawn_app_with(&["--outbound-queue", "16"]).await;
    app.set_token("u1", "t", 1, 0).await;
    let (mut unread, writer) = flooding_client(&app, "u1", "t", 1).await;
    closed_as_slow_consumer(&app, "u1").await;
    // The session ended with its queue full. The client reads again at once, and fast: the
    // close waits for room in the queue (at most a second), so it still reaches the client.
    let started = tokio::time::Instant::now();
    set_recv_buffer(&unread, 1 << 20);
    let (_, code) = read_until_close(&mut unread, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1008), "read for {:?}", started.elapsed());
    writer.abort();
    app.wait_offline("u1").await;
}

/// Waits until the session of `uid` was recorded closed as a slow consumer, its only close.
async fn closed_as_slow_consumer(app: &TestApp, uid: &str) {
    eventually(
        &format!("{uid} closed as a slow consumer"),
        async || app.close_reasons(uid),
        |reasons| *reasons == vec![CloseReason::SlowConsumer],
    )
    .await;
}

/// Connects `uid` on a bare socket and sends it pings with long answers, none of them read,
/// until a write stalls: the server has stopped reading, which it does only while the
/// session's outbound queue is full. Returns the socket's halves, the writing one to keep.
async fn stalled_session(
    app: &TestApp,
    uid: &str,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    app.set_token(uid, "t", 1, 0).await;
    let mut raw = RawWs::open_with_recv_buffer(&app.ws, 4096).await;
    raw.connect_as(uid, "t", 1, DEV).await;
    let ping = RawWs::masked_text(&easy_ping(&"x".repeat(60_000)));
    let (unread, mut write_half) = raw.tcp.into_split();
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_millis(100), write_half.write_all(&ping)).await {
            Ok(written) => written.expect("the server reads while its queue has room"),
            Err(_) => return (unread, write_half),
        }
    }
    panic!("the server never stopped reading");
}

#[tokio::test]
async fn the_slow_reader_limit_is_the_one_configured() {
    use std::time::Duration;
    // Past the default limit of 1 s, a session stalled under a limit of 60 s is still open.
    let app = spawn_app_with(&["--outbound-queue", "16", "--slow-reader-limit", "60s"]).await;
    let (_unread, _write_half) = stalled_session(&app, "u1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        app.close_reasons("u1").is_empty(),
        "closed before its limit"
    );
    assert_eq!(app.online(&["u1"]).await.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_kicked_client_that_had_stopped_reading_still_gets_the_kick_notification() {
    use std::time::Duration;
    // A slow-reader limit far past the test's length, so that the stalled session is still
    // open when the kick comes, however slow the machine.
    let app = spawn_app_with(&["--outbound-queue", "16", "--slow-reader-limit", "60s"]).await;
    let (mut unread, _write_half) = stalled_session(&app, "u1").await;
    assert!(app.close_reasons("u1").is_empty(), "still open");

    app.device_quit("u1", 1).await;
    // The client reads again: the answers queued before the kick, then the kick itself.
    let started = tokio::time::Instant::now();
    set_recv_buffer(&unread, 1 << 20);
    let (last, code) = read_until_close(&mut unread, Duration::from_secs(5)).await;
    assert_eq!(
        (last.as_deref(), code),
        (Some(kick_text("device quit").as_str()), Some(1000)),
        "read for {:?}",
        started.elapsed()
    );
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::DeviceQuit]);
}
