//! Replay: rebuild the SQL view from the log into a fresh database, completely or up to a seq
//! or a time ("what did the view look like then"), and verify: rebuild and compare with the
//! live view.
//!
//! Promises: the rebuilt view is what the projector would have written after the same events,
//! in one file and nothing beside it; `verify` reports every differing row, only reads the live
//! view, and leaves the data directory's files as it found them. Must never: write into an
//! existing database.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::across::{self, AtBoundary};
use crate::archive::ArchiveError;
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
    #[error("{0} is not a UTF-8 path: replay cannot name it to SQLite")]
    NotUtf8(PathBuf),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// `verify` of an archived log without its archives: the view's history before the
    /// boundary cannot be rebuilt from the live log alone.
    #[error(
        "the log was archived up to seq {boundary}: the view keeps the sessions that ended \
         before it, and only the archives can rebuild them; pass every archive with --archive: \
         {files}"
    )]
    NeedsArchives { boundary: Seq, files: String },
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
    /// The log was archived and no archive was given: the view was started at this seq from
    /// the boundary's state rows, without the sessions that had ended by then.
    pub from_state_at: Option<Seq>,
}

impl ReplayReport {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Applies the events to `view` (which should be empty) until `until`: those of `archives`
/// (every archive of the log, or none), then the live log's. `progress` hears the last applied
/// seq after each batch.
pub async fn replay(
    log: &EventLog,
    view: &SqliteView,
    until: Until,
    archives: &[PathBuf],
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
    let mut from = view.checkpoint().await?;
    let mut from_state_at = None;
    let mut applied = 0;
    if from == Seq(0) {
        match across::to_boundary(log, view, archives, until, &mut progress).await? {
            AtBoundary::NoBoundary => {}
            AtBoundary::Archives(at) => {
                applied = at.0;
                from = at;
            }
            AtBoundary::StoppedIn(at) => {
                return Ok(ReplayReport {
                    events: at.0,
                    last_seq: at,
                    elapsed: started.elapsed(),
                    from_state_at: None,
                })
            }
            AtBoundary::StateOnly(at) => {
                from_state_at = Some(at);
                from = at;
            }
        }
    }
    let last_seq = project_until(log, view, from, end, until_time, &mut progress).await?;
    Ok(ReplayReport {
        events: applied + (last_seq.0 - from.0),
        last_seq,
        elapsed: started.elapsed(),
        from_state_at,
    })
}

/// Replays into a new SQLite file at `path` (refused if it exists): one file, nothing beside
/// it, and nothing at all when the replay fails.
///
/// The view is built in a scratch database beside `path`, then copied into `path` whole
/// ([`copy_database`]), and the scratch removed. Built in place, the view would be a WAL
/// database: its `-wal` and `-shm` go away only when the last connection to it closes, and
/// sqlx's `Pool::close` can return while a connection is still on its way back to the pool
/// (sqlx issue #3217), so the process could end first and leave them; so would every later
/// read-only reader of the file.
pub async fn replay_into_file(
    log: &EventLog,
    path: &Path,
    until: Until,
    progress: impl FnMut(Seq),
) -> Result<ReplayReport, ReplayError> {
    replay_into_file_with(log, path, until, &[], progress).await
}

/// [`replay_into_file`] across the log's archive boundary with `archives` (see [`replay`]).
pub async fn replay_into_file_with(
    log: &EventLog,
    path: &Path,
    until: Until,
    archives: &[PathBuf],
    progress: impl FnMut(Seq),
) -> Result<ReplayReport, ReplayError> {
    if path.exists() {
        return Err(ReplayError::Exists(path.to_path_buf()));
    }
    let Some(target) = path.to_str() else {
        return Err(ReplayError::NotUtf8(path.to_path_buf()));
    };
    let scratch = PathBuf::from(format!(
        "{}.replaying-{}",
        path.display(),
        uuid::Uuid::now_v7()
    ));
    let outcome = async {
        let view = SqliteView::open(&scratch).await?;
        let report = replay(log, &view, until, archives, progress).await;
        view.close().await;
        let report = report?;
        copy_database(&scratch, target).await?;
        Ok(report)
    }
    .await;
    remove_database(&scratch);
    outcome
}

/// Writes the database at `from` into the new file `to` (`VACUUM INTO`): one file, in
/// SQLite's rollback-journal mode, which no reader needs a `-wal` or `-shm` for. Made the live
/// view, it is put back in WAL mode by [`SqliteView::open`].
async fn copy_database(from: &Path, to: &str) -> Result<(), ViewError> {
    let mut conn = SqliteConnectOptions::new().filename(from).connect().await?;
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(to)
        .execute(&mut conn)
        .await;
    conn.close().await?;
    copied?;
    Ok(())
}

/// Removes the database at `path` with whatever SQLite kept beside it. A connection sqlx has
/// not closed yet keeps the files it has open, and nothing else ever sees them.
fn remove_database(path: &Path) {
    for file in std::iter::once(path.to_path_buf()).chain(sidecars(path)) {
        let _ = std::fs::remove_file(file);
    }
}

/// The files SQLite keeps beside the WAL database at `path`.
fn sidecars(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
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
///
/// A reader of a WAL database makes its `-wal` and `-shm` when they are not there, and a
/// read-only one cannot remove them when it closes: those this read made are removed after it.
/// Safe because the caller holds the log, so no server is writing the view meanwhile; and the
/// `-wal` is removed only while empty, so that nothing written into it could be lost.
pub async fn verify(log: &EventLog, live_view: &Path) -> Result<Verdict, ReplayError> {
    verify_with(log, live_view, &[], |_, _| {}).await
}

/// [`verify`] across the log's archive boundary with `archives` (every archive of the log);
/// `progress` hears the rebuild's last applied seq and where it ends (the live checkpoint).
pub async fn verify_with(
    log: &EventLog,
    live_view: &Path,
    archives: &[PathBuf],
    progress: impl FnMut(Seq, Seq),
) -> Result<Verdict, ReplayError> {
    let absent: Vec<PathBuf> = sidecars(live_view)
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
    let read = read_live(live_view).await;
    let wal_empty = std::fs::metadata(&sidecars(live_view)[0]).map_or(true, |m| m.len() == 0);
    if wal_empty {
        for made in &absent {
            let _ = std::fs::remove_file(made);
        }
    }
    let (checkpoint, live_dump) = read?;
    compare_with_rebuild_with(log, checkpoint, &live_dump, archives, progress).await
}

/// Rebuilds the view from `log` up to `checkpoint` in a temporary SQLite file and compares it
/// with `live_dump`, a live view's dump as of that checkpoint (of either engine: their dumps
/// are the same text). The log must reach the checkpoint: open it after reading the view.
pub async fn compare_with_rebuild(
    log: &EventLog,
    checkpoint: Seq,
    live_dump: &ViewDump,
) -> Result<Verdict, ReplayError> {
    compare_with_rebuild_with(log, checkpoint, live_dump, &[], |_, _| {}).await
}

/// [`compare_with_rebuild`] across the log's archive boundary with `archives`, which must be
/// every archive of the log: the live view keeps the history they hold.
pub async fn compare_with_rebuild_with(
    log: &EventLog,
    checkpoint: Seq,
    live_dump: &ViewDump,
    archives: &[PathBuf],
    mut progress: impl FnMut(Seq, Seq),
) -> Result<Verdict, ReplayError> {
    if archives.is_empty() {
        if let Some(b) = across::boundary_of(log)? {
            return Err(ReplayError::NeedsArchives {
                boundary: b.seq,
                files: b.files(),
            });
        }
    }
    let scratch =
        std::env::temp_dir().join(format!("wkuser-verify-{}.sqlite", uuid::Uuid::now_v7()));
    let rebuilt = SqliteView::open(&scratch).await?;
    let outcome = async {
        replay(log, &rebuilt, Until::Seq(checkpoint), archives, |s| {
            progress(s, checkpoint)
        })
        .await?;
        Ok::<ViewDump, ReplayError>(rebuilt.dump().await?)
    }
    .await;
    rebuilt.close().await;
    remove_database(&scratch);
    let rebuilt_dump = outcome?;
    Ok(Verdict {
        checkpoint,
        behind: log.last_durable().0.saturating_sub(checkpoint.0),
        differences: live_dump.differences(&rebuilt_dump, usize::MAX),
    })
}

/// The live view's checkpoint and contents, read in one go and closed.
async fn read_live(path: &Path) -> Result<(Seq, ViewDump), ReplayError> {
    let live = SqliteView::open_existing_read_only(path)
        .await
        .map_err(|e| match e {
            ViewError::Missing(path) => ReplayError::NoView(path),
            other => other.into(),
        })?;
    let read = async { Ok::<_, ReplayError>((live.checkpoint().await?, live.dump().await?)) }.await;
    live.close().await;
    read
}
