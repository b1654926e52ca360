//! Where the webhook's fold starts: the open sessions as of the cursor, rebuilt from the SQL
//! view and the log, without replaying the log from its start.
//!
//! Owns [`counts_at`]. The view gives its open sessions, each with its `Connected` seq, at its
//! checkpoint (at or past the cursor); the sessions that opened after the cursor are left out,
//! and those open at the cursor that closed since are found from their `Disconnected` in the
//! log between the cursor and the subscribers' tally, and looked up in the view by id. The same
//! pass counts the entries in that range, for `webhook_pending`. Promises: the fold equals a
//! fold of the whole log up to the cursor; it costs the open sessions and the events after the
//! cursor, never the whole history. Must never: hold more than one read of the log at a time,
//! or read the server's memory (it is ahead of the cursor).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::counts::Counts;
use super::WebhookError;
use crate::apply::{is_webhook_entry, Subscribers};
use crate::domain::{Event, Seq, SessionId};
use crate::log::EventLog;
use crate::view::{SessionSeq, ViewStore};

/// Events read from the log per step.
const READ: usize = 2048;

/// The pause before asking again a view (or a tally) that is not yet at the cursor: a shared
/// view that another node's projector writes, a moment behind this node.
const BEHIND: Duration = Duration::from_millis(20);

/// The fold at `at`, and how many entries the subscribers' tally had counted up to `at`
/// (modulo 2^64: the tally may have started counting after `at`).
pub(super) async fn counts_at(
    log: &EventLog,
    view: &dyn ViewStore,
    subscribers: &Subscribers,
    at: Seq,
) -> Result<(Counts, u64), WebhookError> {
    let (checkpoint, open) = loop {
        let (checkpoint, open) = view.open_session_seqs().await?;
        if checkpoint >= at {
            break (checkpoint, open);
        }
        tokio::time::sleep(BEHIND).await;
    };
    let tally = loop {
        let tally = subscribers.entry_tally();
        if tally.seq >= checkpoint {
            break tally;
        }
        tokio::time::sleep(BEHIND).await;
    };
    let mut sessions: HashMap<SessionId, SessionSeq> = open
        .into_iter()
        .filter(|s| s.connected_seq <= at)
        .map(|s| (s.session_id, s))
        .collect();
    // Between the cursor and the tally: the entries, and the sessions that were open at the
    // cursor and closed since (a close of a session that opened in the range says nothing).
    let mut entries = 0u64;
    let mut opened_since = HashSet::new();
    let mut closed_since = Vec::new();
    let mut from = at;
    while from < tally.seq {
        let want = (tally.seq.0 - from.0).min(READ as u64) as usize;
        let reader = log.clone();
        let batch = tokio::task::spawn_blocking(move || reader.read_after(from, want))
            .await
            .map_err(|e| WebhookError::Log(crate::log::LogError::storage(e)))??;
        let Some(last) = batch.last().map(|r| r.seq) else {
            return Err(WebhookError::LogShort {
                at: from,
                expected: tally.seq,
            });
        };
        for r in batch.iter().take_while(|r| r.seq <= tally.seq) {
            entries += u64::from(is_webhook_entry(&r.event));
            match &r.event {
                Event::Connected(c) => {
                    opened_since.insert(c.session_id);
                }
                Event::Disconnected(d) if !opened_since.remove(&d.session_id) => {
                    closed_since.push(d.session_id);
                }
                _ => {}
            }
        }
        from = last.min(tally.seq);
    }
    for ids in closed_since.chunks(1024) {
        let found = view.session_seqs(ids).await?;
        if found.len() < ids.len() {
            return Err(WebhookError::ViewMissesSessions(ids.len() - found.len()));
        }
        for s in found.into_iter().filter(|s| s.connected_seq <= at) {
            sessions.insert(s.session_id, s);
        }
    }
    // The tally counts from this process's start, which may be after `at`: only differences
    // of its counts mean anything, so this one may wrap.
    Ok((
        Counts::of(sessions.into_values()),
        tally.entries.wrapping_sub(entries),
    ))
}
