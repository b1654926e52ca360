//! Leases: how the nodes sharing a database know which of them are alive.
//!
//! Owns the `nodes` table. A node takes its id's lease at start (refused while another live
//! node holds it), renews it every tenth of its length (at most 1 s apart), and gives it up when it stops. Every
//! node looks for peers whose lease ran out and closes their open sessions as `node_lost`
//! through the write path, whose guards make each close happen once however many peers race.
//! A node that cannot renew in time fences itself ([`LeaseState::Fenced`]): its sessions may
//! already be closed by a peer, so it closes its sockets and refuses connects until it holds a
//! new lease. Promises: every time the nodes compare is the database's clock; a node's own
//! deadline, past which it refuses connects even before its renewal task notices (a process
//! resumed from a freeze), counts from before each renewal was asked, so it never runs past
//! what the peers see. Must never: renew a lease that has run out (a peer may have declared
//! the node lost), or close a live peer's sessions.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{CloseReason, Command, NodeId, OpenSession, Uid};
use crate::write::WritePath;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "node id {node_id} is held by a live node (its lease runs until {until}): give this \
         node another --node-id, or stop the other one"
    )]
    Held { node_id: NodeId, until: String },
    #[error("node lease: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Whether this node may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// The lease ran out before it could be renewed: peers may have closed this node's
    /// sessions. Sockets are closed and connects refused until a new lease is taken.
    Fenced,
}

/// One row of `GET /cluster/nodes`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeRow {
    pub node_id: u64,
    pub started_at: String,
    /// `None` for a node on the embedded storage, which holds no lease.
    pub lease_expires_at: Option<String>,
    pub alive: bool,
    pub sessions_open: usize,
}

/// The lease of one node.
pub struct Lease {
    pool: PgPool,
    node_id: NodeId,
    length: Duration,
    boot_id: parking_lot::Mutex<Uuid>,
    state: watch::Sender<LeaseState>,
    /// When the lease taken at start runs out, counted from before it was asked for.
    taken_until: std::time::Instant,
}

