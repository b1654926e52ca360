//! The shared log's doorbell: how a node learns at once that another node appended.
//!
//! Owns the listening side of the `wk_log` channel, on a connection of its own (sqlx's
//! `PgListener`, which reconnects by itself). Each append rings it inside its transaction
//! (`pg_notify` in `wk_log_append_after`), so a ring arrives when the batch has committed, in commit
//! order. Promises: the value sent is the highest seq announced by another writer, or
//! [`RING_UNKNOWN`] when rings may have been missed (a connection lost and made again); its
//! own writer's rings are ignored. Must never: be relied on alone (a follower still polls), or
//! log the database URL.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::domain::Seq;

/// The channel of the append's rings (`wk_log_append_after`): `<writer id> <last seq>`.
const DOORBELL: &str = "wk_log";

/// Rung when the doorbell cannot say what was announced (it may have missed rings): read.
pub const RING_UNKNOWN: Seq = Seq(u64::MAX);

/// How long the doorbell waits before listening again after its connection failed.
const DOORBELL_RETRY: Duration = Duration::from_secs(1);

/// Listens to the other writers' rings for as long as the store lives (its runtime ends the
/// task), and sends the highest seq announced. A connection lost and found again may have
/// missed rings: it sends [`RING_UNKNOWN`], so that the follower reads whatever it holds.
/// Rings come in commit order, which is seq order, so the highest seq announced covers every
/// ring before it, those missed included.
pub(super) async fn listen(url: String, writer_id: i64, ring: watch::Sender<Seq>) {
    let mut failing = false;
    loop {
        let listening = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(DOORBELL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listening.await {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the shared log's doorbell cannot listen; tails poll meanwhile");
                    failing = true;
                }
                tokio::time::sleep(DOORBELL_RETRY).await;
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            tracing::info!("the shared log's doorbell listens again");
        }
        // Whatever rang while nobody listened.
        ring.send_replace(RING_UNKNOWN);
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) => {
                    let mut parts = note.payload().split(' ');
                    let writer = parts.next().and_then(|w| w.parse::<i64>().ok());
                    let last = parts.next().and_then(|s| s.parse::<u64>().ok());
                    match (writer, last) {
                        (Some(w), Some(_)) if w == writer_id => {}
                        (_, Some(last)) => {
                            ring.send_if_modified(|seen| {
                                let newer = *seen == RING_UNKNOWN || Seq(last) > *seen;
                                if newer {
                                    *seen = Seq(last);
                                }
                                newer
                            });
                        }
                        _ => {
                            ring.send_replace(RING_UNKNOWN);
                        }
                    }
                }
                // The connection was lost and made again: rings may have been missed.
                Ok(None) => {
                    ring.send_replace(RING_UNKNOWN);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the shared log's doorbell stopped; listening again");
                    break;
                }
            }
        }
    }
}
