//! Operator tools behind the CLI: replay and verify of the SQL view, the audit table, the event
//! dump, each usable on a stopped data directory and, where it makes sense, against a running
//! server through its API.
//!
//! Owns nothing persistent. Promises: read-only on the live data (replay writes only into a
//! fresh file of its own; the live view is opened read-only, never created or migrated; a
//! shared database is read without touching its schema, [`shared`]), except the one command
//! that moves a stopped node's log into an empty shared database ([`migrate`]), and the one
//! that moves old events out of a stopped live log into an archive file ([`archive`]). Must
//! never: open the sled log of a running server (sled allows one process per directory; a
//! running server is reached through its API instead).

pub mod across;
pub mod archive;
pub mod audit;
pub mod client;
pub mod migrate;
pub mod replay;
pub mod shared;

use std::path::Path;

use crate::domain::NodeId;
use crate::log::{EventLog, LogError, SledStore};

/// Opens the log of a stopped data directory, read-only in effect (nothing is appended). A
/// data directory a server holds is refused with [`LogError::InUse`], naming it; callers with
/// another way to what they want say so with [`LogError::in_data_dir`].
pub async fn open_stopped_log(data_dir: &Path) -> Result<EventLog, LogError> {
    let store = open_stopped_store(data_dir).await?;
    EventLog::start(std::sync::Arc::new(store), NodeId(0))
}

/// The sled store of a stopped data directory, for reading its events as they are stored.
pub async fn open_stopped_store(data_dir: &Path) -> Result<SledStore, LogError> {
    let dir = data_dir.join("log");
    // An archive's swap that a crash interrupted leaves the log under another name until the
    // next open finishes it: finished here too, before the log is looked for.
    crate::log::sled_rewrite::finish_interrupted(&dir)?;
    if !dir.exists() {
        return Err(LogError::storage(format_args!(
            "{} holds no event log (no {})",
            data_dir.display(),
            dir.display()
        )));
    }
    tokio::task::spawn_blocking(move || SledStore::open(&dir))
        .await
        .map_err(LogError::storage)?
        .map_err(|e| e.in_data_dir(data_dir, "stop it first"))
}
