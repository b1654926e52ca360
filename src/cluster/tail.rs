//! The tail: how the other nodes' events reach this node.
//!
//! Owns a task that asks the shared log for what it has not published yet and hands it to the
//! [`Follower`]: [`RING_GATHER`] after the log's doorbell rings (another node committed), and
//! every [`POLL_WITH_DOORBELL`] whatever happens, so that a ring that never comes (a doorbell
//! whose connection hangs) delays an event by one poll at most; every [`POLL`] for a store
//! without a doorbell. Promises: an event another node committed is published here within about
//! [`RING_GATHER`] and a round trip of its commit while the doorbell works, and within one poll
//! otherwise; a read that fails is retried at the next poll, and nothing is skipped (the
//! follower reads from where it is). Must never: run its database reads on an async worker
//! thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Follower;
use crate::domain::Seq;

/// How often the log is asked for events this node has not seen, without a doorbell.
pub const POLL: Duration = Duration::from_millis(10);

/// How often the log is asked, rung or not, with a doorbell: the poll is then only the net
/// under a doorbell that fails without saying so.
pub const POLL_WITH_DOORBELL: Duration = Duration::from_millis(100);

/// How long a ring waits for the next ones before the tail reads: a few milliseconds of tail
/// lag, against a read per batch of every other node.
pub const RING_GATHER: Duration = Duration::from_millis(5);

/// Follows the log until `stop` is cancelled; `reachable` says whether the last read worked.
pub fn spawn(
    follower: Arc<Follower>,
    reachable: Arc<AtomicBool>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut doorbell = follower.doorbell();
        let mut failing = false;
        loop {
            let poll = if doorbell.is_some() {
                POLL_WITH_DOORBELL
            } else {
                POLL
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                rung = rang(&mut doorbell) => {
                    // Another node's batch this node has published already (read with an
                    // earlier ring, or before its own batch): nothing to read.
                    if rung.is_some_and(|seq| seq <= follower.at()) {
                        continue;
                    }
                    // Every other node's every batch rings: the rings of a moment are read
                    // with one read, and this node's own appends, whose answers carry the
                    // other nodes' events before them, often leave nothing to read.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RING_GATHER) => {}
                    }
                    let latest = doorbell.as_mut().map(|ring| *ring.borrow_and_update());
                    if latest.is_some_and(|seq| seq <= follower.at()) {
                        continue;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
            }
            let follower = follower.clone();
            match tokio::task::spawn_blocking(move || follower.catch_up()).await {
                Ok(Ok(_)) => {
                    reachable.store(true, Ordering::Release);
                    if failing {
                        tracing::info!("reading the shared log again");
                        failing = false;
                    }
                }
                Ok(Err(e)) => {
                    reachable.store(false, Ordering::Release);
                    if !failing {
                        tracing::error!(error = %e, "cannot read the shared log; retrying");
                        failing = true;
                    }
                }
                Err(e) => tracing::error!(error = %e, "the tail's read panicked"),
            }
        }
    })
}

/// Waits for the doorbell to ring and says the highest seq it announced; never returns for a
/// store without one (or one whose listener ended: the poll carries on alone).
async fn rang(doorbell: &mut Option<watch::Receiver<Seq>>) -> Option<Seq> {
    let Some(ring) = doorbell else {
        return std::future::pending().await;
    };
    if ring.changed().await.is_err() {
        *doorbell = None;
        return std::future::pending().await;
    }
    Some(*ring.borrow_and_update())
}
