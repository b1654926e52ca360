//! The delivery loop: read the next batch from the log, save its range, post it until the
//! receiver answers 2xx, move on.
//!
//! Owns the order of one node's delivery: take the turn (the mark), rebuild the fold at the
//! mark, resend the batch in flight if there was one (exactly its range), then follow the log.
//! It is woken by the subscribers' published watch, as the projector is, and reads the log
//! itself, one batch of at most [`MAX_ENTRIES`] events at a time; a batch is sent as soon as
//! it is read (no gathering pause), and the next one is read once it is answered. Failures
//! back off from 100 ms, doubling to 30 s, and never give up. Promises: entries in log order;
//! the mark saved before a batch is sent (recording the answer of the one before) and,
//! once the log is quiet, after the last one is answered; at a stop,
//! everything recorded before it is delivered if the receiver answers within the stop's
//! grace. Must never: keep more than one batch, skip a batch that was not answered 2xx, or
//! post without having saved its range.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use tokio::sync::watch;
use tokio::time::Instant;

use super::counts::{body, Counts, Entry};
use super::cursor::{CursorStore, Mark, Turn};
use super::post::Receiver;
use super::start::counts_at;
use super::status::WebhookStatus;
use super::WebhookError;
use crate::apply::{is_webhook_entry, Subscribers};
use crate::domain::{RecordedEvent, Seq};
use crate::log::{EventLog, LogError};
use crate::view::ViewStore;

/// The most events, and so entries, one batch covers (protocol.md section 7: at most 512
/// entries).
pub const MAX_ENTRIES: usize = 512;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// The pauses between failed tries: 100 ms, doubling to 30 s.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn next(&mut self) -> Duration {
        let pause = FIRST_PAUSE
            .saturating_mul(1 << self.failures.min(16))
            .min(LONGEST_PAUSE);
        self.failures += 1;
        pause
    }
}

/// A stop: deliver what was recorded up to `until`, for as long as `deadline` allows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    pub until: Seq,
    pub deadline: Instant,
}

pub(super) struct Delivery {
    pub log: EventLog,
    pub view: Arc<dyn ViewStore>,
    pub subscribers: Arc<Subscribers>,
    pub receiver: Receiver,
    pub cursors: Arc<dyn CursorStore>,
    pub status: Arc<WebhookStatus>,
    pub stop: watch::Receiver<Option<Drain>>,
    /// Fires when a stop begins: the turn is asked for once more, not waited for.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// Runs `run` until it returns; each time it panics instead, tells `panicked` what it said
/// and runs it again after the backoff's next pause.
async fn restart_after_panics<S>(
    state: &mut S,
    run: for<'s> fn(&'s mut S) -> BoxFuture<'s, ()>,
    panicked: impl Fn(&str),
) {
    let mut pause = Backoff::default();
    loop {
        match AssertUnwindSafe(run(state)).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let said = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                panicked(&said);
                tokio::time::sleep(pause.next()).await;
            }
        }
    }
}

/// How long the log must be quiet before a caught-up delivery saves its last answer by
/// itself (otherwise the next batch's save records it).
const SAVE_WHEN_QUIET: Duration = Duration::from_millis(100);

/// What woke a caught-up delivery.
enum Woken {
    Published,
    Stopping,
    Quiet,
}

/// How a turn ended.
enum Ended {
    /// The stop's drain is done (or its deadline passed).
    Stopped,
}

impl Delivery {
    /// Delivers until the stop; a panic in a turn is logged, shown in `/stats` as the last
    /// error, and delivery starts again from the stored cursor after a pause, so that one bad
    /// batch never ends presence updates silently for the rest of the process's life.
    pub(super) async fn supervise(mut self) {
        let status = self.status.clone();
        restart_after_panics(
            &mut self,
            |delivery| Box::pin(delivery.run()),
            |panic| {
                tracing::error!(
                    panic,
                    "webhook: the delivery panicked; starting again from the stored cursor"
                );
                status.failed(&format_args!("the delivery panicked: {panic}"));
            },
        )
        .await
    }

