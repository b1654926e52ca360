//! The opening of a WebSocket connection: the upgrade, the first frame and the connect.
//!
//! Owns everything before a session is live: a plain HTTP request on this port gets a 426 in
//! the contract's envelope; the upgrade and the first frame share the first-frame limit; the
//! connect is decided and recorded through the write path, its socket registered with the live
//! sessions first so that a kick decided a moment later still finds it. Promises: the connect
//! result is sent only after `Connected` is durable; a refused connect says "auth fail" to the
//! client and why to the server log; a connect the log cannot record is a system error (the
//! credentials are not at fault). Must never: log a token, or answer a frame before the
//! connect is authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::close::{close, linger_tcp, protocol_violation, FLUSH_LIMIT, LINGER};
use super::first_frame::{parse_first, FirstFrame};
use super::frames;
use super::session::{Live, Ws};
use super::{peer_text, Gateway, OpenGuard, PendingGuard};
use crate::apply::live::CloseOrder;
use crate::domain::{CloseReason, Command, DeviceId, SessionId};
use crate::log::LogError;
use crate::metrics::ConnectResult;
use crate::write::WriteError;

/// Bytes read from a socket at a time.
const READ_BUFFER: usize = 1024;

/// One connection, from the upgrade to the close. The connect phase runs boxed, so that what
/// an idle session keeps in memory is only the authenticated loop's state.
pub(super) async fn run(
    gw: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    _open: OpenGuard,
    pending: PendingGuard,
) {
    if let Some(established) = Box::pin(establish(gw, tcp, peer, pending)).await {
        established
            .live
            .run(established.socket, established.result, established.orders)
            .await;
    }
}

/// A connection whose connect is recorded, ready for the session loop. Its socket is already
/// split in two halves: the whole socket would otherwise be kept, moved from but not
/// reclaimed, in the session's future for its whole life.
struct Established {
    live: Live,
    socket: (SplitSink<Ws, Message>, SplitStream<Ws>),
    /// The connect result, to send first.
    result: String,
    orders: oneshot::Receiver<CloseOrder>,
}

