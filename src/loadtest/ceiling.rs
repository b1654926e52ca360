//! The ceilings: the fastest this stack can do the two things the server does, measured on the
//! same machine in the same run. A bare WebSocket server that accepts and echoes (what a connect
//! costs before any work of ours), and an HTTP server that answers `/user/onlinestatus` with a
//! constant body of the real answer's size (what a request costs before any work of ours).
//!
//! Both are built from the server's own stack (tokio, tokio-tungstenite with the gateway's
//! message limits, axum 0.8 with its `http1` feature) and run on a runtime of their own, on
//! their own threads, sized like the server's, so that they compete with the load tool's client
//! for the two cores the way the server process does. The echo server reads through a 4 KiB
//! buffer: tungstenite's default (128 KiB, zeroed in full at the first read) would put the cost
//! of a needless 128 KiB into the ceiling and let a server that wastes it look close to "bare". Promises: they listen on 127.0.0.1 port 0
//! only, and stop (every socket closed) when [`Ceilings::stop`] returns.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's default message limit (`--max-message-bytes`), so the echo server reads
/// frames under the same limits as the gateway.
const MAX_MESSAGE_BYTES: usize = 65_536;
/// The echo server's read buffer (see the module header).
pub const READ_BUFFER_BYTES: usize = 4096;

pub struct Ceilings {
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ceilings {
    /// Starts both servers; the HTTP one answers every POST `/user/onlinestatus` with `body`.
    pub fn start(body: Vec<u8>) -> std::io::Result<Ceilings> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ceiling")
            .build()?;
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ceilings".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let bound = async {
                        let ws = TcpListener::bind("127.0.0.1:0").await?;
                        let http = TcpListener::bind("127.0.0.1:0").await?;
                        Ok::<_, std::io::Error>((ws, http))
                    }
                    .await;
                    let (ws, http) = match bound {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addrs_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = addrs_tx.send(Ok((
                        ws.local_addr().expect("bound"),
                        http.local_addr().expect("bound"),
                    )));
                    tokio::spawn(echo_server(ws));
                    tokio::spawn(constant_server(http, Bytes::from(body)));
                    let _ = stop_rx.await;
                });
                // Dropping the runtime cancels every task: all ceiling sockets close here.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        let (ws_addr, http_addr) = addrs_rx
            .recv()
            .map_err(|_| std::io::Error::other("the ceiling thread died"))??;
        Ok(Ceilings {
            ws_addr,
            http_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops both servers and waits until their sockets are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Accepts WebSockets and echoes every text frame: a connect at its cheapest.
async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(echo(tcp));
    }
}

async fn echo(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    // Reading on after the client's close frame sends the close reply, then ends.
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            if ws.send(Message::Text(t)).await.is_err() {
                return;
            }
        }
    }
}

/// Answers POST `/user/onlinestatus` with a constant body after reading the request's.
async fn constant_server(listener: TcpListener, body: Bytes) {
    let app = Router::new().route(
        "/user/onlinestatus",
        post(move |request: Bytes| {
            let body = body.clone();
            async move {
                drop(request);
                constant(body)
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

fn constant(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
