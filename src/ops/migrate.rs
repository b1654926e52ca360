//! `wkuser migrate-to-postgres`: a single node grows up. Its sled log moves into an empty
//! shared PostgreSQL database, and the shared view is built from it there, so that nodes
//! started on the database find every user, token and session history.
//!
//! Owns the move. Promises: each event keeps its bytes, seq, event_id, recorded_at and node_id
//! (the bytes are copied as they are, never decoded and encoded again, so an event of an older
//! version stays that version); the moved log is dense from 1, in batches that each commit
//! whole. The target is refused unless no node ever started on it and the events it holds are
//! a prefix of this log: empty, or moved there by an interrupted run of this same move, which
//! then resumes where it stopped. So nothing is merged into a history of its own, and a move
//! killed half-way is finished by running it again. Must never: write into the data
//! directory, or run while the node holds it (sled's lock refuses that), or while nodes run on
//! the target.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::open_stopped_store;
use crate::domain::{NodeId, RecordedEvent, Seq};
use crate::log::{EncodedRecord, EventLog, LogError, LogStore, PostgresStore, SledStore};
use crate::view::projector::{self, ProjectorError};
use crate::view::{PostgresView, ViewError, ViewStore};

/// Events per transaction of the move, unless the caller says otherwise.
pub const IMPORT_BATCH: usize = 4096;

/// Connections of the view's pool while it is built: one projector writes.
const VIEW_CONNECTIONS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Projector(#[from] ProjectorError),
    #[error(
        "the target database is not empty ({0}): migrate-to-postgres moves a log only into \
         an empty database, or finishes its own interrupted move"
    )]
    NotEmpty(&'static str),
    #[error(
        "the log is archived up to seq {0}: migrate-to-postgres moves a whole log from seq 1; \
         move the log before archiving it, or archive it on the shared database after"
    )]
    Archived(Seq),
}

/// What the migration is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Copying the log's events into the shared log.
    Moving,
    /// Building the shared view from the moved log.
    Projecting,
}

#[derive(Debug, Clone, Copy)]
pub struct MigrationReport {
    pub events: u64,
    /// Where an interrupted move had stopped, when this run finished it.
    pub resumed_after: Option<Seq>,
    pub last_seq: Seq,
    pub elapsed: Duration,
}

/// Moves the log of the stopped data directory `data_dir` into the database at `url` (whose
/// schema is brought up to date first), `batch` events per transaction, then builds the shared
/// view. `started` hears, before anything is moved, the seq the target already holds (0, or
/// where an interrupted move stopped) and the log's last seq; `progress` hears the stage and
/// the last seq done after each batch.
pub async fn migrate(
    data_dir: &Path,
    url: &str,
    batch: usize,
    mut started: impl FnMut(Seq, Seq),
    mut progress: impl FnMut(Stage, Seq),
) -> Result<MigrationReport, MigrateError> {
    let began = Instant::now();
    let source =
        Arc::new(open_stopped_store(data_dir).await.map_err(|e| {
            e.in_data_dir(data_dir, "stop it first: only a stopped node's log moves")
        })?);
    if let Some(bytes) = source.boundary()? {
        let seq = crate::archive::Boundary::decode(&bytes)
            .map(|b| b.seq)
            .map_err(LogError::storage)?;
        return Err(MigrateError::Archived(seq));
    }
    crate::postgres::probe(url)
        .await
        .map_err(|e| LogError::storage(format_args!("cannot open the shared log: {e}")))?;
    let opening = url.to_owned();
    let target = Arc::new(blocking(move || PostgresStore::connect(&opening)).await?);
    let reading = source.clone();
    let end = blocking(move || reading.last_seq()).await?;
    let (checking, reading) = (target.clone(), source.clone());
    let mut at = blocking(move || moved_so_far(&reading, &checking, end)).await??;
    started(at, end);
    let resumed = (at > Seq(0)).then_some(at);
    while at < end {
        let (source, target) = (source.clone(), target.clone());
        at = blocking(move || move_batch(&source, &target, at, batch)).await?;
        progress(Stage::Moving, at);
    }
    drop(source);
    let log = EventLog::start(target, NodeId(0))?;
    let built = async {
        let view = PostgresView::connect(url, VIEW_CONNECTIONS).await?;
        let from = view.checkpoint().await;
        let projected = match from {
            Ok(from) => {
                projector::project(&log, &view, from, end, |s| progress(Stage::Projecting, s)).await
            }
            Err(e) => Err(e.into()),
        };
        view.close().await;
        Ok::<_, MigrateError>(projected?)
    }
    .await;
    log.close().await;
    let last_seq = built?;
    Ok(MigrationReport {
        events: end.0,
        resumed_after: resumed,
        last_seq,
        elapsed: began.elapsed(),
    })
}

/// Where the move stands: the seq up to which `target` already holds `source`'s log (0 for an
/// empty database), or why the target is refused. The events there are compared with the
/// source's at both ends of that prefix: each carries its random event id, so a log of another
/// history cannot match, and the batches between them committed whole.
fn moved_so_far(
    source: &SledStore,
    target: &PostgresStore,
    end: Seq,
) -> Result<Result<Seq, MigrateError>, LogError> {
    let Some(moved) = target.moved_so_far()? else {
        return Ok(Err(MigrateError::NotEmpty("a node has started on it")));
    };
    if moved == Seq(0) {
        return Ok(Ok(moved));
    }
    if moved > end {
        return Ok(Err(MigrateError::NotEmpty("a longer log than this one")));
    }
    for seq in [Seq(1), moved] {
        let before = Seq(seq.0 - 1);
        if source.read_after(before, 1)? != target.read_after(before, 1)? {
            return Ok(Err(MigrateError::NotEmpty("events of another log")));
        }
    }
    Ok(Ok(moved))
}

/// Copies the events after `after` (up to `batch` of them) in one transaction; returns the
/// last seq copied.
fn move_batch(
    source: &SledStore,
    target: &PostgresStore,
    after: Seq,
    batch: usize,
) -> Result<Seq, LogError> {
    let raw = source.read_after(after, batch.max(1))?;
    let Some((last, _)) = raw.last() else {
        return Err(LogError::storage(format_args!(
            "the log ends at seq {after}, before its last seq"
        )));
    };
    let last = *last;
    let mut batch_id = None;
    let mut records = Vec::with_capacity(raw.len());
    for (seq, bytes) in raw {
        // Decoded only to index it under its uids, and to refuse what no node could read.
        let event = RecordedEvent::decode(seq, &bytes).map_err(|e| LogError::corrupt(seq, e))?;
        batch_id.get_or_insert(event.event_id);
        records.push(EncodedRecord {
            seq,
            bytes,
            uids: event.event.uids().to_vec(),
        });
    }
    let batch_id = batch_id.expect("a batch of at least one event");
    target.import(batch_id, &records)?;
    Ok(last)
}

/// Runs a blocking store call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(LogError::storage)?
}
