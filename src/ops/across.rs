//! Reading across an archive boundary: the archives given with `--archive`, then the live log.
//!
//! Owns checking that the archives fit the live log (each is one this log's boundary names, by
//! its range, and the one that ends at the boundary ends with the boundary's event id; none
//! overlaps another), and starting a fresh view at the boundary: from the archives when they
//! are all given, else from the boundary's state rows. Promises: an event is read once, from
//! the archive when it is at or before the boundary and from the live log after it (see
//! [`crate::archive`]'s invariant). Must never: read an archive the live log does not name, or
//! start a view at the boundary without saying that its history before it is missing.

use std::path::{Path, PathBuf};

use super::replay::{ReplayError, Until};
use crate::archive::file::{read_header_of, ArchiveReader, Header};
use crate::archive::{ArchiveError, Boundary};
use crate::domain::{RecordedEvent, Seq};
use crate::log::EventLog;
use crate::view::projector::BATCH;
use crate::view::{SqliteView, ViewStore};

/// The log's archive boundary, decoded; `None` for a log never archived.
pub fn boundary_of(log: &EventLog) -> Result<Option<Boundary>, ReplayError> {
    match log.boundary()? {
        Some(bytes) => Ok(Some(Boundary::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The archives at `paths`, sorted by seq, checked against `boundary`. With `from_one`, they
/// must be every archive of the log, together seq 1 to the boundary.
pub fn check_archives(
    paths: &[PathBuf],
    boundary: Option<&Boundary>,
    from_one: bool,
) -> Result<Vec<(PathBuf, Header)>, ArchiveError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let Some(b) = boundary else {
        return Err(ArchiveError::Mismatch(format!(
            "the live log was never archived: it holds every event from seq 1, so {} holds \
             none it lacks (a file an interrupted archive run left behind, or another log's)",
            paths[0].display()
        )));
    };
    let mut found = paths
        .iter()
        .map(|p| Ok((p.clone(), read_header_of(p)?)))
        .collect::<Result<Vec<_>, ArchiveError>>()?;
    found.sort_by_key(|(_, h)| h.first_seq);
    let mut previous: Option<&(PathBuf, Header)> = None;
    for item in &found {
        let (path, h) = item;
        let named = b
            .archives
            .iter()
            .any(|a| a.first_seq == h.first_seq && a.last_seq == h.last_seq);
        let right_end = h.last_seq != b.seq || h.last_event_id == b.last_event_id;
        if !named || !right_end {
            return Err(ArchiveError::Mismatch(format!(
                "{} (seq {}..={}) is not an archive of this log, whose archives are: {}",
                path.display(),
                h.first_seq,
                h.last_seq,
                b.files()
            )));
        }
        if let Some((p, prev)) = previous {
            if prev.last_seq >= h.first_seq {
                return Err(ArchiveError::Mismatch(format!(
                    "{} and {} both hold seq {}: pass each archive once",
                    p.display(),
                    path.display(),
                    h.first_seq
                )));
            }
        }
        previous = Some(item);
    }
    if from_one {
        let mut next = Seq(1);
        for (_, h) in &found {
            if h.first_seq != next {
                break;
            }
            next = h.last_seq.next();
        }
        if next != b.seq.next() {
            return Err(ArchiveError::Mismatch(format!(
                "the archives given do not hold every event from seq 1 to the boundary {} \
                 (they stop before seq {next}): pass every archive of this log: {}",
                b.seq,
                b.files()
            )));
        }
    }
    Ok(found)
}

/// Where a fresh view stands once brought to the boundary.
pub enum AtBoundary {
    /// The log was never archived: the view starts at seq 0.
    NoBoundary,
    /// The archives were applied, up to the boundary.
    Archives(Seq),
    /// The archives were applied, and the replay's end came inside them.
    StoppedIn(Seq),
    /// No archive was given: the view starts from the boundary's state rows, without the
    /// history before it.
    StateOnly(Seq),
}

/// Brings the empty `view` to the log's boundary: applies `archives` (every archive of the
/// log, from seq 1) until `until`, or, without archives, seeds it with the boundary's state
/// rows (refused when `until` falls before the boundary: only the archives hold that).
pub async fn to_boundary(
    log: &EventLog,
    view: &SqliteView,
    archives: &[PathBuf],
    until: Until,
    progress: &mut impl FnMut(Seq),
) -> Result<AtBoundary, ReplayError> {
    let boundary = boundary_of(log)?;
    let files = check_archives(archives, boundary.as_ref(), true)?;
    let Some(b) = boundary else {
        return Ok(AtBoundary::NoBoundary);
    };
    if files.is_empty() {
        let before = match until {
            Until::Seq(s) => s < b.seq,
            Until::Time(t) => t < b.last_recorded_at,
            Until::End => false,
        };
        if before {
            return Err(ReplayError::Archive(ArchiveError::Mismatch(format!(
                "that point is before the log's archive boundary (seq {}): only the archives \
                 hold it; pass them with --archive: {}",
                b.seq,
                b.files()
            ))));
        }
        view.seed(&b.state).await?;
        progress(b.seq);
        return Ok(AtBoundary::StateOnly(b.seq));
    }
    let mut at = Seq(0);
    for (path, _) in files {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reading = tokio::task::spawn_blocking(move || read_in_batches(&path, tx));
        while let Some(batch) = rx.recv().await {
            let mut batch: Vec<RecordedEvent> = batch;
            let cut = batch.iter().position(|e| match until {
                Until::Seq(s) => e.seq > s,
                Until::Time(t) => e.recorded_at > t,
                Until::End => false,
            });
            if let Some(cut) = cut {
                batch.truncate(cut);
            }
            if let Some(last) = batch.last() {
                view.apply(&batch).await?;
                at = last.seq;
                progress(at);
            }
            if cut.is_some() {
                drop(rx);
                let _ = reading.await;
                return Ok(AtBoundary::StoppedIn(at));
            }
        }
        reading
            .await
            .map_err(|e| ArchiveError::Mismatch(e.to_string()))??;
    }
    Ok(AtBoundary::Archives(at))
}

/// Reads the archive at `path` in batches into `tx`, until it ends or the receiver is gone.
fn read_in_batches(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<Vec<RecordedEvent>>,
) -> Result<(), ArchiveError> {
    let mut batch = Vec::with_capacity(BATCH);
    for event in ArchiveReader::open(path)? {
        batch.push(event?);
        if batch.len() == BATCH && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// The events of `uid` (or every event) after `after` in the archives at `paths` (checked
/// against the log's boundary), in seq order, handed to `each`. Blocking: file reads.
pub fn archived_events(
    log: &EventLog,
    paths: &[PathBuf],
    uid: Option<&str>,
    after: Seq,
    mut each: impl FnMut(&RecordedEvent) -> std::io::Result<()>,
) -> Result<(), ArchivedEventsError> {
    let boundary = boundary_of(log)?;
    for (path, header) in check_archives(paths, boundary.as_ref(), false)? {
        if header.last_seq <= after {
            continue;
        }
        for event in ArchiveReader::open(&path)? {
            let event = event?;
            if event.seq <= after {
                continue;
            }
            if uid.is_none_or(|u| event.event.uids().iter().any(|x| x.as_str() == u)) {
                each(&event).map_err(ArchivedEventsError::Write)?;
            }
        }
    }
    Ok(())
}

/// Why [`archived_events`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArchivedEventsError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot write the events: {0}")]
    Write(std::io::Error),
}