impl Lease {
    /// Takes the lease of `node_id` for a new lifetime, waiting for a previous holder's lease
    /// to run out (a node restarted after a crash finds its old lease still running); refused
    /// when it is still held once a whole lease length has passed (a live node renews it).
    pub async fn take(pool: PgPool, node_id: NodeId, length: Duration) -> Result<Self, LeaseError> {
        let boot_id = Uuid::now_v7();
        let deadline = tokio::time::Instant::now() + length + Duration::from_secs(2);
        let taken_until = loop {
            let asked = std::time::Instant::now();
            if try_take(&pool, node_id, boot_id, length).await? {
                break asked + length;
            }
            if tokio::time::Instant::now() >= deadline {
                let until: String = sqlx::query_scalar(
                    "SELECT to_char(lease_expires_at AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM nodes WHERE node_id = $1",
                )
                .bind(node_id.0 as i64)
                .fetch_one(&pool)
                .await?;
                return Err(LeaseError::Held { node_id, until });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Ok(Lease {
            pool,
            node_id,
            length,
            boot_id: parking_lot::Mutex::new(boot_id),
            state: watch::channel(LeaseState::Held).0,
            taken_until,
        })
    }

    /// This lifetime's id.
    pub fn boot_id(&self) -> Uuid {
        *self.boot_id.lock()
    }

    /// Whether the node may serve, and a way to follow it.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// Renews the lease; `false` when it had run out (it is not renewed then).
    async fn renew(&self) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE nodes SET lease_expires_at = now() + make_interval(secs => $3::float8) \
             WHERE node_id = $1 AND boot_id = $2::uuid AND NOT stopped AND lease_expires_at > now()",
        )
        .bind(self.node_id.0 as i64)
        .bind(self.boot_id().to_string())
        .bind(self.length.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Gives the lease up at a clean stop: peers have nothing to close, and a restart need
    /// not wait for it to run out.
    pub async fn give_up(&self) {
        let released = sqlx::query(
            "UPDATE nodes SET stopped = true, lease_expires_at = now() \
             WHERE node_id = $1 AND boot_id = $2::uuid",
        )
        .bind(self.node_id.0 as i64)
        .bind(self.boot_id().to_string())
        .execute(&self.pool)
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not give the node's lease up; peers will find it run out");
        }
    }

    /// The nodes whose lease ran out without a clean stop, other than this one.
    async fn lost_peers(&self) -> Result<Vec<NodeId>, sqlx::Error> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT node_id FROM nodes WHERE lease_expires_at < now() AND NOT stopped \
             AND node_id <> $1",
        )
        .bind(self.node_id.0 as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(|id| NodeId(id as u64)).collect())
    }

    /// Whether `node`'s lease has still run out (not renewed, not taken again, not given up).
    async fn still_lost(&self, node: NodeId) -> Result<bool, sqlx::Error> {
        let lost: Option<bool> = sqlx::query_scalar(
            "SELECT lease_expires_at < now() AND NOT stopped FROM nodes WHERE node_id = $1",
        )
        .bind(node.0 as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(lost.unwrap_or(false))
    }

    /// Every node that shared this database, as `GET /cluster/nodes` lists them; the sessions
    /// each holds are counted from `write`'s memory.
    pub async fn nodes(&self, write: &WritePath) -> Result<Vec<NodeRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT node_id, \
             to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             to_char(lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             (lease_expires_at > now() AND NOT stopped) FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut open = std::collections::HashMap::<u64, usize>::new();
        for (_, session) in write.presence().open_sessions() {
            *open.entry(session.node_id.0).or_default() += 1;
        }
        rows.into_iter()
            .map(|row| {
                let node_id = row.try_get::<i64, _>(0)? as u64;
                Ok(NodeRow {
                    node_id,
                    started_at: row.try_get(1)?,
                    lease_expires_at: Some(row.try_get(2)?),
                    alive: row.try_get(3)?,
                    sessions_open: open.get(&node_id).copied().unwrap_or(0),
                })
            })
            .collect()
    }
}

