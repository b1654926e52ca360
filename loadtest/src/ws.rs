//! The WebSocket side of a simulated client: open a socket, send the connect frame as the
//! EasySDK writes it, wait for the answer; close and wait for the server's close frame.
//!
//! The same functions drive the real gateway and the bare echo ceiling, so both pay the same
//! client cost; only [`Expect`] differs. Promises: an error is a short, stable description (the
//! tool counts errors by it). Must never: wait without a bound (callers wrap each call in a
//! timeout) or treat an auth failure as a connect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// What answer to the connect frame counts as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The gateway's connect result (`"reasonCode":1`).
    ConnectOk,
    /// The bare ceiling: the frame echoed back unchanged.
    Echo,
}

/// Builds connect frames for the simulated users (index `i` is user `uids[i]`).
pub struct Frames {
    pub uids: Vec<String>,
    pub tokens: Vec<String>,
    pub device_flag: u8,
    next: AtomicU64,
}

impl Frames {
    pub fn new(uids: Vec<String>, tokens: Vec<String>, device_flag: u8) -> Self {
        Frames {
            uids,
            tokens,
            device_flag,
            next: AtomicU64::new(0),
        }
    }

    /// A connect frame for user `i`, as the EasySDK writes it, with a device id never used
    /// before in this run (so a reconnect is a new device, not a replacement).
    pub fn connect(&self, i: usize) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        connect_frame(&self.uids[i], &self.tokens[i], self.device_flag, n)
    }
}

/// A connect frame as the EasySDK writes it, with device id number `n`.
pub fn connect_frame(uid: &str, token: &str, device_flag: u8, n: u64) -> String {
    let now = now_ms();
    format!(
        r#"{{"method":"connect","params":{{"uid":"{uid}","token":"{token}","deviceId":"web_{:08x}_{now}","deviceFlag":{device_flag},"clientTimestamp":{now}}},"id":"{}"}}"#,
        n as u32,
        uuid::Uuid::now_v7()
    )
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// An open, connected session and how long the connect frame took to be answered.
pub struct Opened {
    pub ws: Ws,
    pub answered_in: Duration,
}

/// Opens a socket to `addr`, upgrades it, sends `frame` and waits for the answer.
pub async fn open(addr: SocketAddr, frame: String, expect: Expect) -> Result<Opened, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    // Small buffers: the tool holds as many sockets as the server does.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/"), tcp, Some(config))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
    let echo = (expect == Expect::Echo).then(|| frame.clone());
    let start = Instant::now();
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("send connect: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let ok = match &echo {
                    Some(sent) => t.as_str() == sent,
                    None => {
                        t.as_str().contains(r#""reasonCode":1"#)
                            && t.as_str().contains(r#""result""#)
                    }
                };
                if !ok {
                    return Err(format!("connect refused: {}", clip(t.as_str())));
                }
                return Ok(Opened {
                    ws,
                    answered_in: start.elapsed(),
                });
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(format!(
                    "closed before answering: {}",
                    frame.map_or("no close frame".into(), |f| format!(
                        "{} {}",
                        f.code, f.reason
                    ))
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read answer: {e}")),
            None => return Err("closed before answering".into()),
        }
    }
}

/// How a close ended.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// From sending the close frame to the server's answer: its close frame, or the end of the
    /// connection (the gateway sends either only after the close is recorded).
    pub took: Duration,
    /// The server answered with a close frame (RFC 6455 5.5.1) rather than only ending the
    /// connection.
    pub close_frame: bool,
}

/// Sends a close frame and waits for the server's close frame or the end of the connection.
/// After a close frame, waits briefly for the server's end of the TCP connection, so that the
/// server, not this tool, keeps the TIME_WAIT.
pub async fn close(mut ws: Ws) -> Result<Closed, String> {
    let start = Instant::now();
    ws.close(None)
        .await
        .map_err(|e| format!("send close: {e}"))?;
    let ended = |close_frame| Closed {
        took: start.elapsed(),
        close_frame,
    };
    let answered = loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) => break Ok(ended(true)),
            Some(Ok(_)) => continue,
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) | None => {
                break Ok(ended(false))
            }
            Some(Err(e)) => break Err(format!("read close: {e}")),
        }
    };
    if matches!(
        answered,
        Ok(Closed {
            close_frame: true,
            ..
        })
    ) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    answered
}

/// Sends the EasySDK's keep-alive request without waiting for its answer.
pub async fn ping(ws: &mut Ws, n: u64) -> Result<(), String> {
    ws.send(Message::text(format!(
        r#"{{"method":"ping","id":"ping-{n}"}}"#
    )))
    .await
    .map_err(|e| format!("ping: {e}"))
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
