//! The operator commands on a shared PostgreSQL database (`--database-url`): the log and the
//! view that several nodes share, read while those nodes keep running.
//!
//! Owns opening them for reading. Promises: nothing is written to the database, and its schema
//! is neither created nor migrated (a database that lacks this build's schema is refused, see
//! [`crate::postgres::connect_existing`]); what `verify` compares is one snapshot of the view
//! and a rebuild of the log up to that snapshot's checkpoint, so nodes appending meanwhile make
//! no false difference. Must never: append to the shared log, or name the database URL in an
//! error (it may carry a password).

use std::path::PathBuf;
use std::sync::Arc;

use super::replay::{compare_with_rebuild_with, ReplayError, Verdict};
use crate::domain::NodeId;
use crate::domain::Seq;
use crate::log::{EventLog, LogError, PostgresStore};
use crate::view::{PostgresView, ViewError, ViewStore};

/// Connections of an operator command's view pool: it reads in one transaction at a time.
const VIEW_CONNECTIONS: u32 = 2;

/// The shared log, for reading (nothing is appended through it: the node id is nobody's).
pub async fn open_shared_log(url: &str) -> Result<EventLog, LogError> {
    let url = url.to_owned();
    let store = tokio::task::spawn_blocking(move || PostgresStore::connect_existing(&url))
        .await
        .map_err(LogError::storage)??;
    EventLog::start(Arc::new(store), NodeId(0))
}

/// The shared view, for reading.
pub async fn open_shared_view(url: &str) -> Result<PostgresView, ViewError> {
    PostgresView::connect_existing(url, VIEW_CONNECTIONS).await
}

/// Compares the shared view with a rebuild of the shared log. The view's checkpoint and rows
/// are read first, in one snapshot; the log is opened after, so its end is at or past that
/// checkpoint (a projector applies only events already committed to the log).
pub async fn verify_shared(url: &str) -> Result<Verdict, ReplayError> {
    verify_shared_with(url, &[], |_, _| {}).await
}

/// [`verify_shared`] across the log's archive boundary with `archives` (every archive of the
/// log); `progress` hears the rebuild's last applied seq and where it ends.
pub async fn verify_shared_with(
    url: &str,
    archives: &[PathBuf],
    progress: impl FnMut(Seq, Seq),
) -> Result<Verdict, ReplayError> {
    let view = open_shared_view(url).await?;
    let read = view.checkpoint_and_dump().await;
    view.close().await;
    let (checkpoint, live_dump) = read?;
    let log = open_shared_log(url).await?;
    let verdict = compare_with_rebuild_with(&log, checkpoint, &live_dump, archives, progress).await;
    log.close().await;
    verdict
}
