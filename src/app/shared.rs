//! Recovery on a shared PostgreSQL database: the log and the view several nodes share.
//!
//! Owns the start-up of a node that shares its log: connect, restore memory from the shared
//! view's snapshot, follow the log from there (the [`Follower`] publishes every node's events,
//! this one's as they commit and the others' through the [`crate::cluster::tail`]), catch the
//! view up. Promises: memory and the view reach the log's end before anything is served; this
//! node closes only its own sessions at start and at stop. Must never: touch another node's
//! sessions at start (they are that node's to close), or run a database call on an async
//! worker thread.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Recovered, StartError, Tail};
use crate::apply::Subscribers;
use crate::cluster::lease::Lease;
use crate::cluster::{self, Follower};
use crate::config::Config;
use crate::domain::NodeId;
use crate::log::{EventLog, LogError, LogStore, PostgresStore};
use crate::view::projector;
use crate::view::{PostgresView, ViewError, ViewStore};
use crate::webhook::PgCursor;
use crate::write::WritePath;

/// Connections of the view's pool: the projector's and the API's reads.
const VIEW_CONNECTIONS: u32 = 4;

pub(super) async fn recover(config: &Config, url: &str) -> Result<Recovered, StartError> {
    let opening = url.to_owned();
    let store: Arc<dyn LogStore> =
        Arc::new(blocking(move || PostgresStore::connect(&opening)).await?);
    let view = PostgresView::connect(url, VIEW_CONNECTIONS).await?;
    // Before anything of this node's previous lifetime is touched: a live node holding the
    // same id refuses this start.
    let lease = Lease::take(
        view.pool().clone(),
        NodeId(config.node_id),
        config.node_lease,
    )
    .await?;
    let state = view.load_state().await?;
    let snapshot = state.checkpoint;
    let reader = store.clone();
    let end = blocking(move || reader.last_seq()).await?;
    let reader = store.clone();
    if let Some(bytes) = blocking(move || reader.boundary()).await? {
        let boundary = crate::archive::Boundary::decode(&bytes)?;
        if snapshot < boundary.seq {
            return Err(ViewError::Malformed(format!(
                "the shared view's checkpoint {snapshot} is before the shared log's archive \
                 boundary ({}): the events between are only in the archives",
                boundary.seq
            ))
            .into());
        }
    }
    if snapshot > end {
        return Err(ViewError::Malformed(format!(
            "the shared view's checkpoint {snapshot} is past the end of the shared log ({end})"
        ))
        .into());
    }
    let subscribers = Arc::new(Subscribers::from_snapshot(state));
    let follower = Arc::new(Follower::new(store.clone(), subscribers.clone(), snapshot));
    let log = EventLog::start_with(store, NodeId(config.node_id), follower.clone())?;
    let following = follower.clone();
    let at = blocking(move || following.catch_up()).await?;
    let view: Arc<dyn ViewStore> = Arc::new(view);
    let projected = projector::project(&log, view.as_ref(), snapshot, at, |_| {}).await?;
    let stop = CancellationToken::new();
    let reachable = Arc::new(AtomicBool::new(true));
    let tail = Tail {
        task: cluster::tail::spawn(follower.clone(), reachable.clone(), stop.clone()),
        stop,
        reachable,
    };
    let write = Arc::new(WritePath::shared(log.clone(), subscribers, follower));
    Ok(Recovered {
        log,
        view,
        projected,
        write,
        tail: Some(tail),
        lease: Some(Arc::new(lease)),
        sessions_of_this_node_only: true,
        webhook_cursor: Some(Arc::new(PgCursor::new(url, NodeId(config.node_id)))),
    })
}

/// Runs a blocking database call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(LogError::storage)?
}
