//! `wkuser archive`: moves the events recorded before a time out of the live log into an
//! archive file, and shrinks the live log (`protocol.md` section 10; the file and the boundary
//! are [`crate::archive`]'s).
//!
//! Owns the run, in this order, which keeps [`crate::archive`]'s invariant at every instant:
//! 1. plan the cut: the longest run of events after the current boundary recorded before
//!    `--before`, stopped short of what the view has not applied, of what the webhook has not
//!    delivered, and of the live log's last event (its end is where the next seq comes from);
//! 2. write the archive file (`FILE.partial`, synced, renamed, the directory synced), and fold
//!    the same events into a scratch SQLite view seeded with the previous boundary's state
//!    rows, whose state rows become the new boundary's;
//! 3. in one atomic step, drop the range from the live log and record the new boundary: a
//!    rewrite of the sled log swapped in ([`crate::log::sled_rewrite`]), or one transaction on
//!    the shared database followed by `VACUUM FULL`.
//!
//! A run killed anywhere is run again: before step 3 the live log is whole and names no new
//! archive (a complete file it does not name is replaced by the rerun); after it, the boundary
//! names a complete file. Only a stopped server's data directory is archived (sled's lock
//! refuses a running one), and a shared database only while no node's lease is alive.
//!
//! Must never: overwrite a file that is not a leftover archive of this log, or change the
//! live log before the archive file is durable. `step` names each point of the run to the
//! caller (the CLI pauses at one when the test-only `WK_TEST_ARCHIVE_PAUSE_AT` names it, so
//! that a test can kill it there).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::across::boundary_of;
use super::replay::ReplayError;
use crate::archive::file::{read_header_of, ArchiveWriter, Header, FORMAT, VERSION};
use crate::archive::{ArchiveEntry, ArchiveError, Boundary};
use crate::domain::{NodeId, RecordedEvent, Seq};
use crate::log::{sled_rewrite, EventLog, LogError, PostgresStore};
use crate::view::projector::BATCH;
use crate::view::{PostgresView, SqliteView, StateRows, ViewError, ViewStore};
use crate::webhook::SledCursor;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveRunError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{0}")]
    Refused(String),
}

/// What a run did.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing to move: `why` says what stopped the cut where it is.
    Nothing {
        why: String,
    },
    Archived(ArchiveReport),
}

#[derive(Debug)]
pub struct ArchiveReport {
    pub file: PathBuf,
    pub first_seq: Seq,
    pub last_seq: Seq,
    /// What stopped the cut before `--before`, when something did.
    pub limited_by: Option<String>,
    pub file_bytes: u64,
    /// The live log's bytes on disk before and after.
    pub live_before: u64,
    pub live_after: u64,
    pub elapsed: Duration,
}

/// Where the cut stops and why it stops there.
struct Cut {
    upto: Seq,
    limited_by: Option<String>,
}

/// The longest run of events after `after` recorded before `before_ms`, up to `cap`.
fn plan_cut(
    log: &EventLog,
    after: Seq,
    before_ms: i64,
    caps: &[(Seq, String)],
) -> Result<Cut, LogError> {
    let (cap, why) = caps
        .iter()
        .min_by_key(|(s, _)| *s)
        .cloned()
        .expect("the live log's end is always a cap");
    let mut at = after;
    loop {
        let batch = log.read_after(at, 4096)?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            if e.recorded_at >= before_ms || e.seq > cap {
                let limited_by = (e.seq > cap && e.recorded_at < before_ms).then_some(why);
                return Ok(Cut {
                    upto: at,
                    limited_by,
                });
            }
            at = e.seq;
        }
    }
    Ok(Cut {
        upto: at.min(cap),
        limited_by: None,
    })
}

/// `out` made absolute, and checked: a file there must be a leftover archive of an
/// interrupted run (complete, and not named by the boundary), which this run replaces.
fn check_out(out: &Path, previous: Option<&Boundary>) -> Result<PathBuf, ArchiveRunError> {
    let out = std::path::absolute(out).map_err(|e| ArchiveError::io(out, e))?;
    if !out.exists() {
        return Ok(out);
    }
    let header = read_header_of(&out).map_err(|e| {
        ArchiveRunError::Refused(format!(
            "{} exists ({e}): archive writes only a new file; choose another --out",
            out.display()
        ))
    })?;
    let named = previous.is_some_and(|b| {
        b.archives.iter().any(|a| {
            Path::new(&a.file) == out.as_path()
                || (a.first_seq, a.last_seq) == (header.first_seq, header.last_seq)
        })
    });
    if named {
        return Err(ArchiveRunError::Refused(format!(
            "{} already holds seq {}..={} of this log: choose another --out",
            out.display(),
            header.first_seq,
            header.last_seq
        )));
    }
    tracing::warn!(file = %out.display(), "replacing an archive that an interrupted run left behind (the live log still holds its events)");
    Ok(out)
}