/// The upgrade, the first frame and the connect. `Some` once the session is recorded and its
/// connect result is ready to send; `None` when the socket was closed instead.
async fn establish(
    gw: Arc<Gateway>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    pending: PendingGuard,
) -> Option<Established> {
    // The upgrade gets the first-frame limit of its own (a client that trickles its request
    // is cut), and the first frame the whole limit from the upgrade, as the contract counts it.
    let upgrade_deadline = Instant::now() + gw.settings.first_frame_timeout;
    if let Ok(Ok(true)) = timeout_at(upgrade_deadline, is_plain_http(&tcp)).await {
        tracing::debug!(%peer, "a plain HTTP request on the WebSocket port; answered 426");
        let _ = timeout(FLUSH_LIMIT + LINGER, answer_plain_http(&mut tcp)).await;
        return None;
    }
    // A small read buffer: tungstenite's default (128 KiB) is zeroed and resident at the first
    // read, which made it most of an idle connection's memory; messages larger than the buffer
    // still arrive whole (it grows for them).
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(gw.settings.max_message_bytes))
        .max_frame_size(Some(gw.settings.max_message_bytes));
    let handshake = tokio_tungstenite::accept_async_with_config(tcp, Some(config));
    let mut ws = tokio::select! {
        r = timeout_at(upgrade_deadline, handshake) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
                return None;
            }
            Err(_) => return None,
        },
        _ = gw.shutdown.cancelled() => return None,
    };

    let deadline = Instant::now() + gw.settings.first_frame_timeout;
    let first = tokio::select! {
        r = timeout_at(deadline, first_text(&mut ws)) => r,
        _ = gw.shutdown.cancelled() => {
            close(ws, CloseCode::Away, "server shutdown").await;
            return None;
        }
    };
    let text = match first {
        Err(_) => {
            tracing::debug!(%peer, "no connect frame within the first-frame limit");
            close(ws, CloseCode::Policy, "connect timeout").await;
            return None;
        }
        Ok(Ok(text)) => text,
        Ok(Err(Some((code, why)))) => {
            close(ws, code, why).await;
            return None;
        }
        Ok(Err(None)) => return None,
    };
    let (id, params) = match parse_first(&text) {
        FirstFrame::Connect { id, params } => (id, params),
        FirstFrame::BadConnect { id, why } => {
            gw.metrics().connect(ConnectResult::AuthFail);
            tracing::info!(%peer, why, "connect refused: bad params");
            let _ = timeout(FLUSH_LIMIT, ws.send(Message::text(frames::auth_fail(&id)))).await;
            close(ws, CloseCode::Policy, "auth fail").await;
            return None;
        }
        FirstFrame::Refused(why) => {
            tracing::debug!(%peer, why, "first frame refused");
            close(ws, CloseCode::Policy, why).await;
            return None;
        }
    };

    let session_id = SessionId::new();
    let uid = params.uid.clone();
    let orders = gw.live().register(session_id);
    let command = Command::Connect {
        session_id,
        uid: uid.clone(),
        device_flag: params.device_flag,
        device_id: params.device_id.unwrap_or_else(DeviceId::generate),
        presented: params.presented,
        node_id: gw.settings.node_id,
        peer: peer_text(peer),
    };
    let node_id = gw.settings.node_id.0;
    // By the name a person reads (`iOS`, `flag 7`: protocol.md section 1), in text and JSON.
    let device_flag = params.device_flag.name();
    let recorded = match gw.write.execute(command).await {
        Ok(recorded) => recorded,
        Err(e) => {
            gw.live().unregister(session_id);
            let (reply, code, why) = match &e {
                WriteError::Rejected(why) => {
                    gw.metrics().connect(ConnectResult::AuthFail);
                    tracing::info!(%peer, uid = %uid, device_flag = %device_flag, node_id, why = %why, "connect refused");
                    (frames::auth_fail(&id), CloseCode::Policy, "auth fail")
                }
                // Not the client's fault: a system error (reason code 15) and 1011, so that the
                // client retries later instead of treating its credentials as wrong.
                WriteError::Log(_) | WriteError::Fenced => {
                    gw.metrics().connect(ConnectResult::SystemError);
                    let err = &e;
                    tracing::error!(%peer, uid = %uid, device_flag = %device_flag, node_id, error = %err, "connect not recorded");
                    let reply = frames::error(
                        &id.clone().into(),
                        frames::CODE_SYSTEM_ERROR,
                        "system error",
                    );
                    (reply, CloseCode::Error, "server error")
                }
            };
            let _ = timeout(FLUSH_LIMIT, ws.send(Message::text(reply))).await;
            close(ws, code, why).await;
            if let WriteError::Log(LogError::InDoubt(_)) = e {
                // The database went away with the commit's answer: the `Connected` may be in
                // the log, and would then hold a session online with no socket behind it. Its
                // end is recorded (retried until the database is back); a close of a session
                // never recorded decides to nothing.
                gw.write
                    .close_session(uid, session_id, CloseReason::ClientClosed)
                    .await;
            }
            return None;
        }
    };
    drop(pending);
    gw.metrics().connect(ConnectResult::Ok);
    // The seq of the `Connected` event (kicks of replaced sessions may follow it in the batch).
    let seq = recorded.first().map_or(0, |r| r.seq.0);
    tracing::debug!(%peer, uid = %uid, session_id = %session_id, device_flag = %device_flag, node_id, seq, "connected");

    // Saturating: any i64 a client sends must not overflow (a panic here, after `Connected` is
    // durable, would leave the session online with no `Disconnected` ever recorded).
    let time_diff = params
        .client_timestamp
        .map_or(0, |t| now_ms().saturating_sub(t));
    let connected = frames::connect_ok(&id, time_diff, gw.settings.node_id.0);
    let live = Live::new(gw.clone(), uid, session_id, params.device_flag);
    Some(Established {
        live,
        socket: ws.split(),
        result: connected,
        orders,
    })
}

