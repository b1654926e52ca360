//! The ceilings: the fastest this stack can do the two things the server does, measured on the
//! same machine in the same run. A bare WebSocket server that accepts and echoes (what a connect
//! costs before any work of ours), and an HTTP server that answers `/user/onlinestatus` with a
//! constant body of the real answer's size (what a request costs before any work of ours).
//!
//! Both are built from the server's own stack (tokio, tokio-tungstenite with the gateway's
//! message limits, axum 0.8 with its `http1` feature) and run in a process of their own (this
//! binary, `wkuser-loadtest ceiling`), on the same default runtime and allocator as
//! `wkuser serve`: the client then talks to the ceiling across a process boundary exactly as it
//! talks to the server, and the two compete for the machine's cores the same way. (Served from
//! a thread of the load tool itself, the ceiling paid no cross-process switches and looked
//! faster than any separate server could be.) The echo server reads through a 4 KiB buffer:
//! tungstenite's default (128 KiB, zeroed in full at the first read) would put the cost of a
//! needless 128 KiB into the ceiling and let a server that wastes it look close to "bare".
//! Promises: they listen on 127.0.0.1 port 0 only; the child ends when its stdin closes (the
//! tool stopping it, or the tool dying) and [`Ceilings::stop`] waits for it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's default message limit (`--max-message-bytes`), so the echo server reads
/// frames under the same limits as the gateway.
const MAX_MESSAGE_BYTES: usize = 65_536;
/// The echo server's read buffer (see the module header).
pub const READ_BUFFER_BYTES: usize = 4096;
/// The hidden subcommand of this binary that runs the ceilings (see `main.rs`).
pub const CEILING_SUBCOMMAND: &str = "ceiling";
/// The line the child prints once both servers listen.
const READY: &str = "ceiling-ready";

/// Options of the hidden `wkuser-loadtest ceiling`, started by the tool itself only.
#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// The constant body to answer onlinestatus with.
    #[arg(long)]
    pub answer: String,
}

/// The ceiling servers, running in a child process.
pub struct Ceilings {
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    child: Child,
}

impl Ceilings {
    /// Starts both servers in a child process; the HTTP one answers every POST
    /// `/user/onlinestatus` with `body`.
    pub async fn start(body: &[u8]) -> anyhow::Result<Ceilings> {
        let body = std::str::from_utf8(body).context("the answer is JSON, so UTF-8")?;
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut child = Command::new(exe)
            .arg(CEILING_SUBCOMMAND)
            .arg("--answer")
            .arg(body)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting `wkuser-loadtest ceiling`")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            bail!("the ceiling process did not say where it listens");
        }
        let mut words = line.split_whitespace();
        let (Some(READY), Some(ws), Some(http)) = (words.next(), words.next(), words.next()) else {
            bail!("the ceiling process said {line:?}");
        };
        Ok(Ceilings {
            ws_addr: ws.parse().context("the ceiling's WebSocket address")?,
            http_addr: http.parse().context("the ceiling's HTTP address")?,
            child,
        })
    }

    /// Stops both servers and waits until the process (and so every socket of it) is gone.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The child's side: listens, says where on stdout, serves until stdin closes.
pub async fn serve(args: CeilingArgs) -> anyhow::Result<()> {
    let ws = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    println!("{READY} {} {}", ws.local_addr()?, http.local_addr()?);
    tokio::spawn(echo_server(ws));
    tokio::spawn(constant_server(http, Bytes::from(args.answer)));
    // Ends at EOF or an error: either way the tool is done with us.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    Ok(())
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
