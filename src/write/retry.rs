//! The retry of a session's close that the event log refused.
//!
//! Owns the pause between tries ([`FIRST`] doubling up to [`LONGEST`]) and how often a close that
//! keeps failing is told to the server log. Promises: it ends when the close is recorded, when
//! someone else recorded the session's end meanwhile (a kick: nothing is left to decide), when
//! the log is closed, or after one last try once the write path stops. Must never: race an
//! append against the stop (an append cut short may still become durable).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{WriteError, WritePath};
use crate::domain::{CloseReason, Command, SessionId, Uid};
use crate::log::LogError;

/// The first pause before retrying; doubled after each failure, up to [`LONGEST`].
const FIRST: Duration = Duration::from_millis(50);
/// The longest pause between two tries.
const LONGEST: Duration = Duration::from_secs(5);
/// How often a close that keeps failing is logged again: a disk that stays broken must not
/// flood the server log.
const TELL_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn close_until_recorded(
    write: Arc<WritePath>,
    uid: Uid,
    session_id: SessionId,
    reason: CloseReason,
) {
    let mut pause = FIRST;
    let mut attempts: u32 = 1;
    let mut last_told = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = write.stopping.cancelled() => true,
            _ = sleep(pause) => false,
        };
        attempts += 1;
        let command = Command::Disconnect {
            uid: uid.clone(),
            session_id,
            reason,
        };
        match write.execute(command).await {
            Err(WriteError::Fenced) => return,
            Ok(recorded) if recorded.is_empty() => {
                tracing::info!(uid = %uid, session_id = %session_id, %reason, attempts,
                    "close not needed any more: the session's end was recorded meanwhile");
                return;
            }
            Ok(_) => {
                tracing::info!(uid = %uid, session_id = %session_id, %reason, attempts,
                    "close recorded after the event log recovered");
                return;
            }
            Err(WriteError::Log(LogError::Closed)) => {
                tracing::warn!(uid = %uid, session_id = %session_id, %reason, attempts,
                    "event log closed with a close not recorded; the next start records it");
                return;
            }
            Err(WriteError::Log(e)) if stopping => {
                tracing::warn!(uid = %uid, session_id = %session_id, %reason, attempts, error = %e,
                    "stopping with a close not recorded; the stop or the next start records it");
                return;
            }
            Err(WriteError::Log(e)) => {
                if last_told.elapsed() >= TELL_EVERY {
                    last_told = Instant::now();
                    tracing::error!(uid = %uid, session_id = %session_id, %reason, attempts, error = %e,
                        "close still not recorded; retrying");
                }
            }
            // Only connects are refused while fenced: a close never is.
            Err(WriteError::Rejected(why)) => {
                tracing::error!(uid = %uid, session_id = %session_id, %reason, why = %why,
                    "close refused; not retried");
                return;
            }
        }
        pause = (pause * 2).min(LONGEST);
    }
}
