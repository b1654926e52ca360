//! A TCP relay between a store and PostgreSQL that, once armed, loses one commit: the next
//! append (the CALL of `wk_log_append_durable`, a statement that commits the batch and then
//! flushes it before it answers) either never reaches the database, or reaches it and its answer
//! never comes back. Either way the client's connection breaks at the commit, and only the
//! database knows whether the batch was recorded.
//!
//! The relay reads the frontend's messages: a `Parse` of a statement naming `wk_log_append`
//! names the statement, and a `Bind` of that name runs it (sqlx prepares a statement once per
//! connection, then binds it by name). Owns the relay's listener and its connections.
//! Promises: unarmed, it passes every byte unchanged; armed, it cuts exactly one append and says
//! so in [`CommitCutter::cuts`]. Must never: be given a TLS connection (the client must connect
//! with `sslmode=disable`, so that the messages can be read).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the statement of an append calls.
const APPEND_CALL: &[u8] = b"wk_log_append";

/// Where the armed relay cuts.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// The append is dropped: the database never runs it.
    BeforeCommit,
    /// The append reaches the database, which runs and commits it (its answer is flushed at
    /// the end, after the commit); the answer is dropped.
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

    /// Cuts the next append that passes.
    pub fn arm_at(&self, cut: Cut) {
        *self.armed.lock() = Some(cut);
    }

    /// How many appends were cut.
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
    let mut frontend = Frontend::default();
    let mut answer_lost = false;
    loop {
        tokio::select! {
            read = client_in.read(&mut from_client) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                frontend.pending.extend_from_slice(&from_client[..n]);
                // Whole messages only, each looked at before it is passed on.
                while let Some(message) = frontend.next_message() {
                    let cut = frontend.runs_append(&message).then(|| armed.lock().take()).flatten();
                    if let Some(cut) = cut {
                        cuts.fetch_add(1, Ordering::SeqCst);
                        match cut {
                            Cut::BeforeCommit => return,
                            Cut::AfterCommit => answer_lost = true,
                        }
                    }
                    if server_out.write_all(&message).await.is_err() {
                        return;
                    }
                }
            }
            read = server_in.read(&mut from_server) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if answer_lost {
                    // The append's answer: dropped with the connection.
                    return;
                }
                if client_out.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The frontend's side of one connection: bytes not yet cut into messages, and the names of
/// the statements that append.
#[derive(Default)]
struct Frontend {
    pending: Vec<u8>,
    started: bool,
    appends: Vec<Vec<u8>>,
}

impl Frontend {
    /// The next whole message, taken out of `pending`: the startup message first (a length,
    /// no type byte), then typed messages (a type byte, then a length that counts itself).
    fn next_message(&mut self) -> Option<Vec<u8>> {
        let (start, len_at) = if self.started { (1, 1) } else { (0, 0) };
        let len_bytes = self.pending.get(len_at..len_at + 4)?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("four bytes")) as usize;
        let whole = start + len;
        if self.pending.len() < whole {
            return None;
        }
        self.started = true;
        let message: Vec<u8> = self.pending.drain(..whole).collect();
        self.remember(&message);
        Some(message)
    }

    /// Notes the name of a statement prepared to call `wk_log_append`.
    fn remember(&mut self, message: &[u8]) {
        if message.first() != Some(&b'P') {
            return;
        }
        let mut fields = message[5..].split(|b| *b == 0);
        let (Some(name), Some(query)) = (fields.next(), fields.next()) else {
            return;
        };
        // A name prepared again (the unnamed statement, each time) names the new statement.
        self.appends.retain(|known| known != name);
        if query.windows(APPEND_CALL.len()).any(|w| w == APPEND_CALL) {
            self.appends.push(name.to_vec());
        }
    }

    /// Whether `message` runs an append: a `Bind` of a statement noted.
    fn runs_append(&self, message: &[u8]) -> bool {
        if message.first() != Some(&b'B') {
            return false;
        }
        let mut fields = message[5..].split(|b| *b == 0);
        let (Some(_portal), Some(statement)) = (fields.next(), fields.next()) else {
            return false;
        };
        self.appends.iter().any(|name| name == statement)
    }
}
