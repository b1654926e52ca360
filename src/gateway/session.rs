//! One WebSocket connection, from the upgrade to the close: connect, then ping, disconnect and
//! the rest, until the client leaves or the server closes the session.
//!
//! Owns the session loop and its ending. Inbound frames are read here; outbound frames go
//! through a bounded queue to a writer task, so a client that stops reading fills its own
//! queue without ever stalling a kick or another session. While the queue is full no more
//! inbound frames are read (a client pipelining requests is slowed, not closed); a queue that
//! stays full, the writer taking none of it, for `--slow-reader-limit` closes the session as a
//! slow consumer. Promises: the connect result is sent only after `Connected` is durable;
//! every ending records exactly one
//! `Disconnected` (or finds it already recorded by whoever closed the session), and a
//! `Disconnected` the event log refuses is retried in the background until the log takes it (or
//! the server stops, which records the session's end itself), so that a closed session does not
//! stay online; a close ordered by the server completes within two seconds whatever the client
//! does. Must never: log a token, or answer a frame before it is authenticated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::frames::{self, FirstFrame, Inbound};
use super::{peer_text, Gateway, OpenGuard, PendingGuard};
use crate::domain::{CloseReason, Command, DeviceId, SessionId, Token, Uid};
use crate::log::LogError;
use crate::service::{CloseOrder, ServiceError};

type Ws = WebSocketStream<TcpStream>;

/// How long a closing session may spend queueing its last frames (kick notification, close
/// frame) and flushing them; with [`LINGER`], within the contract's two seconds.
const FLUSH_LIMIT: Duration = Duration::from_millis(1000);
/// How long a closed socket is drained so that the peer reads the close frame before the FIN.
const LINGER: Duration = Duration::from_millis(500);

/// The first pause before retrying a close the event log refused; doubled after each failure,
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two retries of a refused close.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a close that keeps failing is logged again.
const RETRY_TELL_EVERY: Duration = Duration::from_secs(60);

/// Bytes read from a socket at a time.
const READ_BUFFER: usize = 1024;

