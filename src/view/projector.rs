//! The projector: follows the log and writes the SQL view, in batches, behind the writer.
//!
//! Owns the view's progress. It is woken by the subscribers' fan-out ([`crate::apply`]) when
//! events are published, and reads them from the log: only durable ones (never past
//! `EventLog::durable`),
//! applies up to [`BATCH`] of them per transaction together with the checkpoint (while events
//! pour in, one transaction per [`GATHER`] at most), and publishes how far it got, so shutdown
//! and tests can wait for it. Promises: restartable at any moment (the checkpoint says where to
//! resume); failures are retried, never skipped; at stop, everything durable is applied without
//! waiting. Must never: call out, or apply an event twice (the store's checkpoint check guards
//! that too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ViewError, ViewStore};
use crate::domain::Seq;
use crate::log::{EventLog, LogError};

/// Events per view transaction.
pub const BATCH: usize = 2048;
/// The least time between the end of one view transaction and the start of the next, unless a
/// whole batch is waiting. While connects pour in, a transaction per group commit carries few
/// events, and the view's fixed cost per transaction is paid over and over; gathered, each
/// transaction carries many. The view lags the log by
/// this much more at most (readers that need it current wait for it, as they always did).
pub const GATHER: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Applies the events after `from` up to `until` (inclusive), and, when `until_time` is given,
/// only those recorded at or before it; returns the new checkpoint. The next batch is read
/// (and decoded) on a blocking thread while the current one is written. `progress` hears each
/// batch's last seq.
pub async fn project_until(
    log: &EventLog,
    view: &dyn ViewStore,
    from: Seq,
    until: Seq,
    until_time: Option<i64>,
    mut progress: impl FnMut(Seq),
) -> Result<Seq, ProjectorError> {
    let read = |after: Seq| {
        let log = log.clone();
        let want = (until.0.saturating_sub(after.0)).min(BATCH as u64) as usize;
        tokio::task::spawn_blocking(move || log.read_after(after, want))
    };
    let mut at = from;
    let mut next = (at < until).then(|| read(at));
    while let Some(pending) = next.take() {
        let mut batch = pending.await.map_err(LogError::storage)??;
        let mut stop = false;
        if let Some(t) = until_time {
            if let Some(cut) = batch.iter().position(|e| e.recorded_at > t) {
                batch.truncate(cut);
                stop = true;
            }
        }
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        if !stop && last < until {
            next = Some(read(last));
        }
        view.apply(&batch).await?;
        at = last;
        progress(at);
    }
    Ok(at)
}

/// Applies the events after `from` up to `until` (inclusive); returns the new checkpoint.
pub async fn project(
    log: &EventLog,
    view: &dyn ViewStore,
    from: Seq,
    until: Seq,
    progress: impl FnMut(Seq),
) -> Result<Seq, ProjectorError> {
    project_until(log, view, from, until, None, progress).await
}

/// Brings the view up to the log's durable end; used at start-up before anything is served.
/// A catch-up of more than one batch (a rebuild, a view long behind) says how far it got in
/// the server's log at each tenth of the way, and when it is done.
pub async fn catch_up(log: &EventLog, view: &dyn ViewStore) -> Result<Seq, ProjectorError> {
    let from = view.checkpoint().await?;
    let until = log.last_durable();
    let mut progress = CatchUpProgress::new(from, until);
    let at = project(log, view, from, until, |s| progress.at(s)).await?;
    progress.done(at);
    Ok(at)
}

/// The progress lines of a long catch-up: the operator of a server that takes a minute to
/// start sees why, and how long is left.
struct CatchUpProgress {
    from: Seq,
    until: Seq,
    started: Instant,
    /// Tenths of the way reported so far.
    tenths: u64,
    quiet: bool,
}

impl CatchUpProgress {
    fn new(from: Seq, until: Seq) -> Self {
        let quiet = until.0.saturating_sub(from.0) <= BATCH as u64;
        if !quiet {
            tracing::info!(
                from = from.0,
                until = until.0,
                events = until.0 - from.0,
                "the SQL view is catching up with the log"
            );
        }
        CatchUpProgress {
            from,
            until,
            started: Instant::now(),
            tenths: 0,
            quiet,
        }
    }

    fn at(&mut self, at: Seq) {
        let (done, total) = (at.0 - self.from.0, self.until.0 - self.from.0);
        let tenths = done * 10 / total.max(1);
        if self.quiet || tenths <= self.tenths || at >= self.until {
            return;
        }
        self.tenths = tenths;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-3);
        tracing::info!(
            done,
            total,
            percent = done * 100 / total,
            events_per_s = rate as u64,
            left_s = ((total - done) as f64 / rate.max(1.0)).ceil() as u64,
            "the SQL view is catching up: {done} of {total} events"
        );
    }

    fn done(&self, at: Seq) {
        if self.quiet {
            return;
        }
        let done = at.0 - self.from.0;
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!(
            events = done,
            seconds = format_args!("{secs:.1}"),
            events_per_s = (done as f64 / secs.max(1e-3)) as u64,
            "the SQL view caught up with the log at seq {at}"
        );
    }
}

/// The running projector.
pub struct Projector {
    task: JoinHandle<()>,
    projected: watch::Receiver<Seq>,
    stop: CancellationToken,
}

impl Projector {
    /// Follows `log` from `from` (the view's checkpoint) for as long as the server runs, woken
    /// each time `published` moves.
    pub fn spawn(
        log: EventLog,
        view: Arc<dyn ViewStore>,
        from: Seq,
        published: watch::Receiver<Seq>,
    ) -> Self {
        let (tx, projected) = watch::channel(from);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(log, view, from, published, tx, stop.clone()));
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
    mut published: watch::Receiver<Seq>,
    projected: watch::Sender<Seq>,
    stop: CancellationToken,
) {
    let mut stopping = false;
    let mut failures = 0u32;
    // When the last transaction ended: under a burst of writes, the next waits for more events
    // (see [`GATHER`]); the first event after a quiet spell is projected at once.
    let mut last_end: Option<Instant> = None;
    loop {
        let target = *published.borrow_and_update();
        if target > at {
            let wait = last_end.and_then(|t| GATHER.checked_sub(t.elapsed()));
            if let Some(wait) = wait.filter(|_| !stopping && target.0 - at.0 < BATCH as u64) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => stopping = true,
                }
                continue;
            }
            let outcome = project(&log, view.as_ref(), at, target, |s| {
                projected.send_replace(s);
            })
            .await;
            last_end = Some(Instant::now());
            match outcome {
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
            changed = published.changed() => if changed.is_err() { stopping = true },
            _ = stop.cancelled() => stopping = true,
        }
    }
}
