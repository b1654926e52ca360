//! Wiring: build the whole node on a data directory and two ports, run it, stop it.
//!
//! Owns the lifetime order. Start: bind the ports (a taken port is refused before anything is
//! opened or created), open the log, restore memory from the SQL view's snapshot and hand it
//! the log's tail through the one apply path ([`crate::apply`]), catch the view up from its
//! checkpoint, close what the previous lifetime left open (`server_restart`), record
//! `NodeStarted` (with the bound addresses), and only then serve and turn `/readyz` to 200.
//! Stop: refuse new work, close every session (`server_shutdown`), record `NodeStopped`, let
//! the projector finish, release the data directory. Must never: serve a request before
//! recovery is over, or exit with an acknowledged event not yet in the view's reach (it is in
//! the log; the view catches up at the next start at the latest).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod embedded;
mod shared;

use crate::cluster::lease::{self, Lease, LeaseError, LeaseState};
use crate::config::{Config, ConfigError};
use crate::domain::event::{NodeLifetime, NodeStart};
use crate::domain::{CloseReason, Command, NodeId, Seq};
use crate::gateway::{Gateway, GatewaySettings};
use crate::http::serve::ApiConnections;
use crate::http::{self, ApiContext, ApiLimits, ApiState, ManagerToken};
use crate::log::{EventLog, LogError, LogStore};
use crate::view::projector::{Projector, ProjectorError};
use crate::view::{ViewError, ViewStore};
use crate::webhook::{CursorStore, Webhook, WebhookError, WebhookStatus};
use crate::write::{WriteError, WritePath};

/// How long the stop waits for sessions to close themselves, and then for HTTP requests in
/// hand, before it closes what is left.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error(
        "the SQL view {path} cannot be used, and was left in place: nothing says it is damaged, \
         so fix the cause (a lock held by another process, permissions, a full disk, a view \
         from a newer wkuser) and start again: {error}"
    )]
    // Not a `source`: the message carries it, and an error chain would print it twice more.
    ViewUnusable { path: String, error: ViewError },
    #[error(
        "the event log {log} is empty, but the SQL view {view} has applied events up to seq \
         {checkpoint}: the log was deleted, emptied or is not mounted, and starting would serve \
         no users. Restore the log to {log} (replacing the empty one this start left there) or \
         mount it, and start again; or, to start with no users on purpose, move {view} away \
         first"
    )]
    LogEmptyBesideView {
        log: String,
        view: String,
        checkpoint: Seq,
    },
    #[error(
        "the SQL view {view} has applied the events up to seq {checkpoint} only, but the log \
         is archived up to seq {boundary}: the events between are only in the archives. Move \
         {view} away to start a view from the log's snapshot at the boundary (`wkuser replay \
         --archive` rebuilds the history it held)"
    )]
    ViewBehindBoundary {
        view: String,
        checkpoint: Seq,
        boundary: Seq,
    },
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    api_addr: SocketAddr,
    ws_addr: SocketAddr,
    node_id: NodeId,
    boot_id: Uuid,
    write: Arc<WritePath>,
    view: Arc<dyn ViewStore>,
    /// With a shared log: the task that brings the other nodes' events.
    tail: Option<Tail>,
    /// With a shared log: the lease and the tasks that keep it.
    lease: Option<Leased>,
    /// With a shared log, the open sessions of other nodes are theirs to close.
    sessions_of_this_node_only: bool,
    projector: Projector,
    /// With --webhook-url: the delivery of `user.onlinestatus`.
    webhook: Option<Webhook>,
    gateway: Arc<Gateway>,
    ready: Arc<AtomicBool>,
    stop_api: CancellationToken,
    api_task: JoinHandle<()>,
    gateway_task: JoinHandle<()>,
}

/// What a recovery hands to the serving node: the log and the view caught up, memory restored
/// behind the write path.
struct Recovered {
    log: EventLog,
    view: Arc<dyn ViewStore>,
    /// The last seq the view holds: the log's end when recovery ended.
    projected: Seq,
    write: Arc<WritePath>,
    tail: Option<Tail>,
    /// With a shared log: this node's lease.
    lease: Option<Arc<Lease>>,
    sessions_of_this_node_only: bool,
    /// Where the webhook keeps its cursor (`None`: a log store a test opened, which has no
    /// place for it).
    webhook_cursor: Option<Arc<dyn CursorStore>>,
}

/// The tail of a shared log, running.
struct Tail {
    task: JoinHandle<()>,
    stop: CancellationToken,
    /// Whether the last read of the shared log worked (`/readyz` says 503 while not).
    reachable: Arc<AtomicBool>,
}

