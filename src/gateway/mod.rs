//! The WebSocket gateway (`protocol.md` section 3): client apps hold one socket per device here.
//!
//! Owns accepting sockets and the limits on them: total open connections, connections not yet
//! authenticated (in total and per peer address), and the per-session settings. Each socket
//! is opened by [`connect`], lives in the [`session`] loop, and ends in [`close`]; every way a
//! session ends becomes a `Disconnected` event through the write path. Promises: a socket over a limit is dropped at once, before any work is spent on
//! it; at shutdown every socket is closed (1001) and accounted for. Must never: let one client
//! slow the accept loop or another client's session.

mod close;
mod connect;
mod first_frame;
mod frames;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use first_frame::{parse_first, FirstFrame};
pub use frames::{parse_inbound, Inbound};

use crate::apply::live::LiveSessions;
use crate::domain::NodeId;
use crate::write::WritePath;

/// The gateway's settings, from the config.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub node_id: NodeId,
    pub first_frame_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    pub outbound_queue: usize,
    pub slow_reader_limit: Duration,
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_pending_per_ip: usize,
}

impl GatewaySettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        GatewaySettings {
            node_id: NodeId(config.node_id),
            first_frame_timeout: config.first_frame_timeout,
            idle_timeout: config.idle_timeout,
            max_message_bytes: config.max_message_bytes,
            outbound_queue: config.outbound_queue,
            slow_reader_limit: config.slow_reader_limit,
            max_connections: config.max_connections,
            max_pending: config.max_pending,
            max_pending_per_ip: config.max_pending_per_ip,
        }
    }
}

pub struct Gateway {
    write: Arc<WritePath>,
    settings: GatewaySettings,
    open: AtomicUsize,
    pending: AtomicUsize,
    pending_by_ip: DashMap<IpAddr, usize, ahash::RandomState>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Gateway {
    pub fn new(write: Arc<WritePath>, settings: GatewaySettings) -> Arc<Self> {
        Arc::new(Gateway {
            write,
            settings,
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            pending_by_ip: DashMap::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    /// Accepts sockets until [`Gateway::shut_down`].
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Some(open) = self.admit_open() else {
                tracing::debug!(%peer, "connection limit reached; dropped");
                continue;
            };
            let Some(pending) = self.admit_pending(peer.ip()) else {
                tracing::debug!(%peer, "pending-connect limit reached; dropped");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let gw = self.clone();
            self.tracker
                .spawn(connect::run(gw, tcp, peer, open, pending));
        }
        drop(listener);
    }

    /// Stops accepting, tells every session to close (each records its own
    /// `server_shutdown`), and waits for them, at most `grace`.
    pub async fn shut_down(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close within {grace:?}");
        }
    }

    fn live(&self) -> &LiveSessions {
        self.write.subscribers().live()
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        self.write.metrics()
    }

    /// Open sockets (authenticated or not).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn admit_open(self: &Arc<Self>) -> Option<OpenGuard> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        let guard = OpenGuard(self.clone());
        (prev < self.settings.max_connections).then_some(guard)
    }

    fn admit_pending(self: &Arc<Self>, ip: IpAddr) -> Option<PendingGuard> {
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        let total = PendingGuard {
            gw: self.clone(),
            ip: None,
        };
        if prev >= self.settings.max_pending {
            return None;
        }
        let mut per_ip = self.pending_by_ip.entry(ip).or_insert(0);
        if *per_ip >= self.settings.max_pending_per_ip {
            return None;
        }
        *per_ip += 1;
        let mut guard = total;
        guard.ip = Some(ip);
        Some(guard)
    }
}

/// One open socket, counted until dropped.
pub(crate) struct OpenGuard(Arc<Gateway>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One socket not yet authenticated, counted (in total and per address) until dropped.
pub(crate) struct PendingGuard {
    gw: Arc<Gateway>,
    ip: Option<IpAddr>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.gw.pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            self.gw.pending_by_ip.remove_if_mut(&ip, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
    }
}

/// The address a peer is recorded under.
pub(crate) fn peer_text(peer: SocketAddr) -> String {
    peer.to_string()
}