/// True when the request head that has arrived is complete and asks for no WebSocket upgrade
/// (a browser or curl pointed at this port). Peeks only: the bytes stay for the handshake. A
/// head still arriving, or one that asks for an upgrade, is left to the handshake.
async fn is_plain_http(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut head = [0u8; 2048];
    let n = tcp.peek(&mut head).await?;
    let head = &head[..n];
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    Ok(!asks_websocket_upgrade(&head[..end]))
}

/// Whether a request head has a header line `Upgrade: ...websocket...`, in any ASCII case.
/// Compared as bytes: every connect passes here, and a string per header line was most of
/// what the check allocated.
fn asks_websocket_upgrade(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        line.get(..8)
            .is_some_and(|name| name.eq_ignore_ascii_case(b"upgrade:"))
            && line
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"websocket"))
    })
}

/// 426 with the contract's error envelope, then the connection ends.
async fn answer_plain_http(tcp: &mut TcpStream) -> std::io::Result<()> {
    const BODY: &str = r#"{"msg":"this port speaks WebSocket only (JSON-RPC, see the connect frame); the HTTP API is on its own port","status":426}"#;
    let answer = format!(
        "HTTP/1.1 426 Upgrade Required\r\nupgrade: websocket\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    tcp.write_all(answer.as_bytes()).await?;
    linger_tcp(tcp).await;
    Ok(())
}

/// Reads until the first text message. `Err(Some(..))`: close with that code; `Err(None)`:
/// the socket is gone.
async fn first_text(ws: &mut Ws) -> Result<String, Option<(CloseCode, &'static str)>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => {
                return Err(Some((
                    CloseCode::Unsupported,
                    "binary frames are not spoken",
                )))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                return Err(Some((CloseCode::Size, "message too big")))
            }
            // Text that is not UTF-8 is not JSON: refused like any other first frame that is
            // not a connect. Nothing more is read, so the stream ending here costs nothing.
            Some(Err(WsError::Utf8)) => {
                return Err(Some((CloseCode::Policy, "first frame is not UTF-8 text")))
            }
            // A frame that breaks RFC 6455 itself. Not the contract's 1008: that is for a first
            // message that is not a connect, and this is no message at all (the contract says
            // nothing of broken framing), so 7.4.1 decides, with the same 1002 as after
            // connect. As for UTF-8 above, nothing more is read. A socket that merely dropped
            // is no violation: it has no one left to tell.
            Some(Err(WsError::Protocol(e))) => {
                return Err(protocol_violation(&e).map(|why| (CloseCode::Protocol, why)))
            }
            // Closed before connecting: the close reply is sent by `close`.
            Some(Ok(Message::Close(_))) => return Err(Some((CloseCode::Normal, "bye"))),
            Some(Err(_)) | None => return Err(None),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::asks_websocket_upgrade;

    #[test]
    fn an_upgrade_header_is_found_in_any_case() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nUPGRADE: WebSocket\r\nConnection: Upgrade";
        assert!(asks_websocket_upgrade(head));
        assert!(asks_websocket_upgrade(
            b"GET / HTTP/1.1\r\nupgrade:websocket"
        ));
    }

    #[test]
    fn a_head_without_a_websocket_upgrade_is_plain_http() {
        assert!(!asks_websocket_upgrade(
            b"GET / HTTP/1.1\r\nHost: websocket\r\n"
        ));
        assert!(!asks_websocket_upgrade(
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n"
        ));
        assert!(!asks_websocket_upgrade(
            b"GET / HTTP/1.1\r\nX-Upgrade: websocket\r\n"
        ));
        assert!(!asks_websocket_upgrade(
            b"GET / HTTP/1.1\r\nUpgr\xffde: websocket\r\n"
        ));
    }
}