impl Tail {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A node's lease while it serves: the task that renews it (and closes lost peers' sessions),
/// and the one that carries out a fencing.
struct Leased {
    lease: Arc<Lease>,
    renewing: JoinHandle<()>,
    stop: CancellationToken,
}

/// What the lease says, carried out: fenced, the node refuses connects, reads as not ready and
/// closes its sockets without recording anything (the peer that declares it lost records the
/// ends); holding a new lease, it serves again.
fn lease_followed_by(write: Arc<WritePath>, ready: Arc<AtomicBool>) -> lease::OnLeaseChange {
    Arc::new(move |state| {
        let fenced = state == LeaseState::Fenced;
        write.set_fenced(fenced);
        ready.store(!fenced, Ordering::Release);
        if fenced {
            write.subscribers().live().close_all(CloseReason::NodeLost);
        }
    })
}

/// The two listeners, bound before anything else is done.
struct Listeners {
    api: TcpListener,
    ws: TcpListener,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Self, StartError> {
        Ok(Listeners {
            api: bind(config.api_addr).await?,
            ws: bind(config.ws_addr).await?,
        })
    }
}

impl Server {
    /// Recovers the state (in `config.data_dir`, or in the shared database of
    /// `config.database_url`) and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        for warning in config.check()? {
            tracing::warn!("{warning}");
        }
        let listeners = Listeners::bind(&config).await?;
        let recovered = match &config.database_url {
            Some(url) => shared::recover(&config, url).await?,
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    StartError::DataDir {
                        path: config.data_dir.display().to_string(),
                        source,
                    }
                })?;
                let (store, db) = embedded::open_log(&config).await?;
                embedded::recover(&config, store, Some(db)).await?
            }
        };
        Self::serve(config, recovered, listeners).await
    }

    /// Like [`Server::start`] on the embedded storage, over a log store the caller opened
    /// (tests use failing stores).
    pub async fn start_with_log(
        config: Config,
        store: Arc<dyn LogStore>,
    ) -> Result<Server, StartError> {
        let listeners = Listeners::bind(&config).await?;
        let recovered = embedded::recover(&config, store, None).await?;
        Self::serve(config, recovered, listeners).await
    }

    async fn serve(
        config: Config,
        recovered: Recovered,
        listeners: Listeners,
    ) -> Result<Server, StartError> {
        let node_id = NodeId(config.node_id);
        let Recovered {
            log,
            view,
            write,
            projected,
            tail,
            lease,
            sessions_of_this_node_only,
            webhook_cursor,
        } = recovered;
        let projector = Projector::spawn(
            log.clone(),
            view.clone(),
            projected,
            write.subscribers().published(),
        );
        // Before this lifetime's first event: the first start of a webhook begins at the end
        // of what was recovered, so the sessions the last lifetime left open get their offline
        // entries (`server_restart`) below.
        let webhook = match (config.webhook(), webhook_cursor) {
            (Some(settings), Some(cursors)) => Some(Webhook::spawn(
                &settings,
                log.clone(),
                view.clone(),
                write.subscribers().clone(),
                cursors,
            )?),
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "--webhook-url needs the server's own log, which keeps its cursor".into(),
                )
                .into())
            }
            (None, _) => None,
        };
        if let Some(webhook) = &webhook {
            write.metrics().webhook().follow(webhook.status().clone());
        }
        write.metrics().watch_view(projector.projected());
        tracing::info!(
            node_id = node_id.0,
            seq = projected.0,
            "recovered the event log and the view"
        );

        let mine = sessions_of_this_node_only.then_some(node_id);
        let left_open = close_all(&write, CloseReason::ServerRestart, mine).await?;
        if left_open > 0 {
            tracing::info!(
                sessions = left_open,
                "closed the sessions the previous lifetime left open"
            );
        }
        let local = |l: &TcpListener, addr: SocketAddr| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })
        };
        let api_addr = local(&listeners.api, config.api_addr)?;
        let ws_addr = local(&listeners.ws, config.ws_addr)?;
        let boot_id = lease.as_ref().map_or_else(Uuid::now_v7, |l| l.boot_id());
        // Bound, not yet served: the lifetime's first event names its addresses, and no
        // request is answered before it is recorded.
        write
            .execute(Command::StartNode(NodeStart {
                node_id,
                boot_id,
                version: env!("CARGO_PKG_VERSION").to_owned(),
                api_addr: Some(api_addr.to_string()),
                ws_addr: Some(ws_addr.to_string()),
            }))
            .await?;

        let ready = Arc::new(AtomicBool::new(false));
        let gateway = Gateway::new(write.clone(), GatewaySettings::from_config(&config));
        let api_state = ApiState::new(ApiContext {
            write: write.clone(),
            view: view.clone(),
            limits: ApiLimits {
                max_body_bytes: config.max_body_bytes,
                max_uids_per_request: config.max_uids_per_request,
            },
            manager_token: config.manager_token.as_deref().map(ManagerToken::new),
            ready: ready.clone(),
            gateway: gateway.clone(),
            lease: lease.clone(),
            storage_reachable: tail.as_ref().map(|t| t.reachable.clone()),
            webhook: webhook.as_ref().map(|w| w.status().clone()),
            node_id,
            started_at: crate::human::format_ms(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            ),
        });
        let stop_api = CancellationToken::new();
        let api = http::service(api_state);
        let api_task = tokio::spawn(http::serve::serve(
            listeners.api,
            api,
            ApiConnections {
                header_read_timeout: config.header_read_timeout,
                grace: STOP_GRACE,
            },
            stop_api.clone(),
        ));
        let gateway_task = tokio::spawn(gateway.clone().serve(listeners.ws));
        ready.store(true, Ordering::Release);
        let lease = lease.map(|lease| {
            let stop = CancellationToken::new();
            let on_change = lease_followed_by(write.clone(), ready.clone());
            let renewing = lease::spawn(lease.clone(), write.clone(), on_change, stop.clone());
            Leased {
                lease,
                renewing,
                stop,
            }
        });
        tracing::info!(node_id = node_id.0, "listening api={api_addr} ws={ws_addr}");

        Ok(Server {
            api_addr,
            ws_addr,
            node_id,
            boot_id,
            write,
            view,
            projector,
            webhook,
            tail,
            lease,
            sessions_of_this_node_only,
            gateway,
            ready,
            stop_api,
            api_task,
            gateway_task,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn write_path(&self) -> &Arc<WritePath> {
        &self.write
    }

    pub fn view(&self) -> &Arc<dyn ViewStore> {
        &self.view
    }

    /// The webhook's figures, when one is configured.
    pub fn webhook(&self) -> Option<&Arc<WebhookStatus>> {
        self.webhook.as_ref().map(|w| w.status())
    }

    /// Waits until the SQL view has applied every event up to `seq`.
    pub async fn view_caught_up(&self, seq: Seq) {
        let mut projected = self.projector.projected();
        let _ = projected.wait_for(|s| *s >= seq).await;
    }

    /// The graceful stop: see the module header. Returns once the data directory is released.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Release);
        self.gateway.shut_down(STOP_GRACE).await;
        let _ = self.gateway_task.await;
        self.write.finish_retries().await;
        // Sessions that could not close themselves in time are closed here.
        let mine = self.sessions_of_this_node_only.then_some(self.node_id);
        if let Err(e) = close_all(&self.write, CloseReason::ServerShutdown, mine).await {
            tracing::error!(error = %e, "could not record every session's close");
        }
        // Returns within STOP_GRACE: what is still busy then is closed.
        self.stop_api.cancel();
        let _ = self.api_task.await;
        let stopped = Command::StopNode(lifetime_end(self.node_id, self.boot_id));
        if let Err(e) = self.write.execute(stopped).await {
            tracing::error!(error = %e, "could not record NodeStopped");
        }
        // The offline entries of the sessions just closed, if the receiver takes them in time;
        // otherwise the next start sends them.
        if let Some(webhook) = self.webhook {
            let until = self.write.subscribers().last_published();
            webhook.stop(until, STOP_GRACE).await;
        }
        if let Some(leased) = self.lease {
            leased.stop.cancel();
            let _ = leased.renewing.await;
            leased.lease.give_up().await;
        }
        let log = self.write.log().clone();
        if let Some(tail) = self.tail {
            tail.stop().await;
        }
        self.projector.stop().await;
        self.view.close().await;
        log.close().await;
        tracing::info!("stopped");
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn lifetime_end(node_id: NodeId, boot_id: Uuid) -> NodeLifetime {
    NodeLifetime {
        node_id,
        boot_id,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Records the close of every open session (of node `only`, when given) with `reason`; returns
/// how many were closed.
async fn close_all(
    write: &Arc<WritePath>,
    reason: CloseReason,
    only: Option<NodeId>,
) -> Result<usize, WriteError> {
    let mut open = write.presence().open_sessions();
    if let Some(node) = only {
        open.retain(|(_, s)| s.node_id == node);
    }
    let n = open.len();
    let mut closes = tokio::task::JoinSet::new();
    for (uid, session) in open {
        let write = write.clone();
        closes.spawn(async move {
            write
                .execute(Command::Disconnect {
                    uid,
                    session_id: session.session_id,
                    reason,
                })
                .await
        });
    }
    while let Some(done) = closes.join_next().await {
        done.expect("a close task panicked")?;
    }
    Ok(n)
}