/// Writes the events `first..=upto` of `log` into the archive at `out`, and folds them into a
/// scratch view seeded with `previous`'s state rows; returns the state rows at `upto` and the
/// event at `upto`.
async fn write_archive(
    log: &EventLog,
    previous: Option<&Boundary>,
    upto: Seq,
    out: &Path,
    before: &str,
    step: &mut impl FnMut(&'static str),
    progress: &mut impl FnMut(Seq, Seq),
) -> Result<(StateRows, RecordedEvent), ArchiveRunError> {
    let first = previous.map_or(Seq(1), |b| b.seq.next());
    let last = log
        .read_after(Seq(upto.0 - 1), 1)?
        .pop()
        .filter(|e| e.seq == upto)
        .ok_or_else(|| ArchiveRunError::Refused(format!("the live log lacks seq {upto}")))?;
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        first_seq: first,
        last_seq: upto,
        events: upto.0 - first.0 + 1,
        last_event_id: last.event_id,
        before: before.to_owned(),
        created_at: crate::human::format_ms(now_ms()),
    };
    let scratch =
        std::env::temp_dir().join(format!("wkuser-archive-{}.sqlite", uuid::Uuid::now_v7()));
    let view = SqliteView::open(&scratch).await?;
    let outcome = async {
        if let Some(b) = previous {
            view.seed(&b.state).await?;
        }
        let mut writer = ArchiveWriter::create(out, &header)?;
        let mut at = first.0 - 1;
        let mut said = false;
        while at < upto.0 {
            let want = (upto.0 - at).min(BATCH as u64) as usize;
            let batch = log.read_after(Seq(at), want)?;
            let Some(end) = batch.last().map(|e| e.seq) else {
                return Err(ArchiveRunError::Refused(format!(
                    "the live log ends at seq {at}, before {upto}"
                )));
            };
            for e in &batch {
                writer.write(e)?;
            }
            view.apply(&batch).await?;
            at = end.0;
            progress(Seq(at), upto);
            if !said {
                step("archive-writing");
                said = true;
            }
        }
        writer.finish()?;
        step("archive-written");
        Ok(view.state_rows().await?)
    }
    .await;
    view.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
    }
    Ok((outcome?, last))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The new boundary: `previous`'s archives and this one's, the state at `last`.
fn next_boundary(
    previous: Option<&Boundary>,
    out: &Path,
    last: &RecordedEvent,
    state: StateRows,
) -> Boundary {
    let first = previous.map_or(Seq(1), |b| b.seq.next());
    let mut archives = previous.map(|b| b.archives.clone()).unwrap_or_default();
    archives.push(ArchiveEntry {
        file: out.display().to_string(),
        first_seq: first,
        last_seq: last.seq,
    });
    Boundary {
        seq: last.seq,
        last_event_id: last.event_id,
        last_recorded_at: last.recorded_at,
        archives,
        state,
    }
}

/// Bytes on disk under `path` (blocks allocated, not apparent lengths: sled's files are
/// sparse at their ends).
pub fn bytes_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| bytes_on_disk(&e.path()))
                    .sum::<u64>()
            })
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

/// What an operator asked to archive: the events recorded before `before_ms` (`before` as the
/// operator wrote it, which the archive's header repeats), into the new file `out`.
pub struct ArchiveRequest<'a> {
    pub before_ms: i64,
    pub before: &'a str,
    pub out: &'a Path,
}

