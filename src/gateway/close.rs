//! The end of a session: recording it, and closing the socket within the contract's limit.
//!
//! Owns what happens once the session loop has ended: the `Disconnected` recorded through the
//! write path (which retries a close the log refuses), the kick notification and the close
//! frame, the flush limit and the linger that lets the peer read our close frame before the FIN,
//! and which WebSocket errors are protocol violations (1002). Promises: every ending records
//! exactly one `Disconnected`, or finds it already recorded by whoever closed the session; a
//! close ordered by the server completes within two seconds whatever the client does. Must
//! never: wait on a client that does not read.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::frames;
use super::session::{End, Live, Out, Ws};
use crate::domain::CloseReason;

/// How long a closing session may spend queueing its last frames (kick notification, close
/// frame) and flushing them; with [`LINGER`], within the contract's two seconds.
pub(super) const FLUSH_LIMIT: Duration = Duration::from_millis(1000);
/// How long a closed socket is drained so that the peer reads the close frame before the FIN.
pub(super) const LINGER: Duration = Duration::from_millis(500);

impl Live {
    /// Records how the session ended and carries the close out: the farewell frames queued
    /// and sent within [`FLUSH_LIMIT`], then the linger.
    pub(super) async fn finish(
        mut self,
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
                // A node fenced from its lease closes its sockets as going away, like a stop.
                let code = if matches!(reason, CloseReason::ServerShutdown | CloseReason::NodeLost)
                {
                    CloseCode::Away
                } else {
                    CloseCode::Normal
                };
                if reason == CloseReason::NodeLost {
                    // A fence orders the close with nothing recorded, and leaves the record to
                    // whoever declares the node lost, from memory: a connect still in flight
                    // then, recorded a moment later, is in nobody's memory yet, and would stay
                    // online with no socket. Recorded here too; a session already closed
                    // decides to nothing, so each still ends once.
                    self.record(reason).await;
                }
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
        tracing::debug!(uid = %self.uid, session_id = %self.session_id,
            device_flag = %self.device_flag.name(), node_id = self.gw.settings.node_id.0, %reason,
            "session closed");
        // Ended: no longer counted open, though its farewell frames may take a moment more.
        self.uncount();

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
        self.gw.live().unregister(self.session_id);
        // Boxed: awaited once, at the end, it would otherwise be part of every idle session's
        // future.
        Box::pin(
            self.gw
                .write
                .close_session(self.uid.clone(), self.session_id, reason),
        )
        .await;
    }
}

/// Closes an unsplit socket with `code` (or answers the client's close) and drains it.
pub(super) async fn close(mut ws: Ws, code: CloseCode, reason: &'static str) {
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
pub(super) async fn linger(mut ws: Ws) {
    linger_tcp(ws.get_mut()).await;
}

/// Sends our FIN, then reads what the peer still sends (up to [`LINGER`]): closing a socket
/// with unread input makes the kernel reset it, and the peer may lose our last bytes.
pub(super) async fn linger_tcp(tcp: &mut TcpStream) {
    let _ = tcp.shutdown().await;
    // On the heap: a buffer on the stack would sit in every session's future for its whole life.
    let mut buf = vec![0u8; 4096];
    let _ = timeout(LINGER, async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The close reason for a frame that breaks RFC 6455 (closed with 1002, 7.4.1), or `None` for
/// the protocol errors that are no bad frame: `ResetWithoutClosingHandshake` is how tungstenite
/// reports a socket that dropped without a close frame; the handshake's errors end before a
/// session loop starts; `ReceivedAfterClosing` needs a read after a close frame, which neither
/// loop does (the linger after it reads the bare socket); `SendAfterClosing` is the write half's.
pub(super) fn protocol_violation(e: &ProtocolError) -> Option<&'static str> {
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
