//! Recovery on the embedded storage: the sled log and the SQLite view in the data directory.
//!
//! Owns the start-up of a single node: restore memory from the view's snapshot, publish the
//! log's tail, catch the view up; a damaged view is set aside and rebuilt from the log, a view
//! beside an empty log is refused. After an archive ([`crate::archive`]) the log starts at its
//! boundary: a view rebuilt then starts from the boundary's state rows instead of seq 0 (its
//! history before the boundary is in the archives), and a view that stopped before the
//! boundary is refused. Promises: memory and the view both reach the log's end
//! before anything is served. Must never: rebuild a view that nothing says is damaged (a lock,
//! permissions, a full disk, a newer schema refuse the start instead), or change a view whose
//! start is refused.

use std::sync::Arc;
use std::time::Instant;

use super::{Recovered, StartError};
use crate::apply::Subscribers;
use crate::archive::Boundary;
use crate::config::Config;
use crate::domain::{NodeId, Seq};
use crate::log::{EventLog, LogError, LogStore, SledStore};
use crate::view::projector::{self, ProjectorError};
use crate::view::{SqliteView, ViewError, ViewState, ViewStore};
use crate::webhook::{CursorStore, SledCursor, WebhookError};
use crate::write::WritePath;

/// Opens the log, the view and memory on `store`, and brings them to the log's end; the
/// webhook's cursor is kept in `cursor_db`, the store's own sled database, when given.
pub(super) async fn recover(
    config: &Config,
    store: Arc<dyn LogStore>,
    cursor_db: Option<sled::Db>,
) -> Result<Recovered, StartError> {
    let end = store.last_seq()?;
    let boundary = match store.boundary()? {
        Some(bytes) => Some(Boundary::decode(&bytes)?),
        None => None,
    };
    let mut found_damaged = false;
    let (log, view, subscribers) = loop {
        let opening = Instant::now();
        let (view, state) = match open_view(config, end, boundary.as_ref()).await {
            Ok(opened) => opened,
            Err(e) => {
                let e = view_damage(e, config)?;
                set_view_aside(config, &e)?;
                open_view(config, end, boundary.as_ref()).await?
            }
        };
        let read = opening.elapsed();
        let snapshot = state.checkpoint;
        // An empty view beside a log (deleted, or never made): the view is rebuilt first and
        // memory restored from it after, as at any start. Folding the whole log into memory
        // first took a third of the rebuild's time again (22 s of 69 s at 5,000,000 events),
        // where reading the rebuilt view's snapshot takes 3 s.
        let rebuild_first = snapshot == Seq(0) && end > Seq(0);
        let subscribers = Arc::new(Subscribers::from_snapshot(state));
        if !rebuild_first {
            log_restored(&subscribers, snapshot, read, opening.elapsed() - read);
        }
        let log = EventLog::start_with(store.clone(), NodeId(config.node_id), subscribers.clone())?;
        if !rebuild_first {
            let tail_started = Instant::now();
            publish_tail(&log, &subscribers, snapshot).await?;
            if log.last_durable() > snapshot {
                tracing::info!(
                    events = log.last_durable().0 - snapshot.0,
                    ms = tail_started.elapsed().as_millis() as u64,
                    "memory moved past the snapshot with the log's tail"
                );
            }
        }
        let Some(view) = catch_up_view(config, &log, view, found_damaged).await? else {
            // Memory came from the snapshot of the view just found damaged and set aside:
            // start again from a new view (nothing is served yet).
            log.close().await;
            found_damaged = true;
            continue;
        };
        if rebuild_first {
            let reading = Instant::now();
            let state = view.load_state().await?;
            let read = reading.elapsed();
            let checkpoint = state.checkpoint;
            subscribers
                .memory()
                .restore(state.tokens, state.open_sessions, state.system_uids);
            subscribers.last_seen().load(state.last_seen);
            subscribers.restored_at(checkpoint);
            log_restored(&subscribers, checkpoint, read, reading.elapsed() - read);
            publish_tail(&log, &subscribers, checkpoint).await?;
        }
        break (log, view, subscribers);
    };
    let write = Arc::new(WritePath::new(log.clone(), subscribers));
    let webhook_cursor = match cursor_db {
        Some(db) => Some(
            Arc::new(SledCursor::open(&db, log.clone()).map_err(WebhookError::from)?)
                as Arc<dyn CursorStore>,
        ),
        None => None,
    };
    Ok(Recovered {
        projected: log.last_durable(),
        log,
        view,
        write,
        tail: None,
        lease: None,
        sessions_of_this_node_only: false,
        webhook_cursor,
    })
}

