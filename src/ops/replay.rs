//! Replay: rebuild the SQL view from the log into a fresh database, completely or up to a seq
//! or a time ("what did the view look like then"), and verify: rebuild and compare with the
//! live view.
//!
//! Promises: the rebuilt view is what the projector would have written after the same events;
//! `verify` reports every differing row, and only reads the live view. Must never: write into an
//! existing database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::domain::Seq;
use crate::log::{EventLog, LogError};
use crate::view::projector::{project_until, ProjectorError};
use crate::view::{SqliteView, ViewDump, ViewError, ViewStore};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("{0} exists; replay writes only into a fresh database")]
    Exists(PathBuf),
    #[error("no SQL view at {0}: nothing to verify; start the server once to build it")]
    NoView(PathBuf),
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    End,
    /// The last seq to apply.
    Seq(Seq),
    /// Apply events recorded at or before this time (ms since the epoch).
    Time(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    pub events: u64,
    pub last_seq: Seq,
    pub elapsed: Duration,
}

impl ReplayReport {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Applies the log's events to `view` (which should be empty) until `until`. `progress` hears
/// the last applied seq after each batch.
pub async fn replay(
    log: &EventLog,
    view: &dyn ViewStore,
    until: Until,
    mut progress: impl FnMut(Seq),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let end = match until {
        Until::Seq(s) => s.min(log.last_durable()),
        _ => log.last_durable(),
    };
    let until_time = match until {
        Until::Time(t) => Some(t),
        _ => None,
    };
    let from = view.checkpoint().await?;
    let last_seq = project_until(log, view, from, end, until_time, &mut progress).await?;
    Ok(ReplayReport {
        events: last_seq.0 - from.0,
        last_seq,
        elapsed: started.elapsed(),
    })
}

/// Replays into a new SQLite file at `path` (refused if it exists).
pub async fn replay_into_file(
    log: &EventLog,
    path: &Path,
    until: Until,
    progress: impl FnMut(Seq),
) -> Result<ReplayReport, ReplayError> {
    if path.exists() {
        return Err(ReplayError::Exists(path.to_path_buf()));
    }
    let view = SqliteView::open(path).await?;
    let report = replay(log, &view, until, progress).await;
    view.close().await;
    report
}

/// The outcome of comparing a rebuilt view with the live one.
#[derive(Debug)]
pub struct Verdict {
    /// The live view's checkpoint: the rebuild stops there too.
    pub checkpoint: Seq,
    /// Durable events the live view has not applied yet (it catches up at the next start).
    pub behind: u64,
    pub differences: Vec<String>,
}

/// Rebuilds the view up to the live view's checkpoint in a temporary file and compares. The
/// live view is only read: it must exist (an empty one made here would match an empty
/// rebuild) and be of this build's schema (see [`SqliteView::open_existing_read_only`]).
pub async fn verify(log: &EventLog, live_view: &Path) -> Result<Verdict, ReplayError> {
    let live = SqliteView::open_existing_read_only(live_view)
        .await
        .map_err(|e| match e {
            ViewError::Missing(path) => ReplayError::NoView(path),
            other => other.into(),
        })?;
    let checkpoint = live.checkpoint().await?;
    let live_dump = live.dump().await?;
    live.close().await;
    let scratch =
        std::env::temp_dir().join(format!("wkuser-verify-{}.sqlite", uuid::Uuid::now_v7()));
    let rebuilt = SqliteView::open(&scratch).await?;
    let outcome = async {
        replay(log, &rebuilt, Until::Seq(checkpoint), |_| {}).await?;
        Ok::<ViewDump, ReplayError>(rebuilt.dump().await?)
    }
    .await;
    rebuilt.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
    }
    let rebuilt_dump = outcome?;
    Ok(Verdict {
        checkpoint,
        behind: log.last_durable().0.saturating_sub(checkpoint.0),
        differences: live_dump.differences(&rebuilt_dump, usize::MAX),
    })
}