    async fn run(&mut self) {
        let mut pause = Backoff::default();
        loop {
            let start = self.subscribers.last_published();
            let Some(mut turn) = self
                .cursors
                .take_turn(start, &self.status, &self.stopping)
                .await
            else {
                return;
            };
            match self.deliver(turn.as_mut(), &mut pause).await {
                Ok(Ended::Stopped) => return,
                Err(WebhookError::Stopped) => return,
                Err(e) => {
                    tracing::error!(error = %e, "webhook: delivery interrupted; starting again from the stored cursor");
                    self.status.failed(&e);
                    drop(turn);
                    if self.sleep(pause.next()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn deliver(
        &mut self,
        turn: &mut dyn Turn,
        pause: &mut Backoff,
    ) -> Result<Ended, WebhookError> {
        let mark = turn.mark();
        let (mut counts, entries) = tokio::select! {
            built = counts_at(&self.log, self.view.as_ref(), &self.subscribers, mark.delivered) => built?,
            _ = self.past_deadline() => return Err(WebhookError::Stopped),
        };
        self.status.delivering_from(mark.delivered.0, entries);
        tracing::info!(delivered = %mark.delivered, open_sessions = counts.sessions(),
            receiver = %self.receiver.endpoint(), "webhook: delivering");
        let mut at = mark.delivered;
        if mark.in_flight_to > at {
            // The batch in flight when the last turn ended: exactly its range again, so that a
            // receiver that took it drops it by its seq headers.
            let want = (mark.in_flight_to.0 - at.0) as usize;
            let events = self.read(at, want).await?;
            let events: Vec<_> = events
                .into_iter()
                .take_while(|r| r.seq <= mark.in_flight_to)
                .collect();
            if events.last().map(|r| r.seq) != Some(mark.in_flight_to) {
                return Err(WebhookError::LogShort {
                    at,
                    expected: mark.in_flight_to,
                });
            }
            let entries = entries_of(&mut counts, &events);
            self.send(at.next(), mark.in_flight_to, &entries, pause)
                .await?;
            at = mark.in_flight_to;
            self.status.advanced(at.0, counted(&events));
        }
        let mut published = self.subscribers.published();
        loop {
            let end = *published.borrow_and_update();
            if end <= at {
                // Caught up: the last batch is answered. Its answer is saved by the next
                // batch's save, in the same flush, or once the log has been quiet a moment:
                // one flush per batch, not two, and a crash still resends at most that batch.
                let unsaved = turn.mark() != Mark::at(at);
                let drain = *self.stop.borrow();
                if drain.is_some_and(|d| at >= d.until || Instant::now() >= d.deadline) {
                    if unsaved {
                        turn.save(Mark::at(at)).await?;
                    }
                    return Ok(Ended::Stopped);
                }
                let woken = tokio::select! {
                    changed = published.changed() => changed.map(|_| Woken::Published),
                    changed = self.stop.changed() => changed.map(|_| Woken::Stopping),
                    _ = tokio::time::sleep(SAVE_WHEN_QUIET), if unsaved => Ok(Woken::Quiet),
                };
                match woken {
                    Ok(Woken::Quiet) => turn.save(Mark::at(at)).await?,
                    Ok(Woken::Published | Woken::Stopping) => {}
                    Err(_) => {
                        // The server is gone without a stop (dropped): nothing more to deliver.
                        if unsaved {
                            turn.save(Mark::at(at)).await?;
                        }
                        return Ok(Ended::Stopped);
                    }
                }
                continue;
            }
            let events = self.read(at, MAX_ENTRIES).await?;
            let Some(last) = events.last().map(|r| r.seq) else {
                // Published but not yet readable: the log's durable end is a moment behind.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let entries = entries_of(&mut counts, &events);
            if !entries.is_empty() {
                turn.save(Mark {
                    delivered: at,
                    in_flight_to: last,
                })
                .await?;
                self.send(at.next(), last, &entries, pause).await?;
            }
            at = last;
            self.status.advanced(at.0, counted(&events));
            let drain = *self.stop.borrow();
            if let Some(drain) = drain {
                if Instant::now() >= drain.deadline {
                    turn.save(Mark::at(at)).await?;
                    return Ok(Ended::Stopped);
                }
            }
        }
    }

    /// Up to `want` events after `after`, off the async workers.
    async fn read(&self, after: Seq, want: usize) -> Result<Vec<RecordedEvent>, WebhookError> {
        let log = self.log.clone();
        Ok(
            tokio::task::spawn_blocking(move || log.read_after(after, want))
                .await
                .map_err(LogError::storage)??,
        )
    }

    /// Posts one batch until the receiver answers 2xx; `Err(Stopped)` when a stop's deadline
    /// passes first.
    async fn send(
        &mut self,
        from: Seq,
        to: Seq,
        entries: &[Entry],
        pause: &mut Backoff,
    ) -> Result<(), WebhookError> {
        let body = body(entries);
        loop {
            let posted = tokio::select! {
                posted = self.receiver.post(from, to, body.clone()) => posted,
                _ = self.past_deadline() => return Err(WebhookError::Stopped),
            };
            match posted {
                Ok(()) => {
                    *pause = Backoff::default();
                    return Ok(());
                }
                Err(e) => {
                    let wait = pause.next();
                    tracing::warn!(error = %e, from = %from, to = %to, retry_in = ?wait,
                        "webhook: batch not delivered");
                    self.status.failed(&e);
                    self.sleep(wait).await?;
                }
            }
        }
    }

    /// Sleeps `d`; `Err(Stopped)` when a stop's deadline passes first.
    async fn sleep(&mut self, d: Duration) -> Result<(), WebhookError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.past_deadline() => Err(WebhookError::Stopped),
        }
    }

    /// Resolves once a stop has begun and its deadline has passed.
    async fn past_deadline(&self) {
        let mut stop = self.stop.clone();
        loop {
            let drain = *stop.borrow_and_update();
            match drain {
                Some(d) => {
                    tokio::time::sleep_until(d.deadline).await;
                    return;
                }
                None => {
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// How many of `events` the subscribers' tally counts as entries.
fn counted(events: &[RecordedEvent]) -> u64 {
    events.iter().filter(|r| is_webhook_entry(&r.event)).count() as u64
}

/// The entries of `events`, moving the fold past them.
fn entries_of(counts: &mut Counts, events: &[RecordedEvent]) -> Vec<Entry> {
    events.iter().filter_map(|r| counts.apply(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_100_ms_to_30_s_and_stays_there() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..12).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
    }

    /// A run that panics twice and then returns: both panics are reported with what they said,
    /// and the third run is the last.
    #[tokio::test]
    async fn a_panicking_run_is_reported_and_run_again_until_it_returns() {
        fn run(runs: &mut u32) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                *runs += 1;
                match *runs {
                    1 => panic!("first"),
                    2 => std::panic::panic_any(format!("second {}", 2)),
                    _ => {}
                }
            })
        }
        let said = std::sync::Mutex::new(Vec::new());
        let mut runs = 0u32;
        restart_after_panics(&mut runs, run, |p| said.lock().unwrap().push(p.to_owned())).await;
        assert_eq!(runs, 3);
        assert_eq!(*said.lock().unwrap(), ["first", "second 2"]);
    }
}
