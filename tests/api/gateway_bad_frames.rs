//! Frames that break the WebSocket protocol after connect (`protocol.md` 3.1 and 3.4): text that
//! is not UTF-8 closes 1007, and a reserved bit, an unmasked frame or any other breach of RFC
//! 6455 closes 1002; each session recorded as `protocol_error`. Written as raw bytes on a bare
//! socket, since a WebSocket client library refuses to send them.

use wkuser::domain::CloseReason;

use crate::gateway_session::DEV;
use crate::helpers::*;

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_after_connect_closes_1007_as_protocol_error() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    app.set_token("u2", "t", 1, 0).await;

    // One frame: a ping whose id holds a byte that is never UTF-8.
    let mut raw = app.raw_ws().await;
    raw.connect_as("u1", "t", 1, DEV).await;
    let frame = RawWs::masked(0x1, true, b"{\"method\":\"ping\",\"id\":\"\xff\"}");
    raw.tcp.write_all(&frame).await.unwrap();
    let close = raw
        .read_frame()
        .await
        .expect("a close frame, not a dropped socket");
    assert_eq!(close.close_code(), 1007);
    app.wait_offline("u1").await;
    assert_eq!(app.close_reasons("u1"), vec![CloseReason::ProtocolError]);

    // Fragments: valid text, then a continuation that breaks it.
    let mut raw = app.raw_ws().await;
    raw.connect_as("u2", "t", 1, DEV).await;
    let mut bytes = RawWs::masked(0x1, false, br#"{"method":"ping","id":""#);
    bytes.extend(RawWs::masked(0x0, true, b"\xc3\x28\"}"));
    raw.tcp.write_all(&bytes).await.unwrap();
    let close = raw
        .read_frame()
        .await
        .expect("a close frame, not a dropped socket");
    assert_eq!(close.close_code(), 1007);
    app.wait_offline("u2").await;
    assert_eq!(app.close_reasons("u2"), vec![CloseReason::ProtocolError]);
}

/// Connects `uid` on a bare socket, writes `bytes` after the connect, and asserts that the
/// server's answer is a close 1002 with `reason`, and that the session ended as
/// `protocol_error`.
async fn assert_closed_1002(app: &TestApp, uid: &str, bytes: &[u8], reason: &str) {
    use tokio::io::AsyncWriteExt;
    app.set_token(uid, "t", 1, 0).await;
    let mut raw = app.raw_ws().await;
    raw.connect_as(uid, "t", 1, DEV).await;
    raw.tcp.write_all(bytes).await.unwrap();
    let close = raw.read_final_close(reason).await;
    assert_eq!(
        (close.close_code(), close.close_reason()),
        (1002, reason),
        "{reason}"
    );
    app.wait_offline(uid).await;
    assert_eq!(
        app.close_reasons(uid),
        vec![CloseReason::ProtocolError],
        "{reason}"
    );
}

#[tokio::test]
async fn a_frame_with_a_reserved_bit_set_after_connect_closes_1002_as_protocol_error() {
    let app = spawn_app().await;
    // A ping that would be answered but for RSV1, which no negotiated extension gives a meaning.
    let mut frame = RawWs::masked_text(&easy_ping("p1"));
    frame[0] |= 0x40;
    assert_closed_1002(&app, "u1", &frame, "reserved bits set").await;
}

#[tokio::test]
async fn an_unmasked_frame_after_connect_closes_1002_as_protocol_error() {
    let app = spawn_app().await;
    let frame = RawWs::unmasked_text(&easy_ping("p1"));
    assert_closed_1002(&app, "u1", &frame, "unmasked frame").await;
}

#[tokio::test]
async fn every_other_frame_that_breaks_rfc6455_after_connect_closes_1002() {
    let app = spawn_app().await;
    let ping = easy_ping("p1");
    let mut inside = RawWs::masked(0x1, false, br#"{"method":"ping","#);
    inside.extend(RawWs::masked_text(&ping));
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "u1",
            RawWs::masked(0x9, true, &[b'x'; 126]),
            "control frame over 125 bytes",
        ),
        (
            "u2",
            RawWs::masked(0x9, false, b"x"),
            "fragmented control frame",
        ),
        (
            "u3",
            RawWs::masked(0x3, true, ping.as_bytes()),
            "unknown opcode",
        ),
        ("u4", RawWs::masked(0xb, true, b""), "unknown opcode"),
        (
            "u5",
            RawWs::masked(0x0, true, ping.as_bytes()),
            "continuation with nothing to continue",
        ),
        ("u6", inside, "new message inside a fragmented one"),
        // Half a close code: not taken as the client's close.
        (
            "u7",
            RawWs::masked(0x8, true, b"\x03"),
            "close frame of one byte",
        ),
    ];
    for (uid, bytes, reason) in &cases {
        assert_closed_1002(&app, uid, bytes, reason).await;
    }
}