/// A frame for the writer. 24 bytes, a text as `Box<str>` rather than `String`: the queue's
/// channel allocates its first block of 32 slots with it, and at 32 bytes a slot that block
/// took 1,280 bytes of every session (mimalloc's size class), at 24 it takes 896.
enum Out {
    Text(Box<str>),
    Close(CloseCode, &'static str),
    /// The client closed first: send the close reply tungstenite queued, and finish.
    AnswerClose,
}
const _: () = assert!(std::mem::size_of::<Out>() == 24);

/// How the session loop ended.
enum End {
    /// The session itself decided to end: record `reason`, close with `code`.
    Own(CloseReason, CloseCode, &'static str),
    /// The client sent a close frame: record `client_closed`, answer it (RFC 6455 5.5.1).
    PeerClosed,
    /// Someone else recorded the close (a kick, a replacement): only carry it out.
    Ordered(CloseReason),
    /// The socket is gone (the writer died, or the client dropped it without a close frame):
    /// record `client_closed`, nothing to send.
    Gone,
}

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
/// split in two halves: the whole socket (304 bytes) would otherwise be kept, moved from but
/// not reclaimed, in the session's future for its whole life.
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
            {
                close(ws, CloseCode::Policy, "connect timeout").await;
                return None;
            };
        }
        Ok(Ok(text)) => text,
        Ok(Err(Some((code, why)))) => {
            close(ws, code, why).await;
            return None;
        }
        Ok(Err(None)) => return None,
    };
    let (id, params) = match frames::parse_first(&text) {
        FirstFrame::Connect { id, params } => (id, params),
        FirstFrame::BadConnect { id, why } => {
            tracing::info!(%peer, why, "connect refused: bad params");
            let _ = timeout(FLUSH_LIMIT, ws.send(Message::text(frames::auth_fail(&id)))).await;
            {
                close(ws, CloseCode::Policy, "auth fail").await;
                return None;
            };
        }
        FirstFrame::Refused(why) => {
            tracing::debug!(%peer, why, "first frame refused");
            {
                close(ws, CloseCode::Policy, why).await;
                return None;
            };
        }
    };

    let session_id = SessionId::new();
    let uid = params.uid.clone();
    let orders = gw.service.register_live(session_id);
    let token = Token::parse(&params.token).expect("checked when the frame was parsed");
    let command = Command::Connect {
        session_id,
        uid: uid.clone(),
        device_flag: params.device_flag,
        device_id: params.device_id.unwrap_or_else(DeviceId::generate),
        presented: token.hash(),
        node_id: gw.settings.node_id,
        peer: peer_text(peer),
    };
    if let Err(e) = gw.service.execute(command).await {
        gw.service.unregister_live(session_id);
        let (reply, code, why) = match &e {
            ServiceError::Rejected(why) => {
                tracing::info!(%peer, uid = %uid, device_flag = %params.device_flag.name(), why = %why, "connect refused");
                (frames::auth_fail(&id), CloseCode::Policy, "auth fail")
            }
            // Not the client's fault: a system error (reason code 15) and 1011, so that the
            // client retries later instead of treating its credentials as wrong.
            ServiceError::Log(err) => {
                tracing::error!(%peer, uid = %uid, error = %err, "connect not recorded");
                let reply = frames::error(
                    &id.clone().into(),
                    frames::CODE_SYSTEM_ERROR,
                    "system error",
                );
                (reply, CloseCode::Error, "server error")
            }
        };
        let _ = timeout(FLUSH_LIMIT, ws.send(Message::text(reply))).await;
        {
            close(ws, code, why).await;
            return None;
        };
    }
    drop(pending);
    tracing::debug!(%peer, uid = %uid, session = %session_id, device_flag = %params.device_flag.name(), "connected");

    // Saturating: any i64 a client sends must not overflow (a panic here, after `Connected` is
    // durable, would leave the session online with no `Disconnected` ever recorded).
    let time_diff = params
        .client_timestamp
        .map_or(0, |t| now_ms().saturating_sub(t));
    let connected = frames::connect_ok(&id, time_diff, gw.settings.node_id.0);
    let live = Live {
        gw: gw.clone(),
        uid,
        session_id,
    };
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
    let asks_upgrade = head[..end].split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line).to_ascii_lowercase();
        line.starts_with("upgrade:") && line.contains("websocket")
    });
    Ok(!asks_upgrade)
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

/// The close reason for a frame that breaks RFC 6455 (closed with 1002, 7.4.1), or `None` for
/// the protocol errors that are no bad frame: `ResetWithoutClosingHandshake` is how tungstenite
/// reports a socket that dropped without a close frame; the handshake's errors end before a
/// session loop starts; `ReceivedAfterClosing` needs a read after a close frame, which neither
/// loop does (the linger after it reads the bare socket); `SendAfterClosing` is the write half's.
fn protocol_violation(e: &ProtocolError) -> Option<&'static str> {
    use ProtocolError as P;
    Some(match e {
        P::NonZeroReservedBits => "reserved bits set",
        P::UnmaskedFrameFromClient => "unmasked frame",
        P::FragmentedControlFrame => "fragmented control frame",
        P::ControlFrameTooBig => "control frame over 125 bytes",
        // tungstenite rejects a reserved opcode as `InvalidOpcode` while parsing the header;
        // the other two are its later checks of the same thing.
        P::InvalidOpcode(_) | P::UnknownControlFrameType(_) | P::UnknownDataFrameType(_) => {
            "unknown opcode"
        }
        P::UnexpectedContinueFrame => "continuation with nothing to continue",
        P::ExpectedFragment(_) => "new message inside a fragmented one",
        P::InvalidCloseSequence => "close frame of one byte",
        _ => return None,
    })
}

/// An authenticated session.
struct Live {
    gw: Arc<Gateway>,
    uid: Uid,
    session_id: SessionId,
}

