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

use crate::apply::Subscribers;
use crate::config::{Config, ConfigError};
use crate::domain::event::{NodeLifetime, NodeStart};
use crate::domain::{CloseReason, Command, NodeId, Seq};
use crate::gateway::{Gateway, GatewaySettings};
use crate::http::serve::ApiConnections;
use crate::http::{self, ApiContext, ApiLimits, ApiState, ManagerToken};
use crate::log::{EventLog, LogError, LogStore, SledStore};
use crate::presence::Presence;
use crate::view::projector::{self, Projector, ProjectorError};
use crate::view::{SqliteView, ViewError, ViewState, ViewStore};
use crate::write::{WriteError, WritePath};

/// How long the stop waits for sessions to close themselves, and then for HTTP requests in
/// hand, before it closes what is left.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    #[error(transparent)]
    Write(#[from] WriteError),
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
    projector: Projector,
    gateway: Arc<Gateway>,
    ready: Arc<AtomicBool>,
    stop_api: CancellationToken,
    api_task: JoinHandle<()>,
    gateway_task: JoinHandle<()>,
}

/// Opens the log in `config`'s data directory (sled locks it: one process at a time).
pub async fn open_log(config: &Config) -> Result<Arc<dyn LogStore>, StartError> {
    let dir = config.log_dir();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
        .await
        .map_err(LogError::storage)?
        .map_err(|e| e.in_data_dir(&config.data_dir, "stop it first"))?;
    Ok(Arc::new(store))
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
    /// Recovers the state in `config.data_dir` and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        for warning in config.check()? {
            tracing::warn!("{warning}");
        }
        let listeners = Listeners::bind(&config).await?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let store = open_log(&config).await?;
        Self::start_on(config, store, listeners).await
    }

    /// Like [`Server::start`], over a log store the caller opened (tests use failing stores).
    pub async fn start_with_log(
        config: Config,
        store: Arc<dyn LogStore>,
    ) -> Result<Server, StartError> {
        let listeners = Listeners::bind(&config).await?;
        Self::start_on(config, store, listeners).await
    }

    async fn start_on(
        config: Config,
        store: Arc<dyn LogStore>,
        listeners: Listeners,
    ) -> Result<Server, StartError> {
        let node_id = NodeId(config.node_id);
        let end = store.last_seq()?;
        let (view, state) = match open_view(&config, end).await {
            Ok(opened) => opened,
            Err(e) => {
                let e = view_damage(e, &config)?;
                set_view_aside(&config, &e)?;
                open_view(&config, end).await?
            }
        };
        let snapshot = state.checkpoint;
        let presence = Arc::new(Presence::load(
            state.tokens,
            state.open_sessions,
            state.system_uids,
        ));
        let subscribers = Arc::new(Subscribers::new(presence, snapshot));
        let log = EventLog::start_with(store, node_id, subscribers.clone())?;
        publish_tail(&log, &subscribers, snapshot).await?;
        let view = catch_up_view(&config, &log, view).await?;
        let write = Arc::new(WritePath::new(log.clone(), subscribers.clone()));
        let projector = Projector::spawn(
            log.clone(),
            view.clone(),
            log.last_durable(),
            subscribers.published(),
        );
        tracing::info!(last_seq = %log.last_durable(), "recovered the event log and the view");

        let left_open = close_all(&write, CloseReason::ServerRestart).await?;
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
        let boot_id = Uuid::now_v7();
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
        tracing::info!(node_id = %node_id, "listening api={api_addr} ws={ws_addr}");

        Ok(Server {
            api_addr,
            ws_addr,
            node_id,
            boot_id,
            write,
            view,
            projector,
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
        if let Err(e) = close_all(&self.write, CloseReason::ServerShutdown).await {
            tracing::error!(error = %e, "could not record every session's close");
        }
        // Returns within STOP_GRACE: what is still busy then is closed.
        self.stop_api.cancel();
        let _ = self.api_task.await;
        let stopped = Command::StopNode(lifetime_end(self.node_id, self.boot_id));
        if let Err(e) = self.write.execute(stopped).await {
            tracing::error!(error = %e, "could not record NodeStopped");
        }
        let log = self.write.log().clone();
        self.projector.stop().await;
        self.view.close().await;
        log.close().await;
        tracing::info!("stopped");
    }
}

/// Opens the view and reads its snapshot for memory, as of its checkpoint. A view that claims
/// more than a non-empty log holds belongs to another log: it is reported as unreadable. A view
/// with events beside an empty log is refused instead: what is missing is far more likely the
/// log (deleted, or a volume not mounted) than the view's history, and rebuilding from nothing
/// would bring the server up with every user gone.
async fn open_view(config: &Config, end: Seq) -> Result<(SqliteView, ViewState), StartError> {
    if end == Seq(0) {
        refuse_a_view_beside_an_empty_log(config).await?;
    }
    let view = SqliteView::open(&config.view_path()).await?;
    let state = async {
        let state = view.load_state().await?;
        if state.checkpoint > end {
            if end == Seq(0) {
                // Reached only when the read-only look failed and this open did not.
                return Err(log_empty_beside_view(config, state.checkpoint));
            }
            return Err(ViewError::Malformed(format!(
                "its checkpoint {} is past the end of the log ({end})",
                state.checkpoint
            ))
            .into());
        }
        Ok(state)
    }
    .await;
    match state {
        Ok(state) => Ok((view, state)),
        Err(e) => {
            view.close().await;
            Err(e)
        }
    }
}

/// Hands the log's events after `snapshot` to the subscribers: memory, restored from the view's
/// snapshot, reaches the log's end through the same path as every append.
async fn publish_tail(
    log: &EventLog,
    subscribers: &Subscribers,
    snapshot: Seq,
) -> Result<(), StartError> {
    let mut at = snapshot;
    loop {
        let reader = log.clone();
        let batch = tokio::task::spawn_blocking(move || reader.read_after(at, projector::BATCH))
            .await
            .map_err(LogError::storage)??;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        at = last.seq;
        subscribers.publish(&batch);
    }
}

/// Brings the view up to the log's end. A view found damaged on the way is set aside and built
/// again from the log (memory does not depend on it any more).
async fn catch_up_view(
    config: &Config,
    log: &EventLog,
    view: SqliteView,
) -> Result<Arc<dyn ViewStore>, StartError> {
    let end = log.last_durable();
    if view.checkpoint().await? == Seq(0) && end > Seq(0) {
        tracing::info!(
            events = end.0,
            "the SQL view is empty; rebuilding it from the log"
        );
    }
    match projector::catch_up(log, &view).await {
        Ok(_) => Ok(Arc::new(view)),
        Err(e) => {
            view.close().await;
            let e = view_damage(e.into(), config)?;
            set_view_aside(config, &e)?;
            let view = SqliteView::open(&config.view_path()).await?;
            projector::catch_up(log, &view).await?;
            Ok(Arc::new(view))
        }
    }
}

fn set_view_aside(config: &Config, e: &ViewError) -> Result<(), StartError> {
    let path = config.view_path();
    let aside = set_aside(&path)?;
    tracing::warn!(
        error = %e,
        "the SQL view {} is unreadable; moved it to {} and rebuilding it from the log",
        path.display(),
        aside.display()
    );
    Ok(())
}

/// With an empty log, looks at the view's checkpoint read-only first, whatever its schema
/// version, so that a refused start leaves the file exactly as it was: a read-write open could
/// fold its write-ahead log into it, and would migrate a view of an older schema before its
/// checkpoint could be read. A view that cannot be read this way is left to the full recovery
/// to judge.
async fn refuse_a_view_beside_an_empty_log(config: &Config) -> Result<(), StartError> {
    let path = config.view_path();
    if !path.exists() {
        return Ok(());
    }
    match SqliteView::peek_checkpoint(&path).await {
        Ok(checkpoint) if checkpoint > Seq(0) => Err(log_empty_beside_view(config, checkpoint)),
        _ => Ok(()),
    }
}

fn log_empty_beside_view(config: &Config, checkpoint: Seq) -> StartError {
    StartError::LogEmptyBesideView {
        log: config.log_dir().display().to_string(),
        view: config.view_path().display().to_string(),
        checkpoint,
    }
}

/// Sorts an error of the view's recovery by its cause, not by the step it showed at (open,
/// checkpoint, catch-up, load): `Ok` with the view's error when the view is damaged (see
/// [`ViewError::is_damage`]) and is to be set aside and rebuilt; `Err` with the error to refuse
/// the start with otherwise, the view left as it is.
fn view_damage(e: StartError, config: &Config) -> Result<ViewError, StartError> {
    match e {
        StartError::View(v) | StartError::Projector(ProjectorError::View(v)) => {
            if v.is_damage() {
                Ok(v)
            } else {
                Err(StartError::ViewUnusable {
                    path: config.view_path().display().to_string(),
                    error: v,
                })
            }
        }
        other => Err(other),
    }
}

/// Renames an unreadable view (and its WAL files) out of the way; returns the new name.
fn set_aside(path: &std::path::Path) -> Result<std::path::PathBuf, StartError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let aside = path.with_extension(format!("sqlite.corrupt-{stamp}"));
    let io = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::rename(path, &aside).map_err(io)?;
    for suffix in ["-wal", "-shm"] {
        let side = format!("{}{suffix}", path.display());
        if std::path::Path::new(&side).exists() {
            std::fs::rename(&side, format!("{}{suffix}", aside.display())).map_err(io)?;
        }
    }
    Ok(aside)
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

/// Records the close of every open session with `reason`; returns how many were closed.
async fn close_all(write: &Arc<WritePath>, reason: CloseReason) -> Result<usize, WriteError> {
    let open = write.presence().open_sessions();
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
