//! The tail: how the other nodes' events reach this node.
//!
//! Owns a task that asks the shared log for what it has not published yet, every
//! [`POLL`], and hands it to the [`Follower`]. Promises: an event another node committed is
//! published here within about one poll; a read that fails is retried at the next poll, and
//! nothing is skipped (the follower reads from where it is). Must never: run its database
//! reads on an async worker thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Follower;

/// How often the log is asked for events this node has not seen.
pub const POLL: Duration = Duration::from_millis(10);

/// Follows the log until `stop` is cancelled; `reachable` says whether the last read worked.
pub fn spawn(
    follower: Arc<Follower>,
    reachable: Arc<AtomicBool>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
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