impl Live {
    async fn run(
        self,
        (sink, mut stream): (SplitSink<Ws, Message>, SplitStream<Ws>),
        connected: String,
        mut orders: oneshot::Receiver<CloseOrder>,
    ) {
        let settings = &self.gw.settings;
        let (out, out_rx) = mpsc::channel(settings.outbound_queue);
        let _ = out.try_send(Out::Text(connected.into()));
        let mut writer = tokio::spawn(write_loop(sink, out_rx));
        let idle = sleep(settings.idle_timeout);
        tokio::pin!(idle);
        let slow = sleep(settings.slow_reader_limit);
        tokio::pin!(slow);

        let end = loop {
            // Backpressure: every frame read may need an answer, so nothing is read while the
            // queue is full. The writer may simply not have run yet (the frames of one burst are
            // parsed from tungstenite's buffer without yielding): waiting for room is enough.
            let full = out.capacity() == 0;
            tokio::select! {
                biased;
                order = &mut orders => break match order {
                    Ok(o) => End::Ordered(o.reason),
                    // The registry dropped us without an order: only at a failed connect, which
                    // never gets here; treat it as the server closing.
                    Err(_) => End::Own(CloseReason::ServerShutdown, CloseCode::Away, "server shutdown"),
                },
                _ = self.gw.shutdown.cancelled() => {
                    break End::Own(CloseReason::ServerShutdown, CloseCode::Away, "server shutdown");
                }
                _ = &mut writer => break End::Gone,
                _ = &mut idle => break End::Own(CloseReason::IdleTimeout, CloseCode::Normal, "idle timeout"),
                _ = &mut slow, if full => {
                    break End::Own(CloseReason::SlowConsumer, CloseCode::Policy, "slow reader");
                }
                room = out.reserve(), if full => {
                    if room.is_err() {
                        break End::Gone;
                    }
                }
                msg = stream.next(), if !full => {
                    idle.as_mut().reset(Instant::now() + settings.idle_timeout);
                    match msg {
                        Some(Ok(Message::Text(t))) => match answer(t.as_str()) {
                            Answer::Nothing => {}
                            Answer::Reply(frame) => {
                                // There was room before the read; a closed queue means the
                                // writer is gone, which its branch reports next.
                                let _ = out.try_send(Out::Text(frame.into()));
                                if out.capacity() == 0 {
                                    slow.as_mut().reset(Instant::now() + settings.slow_reader_limit);
                                }
                            }
                            Answer::ReplyAndLeave(frame) => {
                                let _ = out.try_send(Out::Text(frame.into()));
                                break End::Own(CloseReason::ClientClosed, CloseCode::Normal, "bye");
                            }
                        },
                        Some(Ok(Message::Binary(_))) => {
                            break End::Own(CloseReason::ProtocolError, CloseCode::Unsupported, "binary frames are not spoken");
                        }
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                            break End::Own(CloseReason::ProtocolError, CloseCode::Size, "message too big");
                        }
                        // The contract asks for a parse error and an open session, but nothing
                        // more can be read: tokio-tungstenite ends the stream after any error,
                        // and a broken fragment leaves tungstenite itself mid-message. So close
                        // as RFC 6455 says for invalid data (README, "Connecting a client").
                        // tungstenite reports a close frame whose reason is not UTF-8 the same
                        // way; 1007 fits it as well.
                        Some(Err(WsError::Utf8)) => {
                            break End::Own(CloseReason::ProtocolError, CloseCode::Invalid, "text is not UTF-8");
                        }
                        // A frame that breaks RFC 6455 itself: as for UTF-8, nothing more can be
                        // read, and 7.4.1 names 1002 for it. tungstenite reports a socket that
                        // dropped without a close frame as a protocol error too: that one is the
                        // client leaving (`client_closed`), with no one left to tell.
                        Some(Err(WsError::Protocol(e))) => match protocol_violation(&e) {
                            Some(why) => break End::Own(CloseReason::ProtocolError, CloseCode::Protocol, why),
                            None => break End::Gone,
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(_))) => break End::PeerClosed,
                        Some(Err(_)) | None => break End::Gone,
                    }
                }
            }
        };
        // Boxed: the ending's futures (the record, the farewell, the linger) are awaited once,
        // and inline they would sit in every idle session's task for its whole life. With
        // this and [`Established`], the session's future went from 2,544 to 1,040 bytes, and
        // the server's RSS per idle connection from 8.0 to 6.2 KiB (`wkuser loadtest`).
        Box::pin(self.finish(end, out, writer, stream)).await;
    }

    /// Records how the session ended and carries the close out: the farewell frames queued
    /// and sent within [`FLUSH_LIMIT`], then the linger.
    async fn finish(
        self,
        end: End,
        out: mpsc::Sender<Out>,
        mut writer: tokio::task::JoinHandle<Option<SplitSink<Ws, Message>>>,
        stream: SplitStream<Ws>,
    ) {
        let (reason, farewell) = match end {
            End::Own(reason, code, why) => {
                self.record(reason).await;
                (reason, Some((None, Out::Close(code, why))))
            }
            End::PeerClosed => {
                self.record(CloseReason::ClientClosed).await;
                (CloseReason::ClientClosed, Some((None, Out::AnswerClose)))
            }
            End::Ordered(reason) => {
                let code = if reason == CloseReason::ServerShutdown {
                    CloseCode::Away
                } else {
                    CloseCode::Normal
                };
                (
                    reason,
                    Some((reason.kick_text(), Out::Close(code, reason.as_str()))),
                )
            }
            End::Gone => {
                self.record(CloseReason::ClientClosed).await;
                (CloseReason::ClientClosed, None)
            }
        };
        tracing::debug!(uid = %self.uid, session = %self.session_id, %reason, "session closed");

        let Some((kick, last)) = farewell else {
            return;
        };
        // One deadline for queueing the last frames and for the writer to send them: a queue
        // full for a moment (a slow reader, a client that paused) still gets its kick
        // notification and close frame, and one that stays full cannot hold the close past
        // the contract's two seconds.
        let deadline = Instant::now() + FLUSH_LIMIT;
        let queued = timeout_at(deadline, async {
            if let Some(text) = kick {
                out.send(Out::Text(frames::kick(text).into())).await?;
            }
            out.send(last).await
        })
        .await;
        drop(out);
        if !matches!(queued, Ok(Ok(()))) {
            // Still full at the deadline (the client is not reading, so nothing more will
            // reach it), or the writer is gone with the socket.
            writer.abort();
            return;
        }
        match timeout_at(deadline, &mut writer).await {
            Ok(Ok(Some(sink))) => {
                if let Ok(ws) = sink.reunite(stream) {
                    linger(ws).await;
                }
            }
            Ok(_) => {}
            Err(_) => writer.abort(),
        }
    }

    async fn record(&self, reason: CloseReason) {
        self.gw.service.unregister_live(self.session_id);
        let command = Command::Disconnect {
            uid: self.uid.clone(),
            session_id: self.session_id,
            reason,
        };
        // Boxed: awaited once, at the end, it would otherwise be part of every idle
        // session's future.
        match Box::pin(self.gw.service.execute(command)).await {
            Ok(_) => {}
            // The log could not take it (a failing disk): memory, which follows the log, would
            // show the session online until a restart. Retried apart from the session, so
            // that its socket still closes now.
            Err(ServiceError::Log(e)) if !matches!(e, LogError::Closed) => {
                tracing::error!(uid = %self.uid, session = %self.session_id, %reason, error = %e,
                    "close not recorded; retrying until the event log takes it");
                let retry = retry_close(self.gw.clone(), self.uid.clone(), self.session_id, reason);
                self.gw.tracker.spawn(retry);
            }
            Err(e) => {
                tracing::error!(uid = %self.uid, session = %self.session_id, %reason, error = %e,
                    "close not recorded; the next start closes it as server_restart");
            }
        }
    }
}