fn log_restored(
    subscribers: &Subscribers,
    checkpoint: Seq,
    read: std::time::Duration,
    build: std::time::Duration,
) {
    let (users, sessions) = subscribers.memory().counts();
    tracing::info!(
        users,
        sessions,
        checkpoint = checkpoint.0,
        read_ms = read.as_millis() as u64,
        build_ms = build.as_millis() as u64,
        "memory restored from the SQL view's snapshot"
    );
}

/// Opens the log in `config`'s data directory (sled locks it: one process at a time); its
/// database is given too, for the webhook's cursor beside it.
pub(super) async fn open_log(config: &Config) -> Result<(Arc<dyn LogStore>, sled::Db), StartError> {
    let (dir, cache_mb) = (config.log_dir(), config.log_cache_mb);
    let started = Instant::now();
    let store = tokio::task::spawn_blocking(move || SledStore::open_with_cache(&dir, cache_mb))
        .await
        .map_err(LogError::storage)?
        .map_err(|e| e.in_data_dir(&config.data_dir, "stop it first"))?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "opened the event log"
    );
    let db = store.db().clone();
    Ok((Arc::new(store), db))
}

/// Opens the view and reads its snapshot for memory, as of its checkpoint. A view that claims
/// more than a non-empty log holds belongs to another log: it is reported as unreadable. A view
/// with events beside an empty log is refused instead: what is missing is far more likely the
/// log (deleted, or a volume not mounted) than the view's history, and rebuilding from nothing
/// would bring the server up with every user gone.
async fn open_view(
    config: &Config,
    end: Seq,
    boundary: Option<&Boundary>,
) -> Result<(SqliteView, ViewState), StartError> {
    if end == Seq(0) {
        refuse_a_view_beside_an_empty_log(config).await?;
    }
    let view = SqliteView::open_with_cache(&config.view_path(), config.view_cache_mb).await?;
    let state = async {
        if let Some(b) = boundary {
            start_at_boundary(config, &view, b).await?;
        }
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

/// A view beside an archived log: an empty one is started from the boundary's state rows (the
/// log no longer holds the events before it); one that stopped before the boundary is refused
/// (the events it lacks are only in the archives).
async fn start_at_boundary(
    config: &Config,
    view: &SqliteView,
    boundary: &Boundary,
) -> Result<(), StartError> {
    let at = view.checkpoint().await?;
    if at == Seq(0) {
        tracing::info!(
            boundary = %boundary.seq,
            rows = %boundary.state.summary(),
            "the SQL view is empty and the log is archived up to the boundary: starting the view from the log's snapshot there (the sessions that ended before it are in the archives: {})",
            boundary.files()
        );
        view.seed(&boundary.state).await?;
    } else if at < boundary.seq {
        return Err(StartError::ViewBehindBoundary {
            view: config.view_path().display().to_string(),
            checkpoint: at,
            boundary: boundary.seq,
        });
    }
    Ok(())
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

/// Brings the view up to the log's end. A view found damaged on the way is set aside, and
/// `None` says so: the caller starts again with a new view, unless `found_damaged` says it
/// already did (the damage is then refused rather than looped over).
async fn catch_up_view(
    config: &Config,
    log: &EventLog,
    view: SqliteView,
    found_damaged: bool,
) -> Result<Option<Arc<dyn ViewStore>>, StartError> {
    let end = log.last_durable();
    if view.checkpoint().await? == Seq(0) && end > Seq(0) {
        tracing::info!(
            events = end.0,
            "the SQL view is empty; rebuilding it from the log"
        );
    }
    match projector::catch_up(log, &view).await {
        Ok(_) => Ok(Some(Arc::new(view))),
        Err(e) => {
            view.close().await;
            if found_damaged {
                return Err(e.into());
            }
            let e = view_damage(e.into(), config)?;
            set_view_aside(config, &e)?;
            Ok(None)
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
