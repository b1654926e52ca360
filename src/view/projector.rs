//! The projector: follows the log and writes the SQL view, in batches, behind the writer.
//!
//! Owns the view's progress. It reads only durable events (never past `EventLog::durable`),
//! applies up to [`BATCH`] of them per transaction together with the checkpoint, and publishes
//! how far it got, so shutdown and tests can wait for it. Promises: restartable at any moment
//! (the checkpoint says where to resume); failures are retried, never skipped. Must never: call
//! out, or apply an event twice (the store's checkpoint check guards that too).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ViewError, ViewStore};
use crate::domain::Seq;
use crate::log::{EventLog, LogError};

/// Events per view transaction.
pub const BATCH: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Applies the events after `from` up to `until` (inclusive); returns the new checkpoint.
/// `progress` hears each batch's last seq.
pub async fn project(
    log: &EventLog,
    view: &dyn ViewStore,
    from: Seq,
    until: Seq,
    mut progress: impl FnMut(Seq),
) -> Result<Seq, ProjectorError> {
    let mut at = from;
    while at < until {
        let want = (until.0 - at.0).min(BATCH as u64) as usize;
        let log2 = log.clone();
        let batch = tokio::task::spawn_blocking(move || log2.read_after(at, want))
            .await
            .map_err(LogError::storage)??;
        let Some(last) = batch.last() else { break };
        let last = last.seq;
        view.apply(&batch).await?;
        at = last;
        progress(at);
    }
    Ok(at)
}

/// Brings the view up to the log's durable end; used at start-up before anything is served.
pub async fn catch_up(log: &EventLog, view: &dyn ViewStore) -> Result<Seq, ProjectorError> {
    let from = view.checkpoint().await?;
    project(log, view, from, log.last_durable(), |_| {}).await
}

/// The running projector.
pub struct Projector {
    task: JoinHandle<()>,
    projected: watch::Receiver<Seq>,
    stop: CancellationToken,
}

impl Projector {
    /// Follows `log` from `from` (the view's checkpoint) for as long as the server runs.
    pub fn spawn(log: EventLog, view: Arc<dyn ViewStore>, from: Seq) -> Self {
        let (tx, projected) = watch::channel(from);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(log, view, from, tx, stop.clone()));
        Projector {
            task,
            projected,
            stop,
        }
    }

    /// How far the view is, and a way to wait for it to move.
    pub fn projected(&self) -> watch::Receiver<Seq> {
        self.projected.clone()
    }

    /// Finishes everything durable so far, then stops.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn follow(
    log: EventLog,
    view: Arc<dyn ViewStore>,
    mut at: Seq,
    projected: watch::Sender<Seq>,
    stop: CancellationToken,
) {
    let mut durable = log.durable();
    let mut stopping = false;
    let mut failures = 0u32;
    loop {
        let target = *durable.borrow_and_update();
        if target > at {
            match project(&log, view.as_ref(), at, target, |s| {
                projected.send_replace(s);
            })
            .await
            {
                Ok(s) => {
                    at = s;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, at = %at, "projector failed; retrying");
                    if stopping && failures > 5 {
                        tracing::error!(
                            "projector gives up at shutdown; the view catches up at next start"
                        );
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25))))
                        .await;
                    // The view may have moved before failing; ask it where it is.
                    if let Ok(s) = view.checkpoint().await {
                        at = s;
                    }
                }
            }
            continue;
        }
        if stopping {
            return;
        }
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { stopping = true },
            _ = stop.cancelled() => stopping = true,
        }
    }
}