/// Takes the lease if nobody holds it: no row yet, or the holder's ran out or was given up.
async fn try_take(
    pool: &PgPool,
    node_id: NodeId,
    boot_id: Uuid,
    length: Duration,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "INSERT INTO nodes (node_id, boot_id, started_at, lease_expires_at) \
         VALUES ($1, $2::uuid, now(), now() + make_interval(secs => $3::float8)) \
         ON CONFLICT (node_id) DO UPDATE SET boot_id = EXCLUDED.boot_id, started_at = now(), \
         lease_expires_at = EXCLUDED.lease_expires_at, stopped = false \
         WHERE nodes.lease_expires_at < now() OR nodes.stopped",
    )
    .bind(node_id.0 as i64)
    .bind(boot_id.to_string())
    .bind(length.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// What the node does when its lease state changes (fenced: stop serving; held: serve).
pub type OnLeaseChange = Arc<dyn Fn(LeaseState) + Send + Sync>;

/// Renews the lease and closes lost peers' sessions every tenth of the lease, at most a second
/// apart, until `stop`. The protocol closes a lost peer's sessions within lease + 2 s: looking
/// every fifth of a 10 s lease could spend the whole margin before the first look.
/// `on_change` runs at once, on this task, when the node is fenced and when it holds a lease
/// again.
pub fn spawn(
    lease: Arc<Lease>,
    write: Arc<WritePath>,
    on_change: OnLeaseChange,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = (lease.length / 10).min(Duration::from_secs(1));
        let mut last_renewed = tokio::time::Instant::now();
        write.hold_lease_until(lease.taken_until);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let asked = std::time::Instant::now();
            match lease.renew().await {
                Ok(true) => {
                    last_renewed = tokio::time::Instant::now();
                    write.hold_lease_until(asked + lease.length);
                }
                Ok(false) => fence(
                    &lease,
                    &on_change,
                    "the lease ran out before it was renewed",
                ),
                Err(e) => {
                    if last_renewed.elapsed() >= lease.length {
                        fence(&lease, &on_change, "the lease could not be renewed in time");
                    }
                    tracing::warn!(error = %e, "cannot renew the node's lease; retrying");
                }
            }
            if *lease.state.borrow() == LeaseState::Fenced {
                if retake(&lease, &write).await {
                    last_renewed = tokio::time::Instant::now();
                    on_change(LeaseState::Held);
                }
                continue;
            }
            match lease.lost_peers().await {
                Ok(lost) => {
                    for node in lost {
                        // The sessions first, then the lease looked at again: a peer that took
                        // a new lease meanwhile keeps every session, the new ones included.
                        let open = open_sessions_of(&write, node);
                        match lease.still_lost(node).await {
                            Ok(true) => close_as_lost(&write, node, open).await,
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot look at a peer's lease"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for lost peers"),
            }
        }
    })
}

fn fence(lease: &Lease, on_change: &OnLeaseChange, why: &str) {
    if lease.state.send_replace(LeaseState::Fenced) != LeaseState::Fenced {
        tracing::error!(node_id = %lease.node_id, why,
            "fenced: closing this node's sockets and refusing connects until it holds a new lease");
        on_change(LeaseState::Fenced);
    }
}

/// A fenced node takes a new lease for a new lifetime once the database lets it; `true` once it
/// holds one. The sessions of its old lifetime that no peer closed yet are closed first, as
/// their peers would have: once the node holds a lease again, no peer will.
async fn retake(lease: &Lease, write: &WritePath) -> bool {
    let boot_id = Uuid::now_v7();
    let asked = std::time::Instant::now();
    match try_take(&lease.pool, lease.node_id, boot_id, lease.length).await {
        Ok(true) => {
            write.hold_lease_until(asked + lease.length);
            let open = open_sessions_of(write, lease.node_id);
            close_as_lost(write, lease.node_id, open).await;
            *lease.boot_id.lock() = boot_id;
            let start = crate::domain::event::NodeStart {
                node_id: lease.node_id,
                boot_id,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                api_addr: None,
                ws_addr: None,
            };
            if let Err(e) = write.execute(Command::StartNode(start)).await {
                tracing::warn!(error = %e, "could not record the new lifetime's start");
            }
            lease.state.send_replace(LeaseState::Held);
            tracing::info!(node_id = %lease.node_id, %boot_id, "holds a new lease: serving again");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take a new lease yet");
            false
        }
    }
}

/// The open sessions of `node`, as memory holds them now.
fn open_sessions_of(write: &WritePath, node: NodeId) -> Vec<(Uid, OpenSession)> {
    write
        .presence()
        .open_sessions()
        .into_iter()
        .filter(|(_, s)| s.node_id == node)
        .collect()
}

/// Closes `open`, sessions of `node`, as `node_lost`. Several peers may do it at once: the
/// write path's guards let one `Disconnected` through per session. The closes run at once, up
/// to [`CLOSES_AT_ONCE`], so that the log's writer takes them in a few batches: one after the
/// other, each paid a round trip to the database, and a node holding thousands of sessions
/// would leave them online long past lease + 2 s.
async fn close_as_lost(write: &WritePath, node: NodeId, open: Vec<(Uid, OpenSession)>) {
    if open.is_empty() {
        return;
    }
    tracing::info!(node_id = %node, sessions = open.len(), "a node's lease ran out: closing its sessions as node_lost");
    futures_util::stream::iter(open)
        .for_each_concurrent(CLOSES_AT_ONCE, |(uid, session)| async move {
            let close = Command::Disconnect {
                uid,
                session_id: session.session_id,
                reason: CloseReason::NodeLost,
            };
            if let Err(e) = write.execute(close).await {
                tracing::warn!(error = %e, "could not close a lost node's session; the next look tries again");
            }
        })
        .await;
}

/// How many closes of a lost node's sessions are in flight at once: a batch of the log's
/// writer can hold them all.
const CLOSES_AT_ONCE: usize = 1024;
