//! An authenticated WebSocket session: the loop from the connect result to the session's end.
//!
//! Owns the session loop. Inbound frames are read here; outbound frames go through a bounded
//! queue to a writer task, so a client that stops reading fills its own queue without ever
//! stalling a kick or another session. While the queue is full no more inbound frames are read
//! (a client pipelining requests is slowed, not closed); a queue that stays full, the writer
//! taking none of it, for `--slow-reader-limit` closes the session as a slow consumer. Promises:
//! every way the loop ends is one [`End`], carried out by [`super::close`]. Must never: await
//! anything but the socket, the queue, the timers and the session's close order, so that an
//! idle session costs only its loop's state.

use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::close::protocol_violation;
use super::frames::{self, Inbound};
use super::Gateway;
use crate::apply::live::CloseOrder;
use crate::domain::{CloseReason, DeviceFlag, SessionId, Uid};

pub(super) type Ws = WebSocketStream<TcpStream>;

/// A frame for the writer, kept small (a text as `Box<str>` rather than `String`, the size
/// pinned below): the queue's channel allocates its first block of slots with it, in every
/// session, and a smaller slot puts that block in a smaller size class of the allocator.
pub(super) enum Out {
    Text(Box<str>),
    Close(CloseCode, &'static str),
    /// The client closed first: send the close reply tungstenite queued, and finish.
    AnswerClose,
}
const _: () = assert!(std::mem::size_of::<Out>() == 24);

/// How the session loop ended.
pub(super) enum End {
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

/// An authenticated session, counted in `wkuser_sessions_open` from [`Live::new`] until its
/// end is settled ([`Live::uncount`]) or it is dropped, however it ends.
pub(super) struct Live {
    pub(super) gw: Arc<Gateway>,
    pub(super) uid: Uid,
    pub(super) session_id: SessionId,
    pub(super) device_flag: DeviceFlag,
    counted: bool,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.uncount();
    }
}

impl Live {
    pub(super) fn new(
        gw: Arc<Gateway>,
        uid: Uid,
        session_id: SessionId,
        device_flag: DeviceFlag,
    ) -> Self {
        gw.metrics().session_opened(device_flag);
        Live {
            gw,
            uid,
            session_id,
            device_flag,
            counted: true,
        }
    }

    /// Takes the session out of `wkuser_sessions_open`, once.
    pub(super) fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.gw.metrics().session_closed(self.device_flag);
        }
    }

    pub(super) async fn run(
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
        // and inline they would sit in every idle session's task for its whole life.
        Box::pin(self.finish(end, out, writer, stream)).await;
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
pub(super) async fn write_loop(
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