/// Archives a stopped node's data directory.
pub async fn archive_data_dir(
    data_dir: &Path,
    request: &ArchiveRequest<'_>,
    mut step: impl FnMut(&'static str),
    mut progress: impl FnMut(Seq, Seq),
) -> Result<Outcome, ArchiveRunError> {
    let started = Instant::now();
    let log_dir = data_dir.join("log");
    let store = Arc::new(
        super::open_stopped_store(data_dir)
            .await
            .map_err(|e| e.in_data_dir(data_dir, "stop it first"))?,
    );
    let live_before = bytes_on_disk(&log_dir);
    let log = EventLog::start(store.clone(), NodeId(0))?;
    let run = async {
        let previous = boundary_of(&log)?;
        let view_path = data_dir.join("view.sqlite");
        if !view_path.exists() {
            return Err(ArchiveRunError::Refused(format!(
                "{} has no SQL view: start the server once, so that the view holds the \
                 history before the archived events go",
                data_dir.display()
            )));
        }
        let view_at = SqliteView::peek_checkpoint(&view_path).await?;
        let delivered = SledCursor::delivered_in(store.db())
            .map_err(|e| ArchiveRunError::Refused(e.to_string()))?;
        let caps = caps(log.last_durable(), view_at, delivered);
        plan_and_write(&log, previous, request, &caps, &mut step, &mut progress).await
    }
    .await;
    let (boundary, cut, file) = match run {
        Ok(Some(planned)) => planned,
        other => {
            log.close().await;
            return other.map(|_| nothing_before());
        }
    };
    let rewrite = {
        let (store, log_dir, record) = (store.clone(), log_dir.clone(), boundary.encode());
        let seq = boundary.seq;
        tokio::task::spawn_blocking(move || store.rewrite_after(&log_dir, seq, &record))
            .await
            .map_err(LogError::storage)?
    };
    log.close().await;
    drop(store);
    rewrite?;
    step("rewrite-built");
    sled_rewrite::swap_in(&log_dir, &mut step)?;
    step("swapped");
    let live_after = bytes_on_disk(&log_dir);
    Ok(archived(
        &boundary,
        cut,
        file,
        live_before,
        live_after,
        started,
    ))
}

/// What the cut must stop at: the live log's last event stays, and so does every event the
/// view has not applied or the webhook has not delivered.
fn caps(end: Seq, view_at: Seq, delivered: Option<Seq>) -> Vec<(Seq, String)> {
    let mut caps = vec![
        (
            Seq(end.0.saturating_sub(1)),
            format!("the live log keeps its last event (seq {end})"),
        ),
        (
            view_at,
            format!("the SQL view has applied the events up to seq {view_at} only"),
        ),
    ];
    if let Some(d) = delivered {
        caps.push((d, format!("the webhook has delivered up to seq {d} only")));
    }
    caps
}

type Planned = (Boundary, Cut, PathBuf);

fn nothing_before() -> Outcome {
    Outcome::Nothing {
        why: "no event after the boundary was recorded before that time".into(),
    }
}

/// The report of a run that archived up to `boundary` into `file`.
fn archived(
    boundary: &Boundary,
    cut: Cut,
    file: PathBuf,
    live_before: u64,
    live_after: u64,
    started: Instant,
) -> Outcome {
    Outcome::Archived(ArchiveReport {
        file_bytes: std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
        file,
        first_seq: boundary.archives.last().map_or(Seq(1), |a| a.first_seq),
        last_seq: boundary.seq,
        limited_by: cut.limited_by,
        live_before,
        live_after,
        elapsed: started.elapsed(),
    })
}

/// Steps 1 and 2: the cut, the archive file, the new boundary. `None` when there is nothing
/// to archive.
async fn plan_and_write(
    log: &EventLog,
    previous: Option<Boundary>,
    request: &ArchiveRequest<'_>,
    caps: &[(Seq, String)],
    step: &mut impl FnMut(&'static str),
    progress: &mut impl FnMut(Seq, Seq),
) -> Result<Option<Planned>, ArchiveRunError> {
    let after = previous.as_ref().map_or(Seq(0), |b| b.seq);
    let reader = log.clone();
    let caps_owned = caps.to_vec();
    let before_ms = request.before_ms;
    let cut = tokio::task::spawn_blocking(move || plan_cut(&reader, after, before_ms, &caps_owned))
        .await
        .map_err(LogError::storage)??;
    if cut.upto <= after {
        if let Some(why) = cut.limited_by {
            return Err(ArchiveRunError::Refused(format!(
                "nothing to archive: {why}"
            )));
        }
        return Ok(None);
    }
    // Checked once there is something to write: a rerun of a run that finished (its file named
    // by the boundary) finds nothing to archive, and says so.
    let out = check_out(request.out, previous.as_ref())?;
    let (state, last) = write_archive(
        log,
        previous.as_ref(),
        cut.upto,
        &out,
        request.before,
        step,
        progress,
    )
    .await?;
    let boundary = next_boundary(previous.as_ref(), &out, &last, state);
    Ok(Some((boundary, cut, out)))
}

/// Archives the shared log of a database whose nodes are all stopped.
pub async fn archive_shared(
    url: &str,
    request: &ArchiveRequest<'_>,
    mut step: impl FnMut(&'static str),
    mut progress: impl FnMut(Seq, Seq),
) -> Result<Outcome, ArchiveRunError> {
    let started = Instant::now();
    let opening = url.to_owned();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || PostgresStore::connect_existing(&opening))
            .await
            .map_err(LogError::storage)??,
    );
    let alive = store.live_nodes()?;
    if !alive.is_empty() {
        return Err(ArchiveRunError::Refused(format!(
            "nodes {alive:?} are running on the shared database: stop every node first"
        )));
    }
    let live_before = store.log_bytes()?;
    let view = PostgresView::connect_existing(url, 1).await?;
    let view_at = view.checkpoint().await;
    view.close().await;
    let view_at = view_at?;
    let delivered = store.webhook_delivered()?;
    let log = EventLog::start(store.clone(), NodeId(0))?;
    let run = async {
        let previous = boundary_of(&log)?;
        let caps = caps(log.last_durable(), view_at, delivered);
        let at = previous.as_ref().map_or(Seq(0), |b| b.seq);
        let planned =
            plan_and_write(&log, previous, request, &caps, &mut step, &mut progress).await?;
        Ok::<_, ArchiveRunError>(planned.map(|p| (p, at)))
    }
    .await;
    log.close().await;
    let Some(((boundary, cut, file), previous_at)) = run? else {
        return Ok(nothing_before());
    };
    let record = boundary.encode();
    store.drop_archived(previous_at, boundary.seq, &record)?;
    step("range-dropped");
    store.compact_log()?;
    step("compacted");
    let live_after = store.log_bytes()?;
    Ok(archived(
        &boundary,
        cut,
        file,
        live_before,
        live_after,
        started,
    ))
}
