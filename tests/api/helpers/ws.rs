//! The gateway as the EasySDK client sees it: a WebSocket through tungstenite, frames written
//! byte for byte as the EasySDK writes them, and the server's answers read one by one.
//!
//! Owns [`Ws`], the frame texts of the contract, and the connect helpers. Promises: every read
//! and write is bounded (a silent server fails the test instead of hanging it); pings and pongs
//! are skipped, as a client library does. Must never answer for the server: an expected text is
//! the contract's exact bytes, not a re-encoding of what arrived.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl TestApp {
    /// Opens a WebSocket to the gateway.
    pub async fn ws_open(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(&self.ws)
            .await
            .expect("ws connects");
        ws
    }

    /// Opens a WebSocket and sends a connect frame as the EasySDK writes it; returns the socket
    /// and the server's answer.
    pub async fn ws_connect(
        &self,
        uid: &str,
        token: &str,
        flag: u8,
        device_id: &str,
    ) -> (Ws, Value) {
        let mut ws = self.ws_open().await;
        let id = format!("c-{device_id}");
        let frame = easy_connect(uid, token, device_id, flag, now_ms(), &id);
        ws.send(Message::text(frame)).await.expect("connect sent");
        let answer = next_json(&mut ws).await.expect("an answer to connect");
        (ws, answer)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The next text frame as JSON, within 5 s; `None` when the socket closed first.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("no frame within 5 s"),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("server frames are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return None,
        }
    }
}

/// Reads until the server closes; returns the close code (None: closed without a close frame).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("socket not closed within 5 s"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// The answer a connect gets when it is accepted: `result.reasonCode` 1.
pub fn assert_connected(answer: &Value) {
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
}

/// The answer a refused connect gets (`protocol.md` 3.2), for the request id `id`.
pub fn auth_fail(id: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": 2, "message": "auth fail"}})
}

/// A request id as the EasySDK makes them (a UUID string).
pub fn rpc_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A deviceId of the shape the EasySDK web client makes: `web_<8 hex>_<ms>`.
pub fn web_device_id() -> String {
    let hex = uuid::Uuid::now_v7().simple().to_string();
    format!("web_{}_{}", &hex[24..32], now_ms())
}

/// The EasySDK's connect frame, field for field in its order.
pub fn easy_connect(
    uid: &str,
    token: &str,
    device_id: &str,
    flag: u8,
    ts: i64,
    id: &str,
) -> String {
    format!(
        r#"{{"method":"connect","params":{{"uid":"{uid}","token":"{token}","deviceId":"{device_id}","deviceFlag":{flag},"clientTimestamp":{ts}}},"id":"{id}"}}"#
    )
}

/// The EasySDK's ping request.
pub fn easy_ping(id: &str) -> String {
    format!(r#"{{"method":"ping","id":"{id}"}}"#)
}

/// The server's empty result for `id`, as exact text.
pub fn empty_result(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}"#)
}

/// The auth failure for `id`, as exact text.
pub fn auth_fail_text(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","error":{{"code":2,"message":"auth fail"}}}}"#)
}

/// The kick notification with `reason`, as exact text.
pub fn kick_text(reason: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"disconnect","params":{{"reasonCode":12,"reason":"{reason}"}}}}"#
    )
}

pub async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    tokio::time::timeout(Duration::from_secs(5), ws.send(Message::text(text.into())))
        .await
        .expect("frame sent within 5 s")
        .expect("frame sent");
}

/// What the server sent next, ignoring WebSocket pings and pongs.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Binary,
    /// A close frame and its code (`None`: a close frame without a code).
    Close(Option<u16>),
    /// The socket ended without a close frame.
    Gone,
}

/// The next frame, within 5 s.
pub async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("no frame within 5 s"),
            Ok(Some(Ok(Message::Text(t)))) => return Frame::Text(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Binary(_)))) => return Frame::Binary,
            Ok(Some(Ok(Message::Close(f)))) => return Frame::Close(f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Frame::Gone,
        }
    }
}

/// The next frame, which must be a text frame; returns its exact text.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Frame::Text(t) => t,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next frame, which must be a close frame; returns its code.
pub async fn expect_close(ws: &mut Ws) -> u16 {
    match next_frame(ws).await {
        Frame::Close(Some(code)) => code,
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

/// Sends `frame` as the first frame of a fresh socket; returns the socket and the exact text of
/// the answer.
pub async fn first_frame(app: &TestApp, frame: &str) -> (Ws, String) {
    let mut ws = app.ws_open().await;
    send_text(&mut ws, frame).await;
    let answer = next_text(&mut ws).await;
    (ws, answer)
}

/// Connects as the EasySDK does and asserts success; returns the socket.
pub async fn connected(app: &TestApp, uid: &str, token: &str, flag: u8, device_id: &str) -> Ws {
    let id = rpc_id();
    let frame = easy_connect(uid, token, device_id, flag, now_ms(), &id);
    let (ws, answer) = first_frame(app, &frame).await;
    let v: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(v["id"], Value::String(id), "{answer}");
    assert_eq!(
        v["result"]["reasonCode"], 1,
        "connect of {uid} failed: {answer}"
    );
    ws
}

/// Sends a ping and asserts its exact answer (the session is alive and answering).
pub async fn assert_pings(ws: &mut Ws) {
    let id = rpc_id();
    send_text(ws, easy_ping(&id)).await;
    assert_eq!(next_text(ws).await, empty_result(&id));
}

/// Authenticates an open (not yet connected) socket as the EasySDK does and asserts success.
pub async fn authenticate(ws: &mut Ws, uid: &str, token: &str, flag: u8, device_id: &str) {
    let id = rpc_id();
    send_text(ws, easy_connect(uid, token, device_id, flag, now_ms(), &id)).await;
    let answer = next_text(ws).await;
    let v: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(v["id"], Value::String(id), "{answer}");
    assert_eq!(
        v["result"]["reasonCode"], 1,
        "connect of {uid} failed: {answer}"
    );
}
