//! A TCP relay between a store and PostgreSQL that, once armed, loses one commit: the next
//! `COMMIT` either never reaches the database, or reaches it and its answer never comes back.
//! Either way the client's connection breaks at the commit, and only the database knows whether
//! the transaction was recorded.
//!
//! Owns the relay's listener and its connections. Promises: unarmed, it passes every byte
//! unchanged; armed, it cuts exactly one commit and says so in [`CommitCutter::cuts`]. Must
//! never: be given a TLS connection (the client must connect with `sslmode=disable`, so that the
//! commit can be seen).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The frontend's `COMMIT` as sqlx sends it: a simple query (`Q`, its length, the text, NUL).
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// Where the armed relay cuts.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// The `COMMIT` is dropped: the database never commits, and ends the transaction when the
    /// connection closes.
    BeforeCommit,
    /// The `COMMIT` reaches the database, which commits; its answer is dropped.
    AfterCommit,
}

pub struct CommitCutter {
    addr: SocketAddr,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CommitCutter {
    /// Relays to `upstream` from a port of its own.
    pub async fn start(upstream: SocketAddr) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("the relay's address");
        let armed = Arc::new(Mutex::new(None));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (armed_for, cuts_for) = (armed.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed_for.clone(), cuts_for.clone()));
            }
        });
        CommitCutter {
            addr,
            armed,
            cuts,
            accept,
        }
    }

    /// `url` (a `postgres://` URL) through the relay, without TLS.
    pub fn url_through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_once('/').expect("a URL with a database");
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{scheme}://{user}{}/{path}{sep}sslmode=disable", self.addr)
    }

    /// Cuts the next commit that passes.
    pub fn arm(&self, cut: Cut) {
        *self.armed.lock() = Some(cut);
    }

    /// How many commits were cut.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The server's address in `url`, for the relay to connect to.
pub async fn upstream_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL with a scheme").1;
    let authority = rest.split('/').next().expect("an authority");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    tokio::net::lookup_host(host_port)
        .await
        .expect("the server's host resolves")
        .next()
        .expect("an address")
}

/// Passes bytes both ways until either side closes, or until the armed cut ends the connection.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_in, mut client_out) = client.split();
    let (mut server_in, mut server_out) = server.split();
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // The client's last bytes, so that a commit split across two reads is seen too.
    let mut window: Vec<u8> = Vec::new();
    let mut answer_lost = false;
    loop {
        tokio::select! {
            read = client_in.read(&mut from_client) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                let chunk = &from_client[..n];
                window.extend_from_slice(chunk);
                let commit = window.windows(COMMIT.len()).any(|w| w == COMMIT);
                let keep = window.len().saturating_sub(COMMIT.len() - 1);
                window.drain(..keep);
                let cut = if commit { armed.lock().take() } else { None };
                if let Some(cut) = cut {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    match cut {
                        Cut::BeforeCommit => return,
                        Cut::AfterCommit => answer_lost = true,
                    }
                }
                if server_out.write_all(chunk).await.is_err() {
                    return;
                }
            }
            read = server_in.read(&mut from_server) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if answer_lost {
                    // The commit's answer: dropped with the connection.
                    return;
                }
                if client_out.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