/// Records the close of a session that the event log refused, retrying with a growing pause
/// ([`RETRY_FIRST`] doubling up to [`RETRY_MAX`]) until the log takes it. Ends when it is
/// recorded (or someone else recorded the session's end meanwhile, a kick: then there is
/// nothing left to decide), when the log is closed, or after one last try once the gateway
/// stops: what that try could not record, the stop records as `server_shutdown`, or the next
/// start as `server_restart`.
async fn retry_close(gw: Arc<Gateway>, uid: Uid, session_id: SessionId, reason: CloseReason) {
    let mut pause = RETRY_FIRST;
    let mut attempts: u32 = 1;
    let mut last_told = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = gw.shutdown.cancelled() => true,
            _ = sleep(pause) => false,
        };
        attempts += 1;
        let command = Command::Disconnect {
            uid: uid.clone(),
            session_id,
            reason,
        };
        // Not raced against the stop: an append cut short may still become durable, and
        // memory would then miss it.
        match gw.service.execute(command).await {
            Ok(recorded) if recorded.is_empty() => {
                tracing::info!(uid = %uid, session = %session_id, %reason, attempts,
                    "close not needed any more: the session's end was recorded meanwhile");
                return;
            }
            Ok(_) => {
                tracing::info!(uid = %uid, session = %session_id, %reason, attempts,
                    "close recorded after the event log recovered");
                return;
            }
            Err(ServiceError::Log(LogError::Closed)) => {
                tracing::warn!(uid = %uid, session = %session_id, %reason, attempts,
                    "event log closed with a close not recorded; the next start records it");
                return;
            }
            Err(ServiceError::Log(e)) if stopping => {
                tracing::warn!(uid = %uid, session = %session_id, %reason, attempts, error = %e,
                    "gateway stopping with a close not recorded; the stop or the next start records it");
                return;
            }
            Err(ServiceError::Log(e)) => {
                // Once a minute at most: a disk that stays broken must not flood the log.
                if last_told.elapsed() >= RETRY_TELL_EVERY {
                    last_told = Instant::now();
                    tracing::error!(uid = %uid, session = %session_id, %reason, attempts, error = %e,
                        "close still not recorded; retrying");
                }
            }
            Err(ServiceError::Rejected(why)) => {
                tracing::error!(uid = %uid, session = %session_id, %reason, why = %why,
                    "close refused; not retried");
                return;
            }
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

enum Answer {
    Nothing,
    Reply(String),
    ReplyAndLeave(String),
}

fn answer(text: &str) -> Answer {
    match frames::parse_inbound(text) {
        Inbound::Request { id, method } => match method.as_str() {
            "ping" => Answer::Reply(frames::empty_result(&id)),
            "disconnect" => Answer::ReplyAndLeave(frames::empty_result(&id)),
            _ => Answer::Reply(frames::error(
                &id,
                frames::CODE_METHOD_NOT_FOUND,
                "method not supported by this server",
            )),
        },
        // `recvack` and the rest, a `disconnect` without an id included: only the request
        // form closes the session (`protocol.md` 3.3).
        Inbound::Notification { .. } => Answer::Nothing,
        Inbound::Unparsable { id } => {
            Answer::Reply(frames::error(&id, frames::CODE_PARSE_ERROR, "parse error"))
        }
    }
}

/// Sends queued frames until a close frame or the end of the queue; hands the sink back so the
/// socket can be closed gracefully, or `None` when the socket failed.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut queue: mpsc::Receiver<Out>,
) -> Option<SplitSink<Ws, Message>> {
    while let Some(out) = queue.recv().await {
        let sent = match out {
            Out::Text(text) => sink.send(Message::text(String::from(text))).await,
            Out::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let r = sink.send(Message::Close(Some(frame))).await;
                return r.ok().map(|()| sink);
            }
            Out::AnswerClose => return sink.close().await.ok().map(|()| sink),
        };
        sent.ok()?;
    }
    Some(sink)
}

/// Closes an unsplit socket with `code` (or answers the client's close) and drains it.
async fn close(mut ws: Ws, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let closed = timeout(FLUSH_LIMIT, async {
        // Refused when the client closed first: then the reply tungstenite queued is what
        // the flush below sends.
        let _ = ws.send(Message::Close(Some(frame))).await;
        SinkExt::close(&mut ws).await
    })
    .await;
    if matches!(closed, Ok(Ok(()))) {
        linger(ws).await;
    }
}

/// After our close frame: send FIN, then read and discard what the peer still sends (its close
/// reply, or the rest of an oversized message) for a moment, so that closing with unread data
/// does not reset the connection before the peer has read our close frame.
async fn linger(mut ws: Ws) {
    linger_tcp(ws.get_mut()).await;
}

/// Sends our FIN, then reads what the peer still sends (up to [`LINGER`]): closing a socket
/// with unread input makes the kernel reset it, and the peer may lose our last bytes.
async fn linger_tcp(tcp: &mut TcpStream) {
    let _ = tcp.shutdown().await;
    // On the heap: a buffer on the stack would sit in every session's future for its whole life.
    let mut buf = vec![0u8; 4096];
    let _ = timeout(LINGER, async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
