//! What the webhook shows of itself: `webhook_cursor`, `webhook_pending` and
//! `webhook_last_error` (protocol.md section 7), in `/stats` and the metrics.
//!
//! Owns [`WebhookStatus`], one small handle of atomics that the delivery task writes and any
//! reader (the `/stats` handler, a metrics exporter) reads without waiting for it. Promises:
//! `pending` counts entries, not events, and is computed at the moment it is read (the entries
//! published since, less those delivered), so it moves while a delivery is stuck retrying;
//! it is unknown (`None`) on a node that does not deliver. Must never: block, or hold an entry.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug)]
pub struct WebhookStatus {
    /// The last seq delivered (`webhook_cursor`).
    cursor: AtomicU64,
    /// How many entries the subscribers' tally had counted up to the cursor (see
    /// [`crate::apply::EntryTally`]), modulo 2^64: the tally counts from this process's
    /// start, which may be after the cursor, so only differences mean anything.
    entries_at_cursor: AtomicU64,
    /// Whether `entries_at_cursor` is known: this node delivers.
    delivering: AtomicBool,
    /// The tally's count of entries published so far.
    entries_published: Arc<AtomicU64>,
    last_error: Mutex<Option<String>>,
    /// When the last delivery failed (ms since the Unix epoch; 0: never), for the metrics.
    last_error_at_ms: AtomicI64,
    /// Whether the batch in flight has failed and is being retried.
    failing: AtomicBool,
}

/// The three figures, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookFigures {
    pub cursor: u64,
    /// Entries after the cursor, not yet delivered; `None` on a node that does not deliver
    /// (another node holds delivery).
    pub pending: Option<u64>,
    /// The last failure, with its time: `2026-11-28T03:01:00.002Z: the receiver answered 500`.
    pub last_error: Option<String>,
}

impl WebhookStatus {
    pub fn new(entries_published: Arc<AtomicU64>) -> Self {
        WebhookStatus {
            cursor: AtomicU64::new(0),
            entries_at_cursor: AtomicU64::new(0),
            delivering: AtomicBool::new(false),
            entries_published,
            last_error: Mutex::new(None),
            last_error_at_ms: AtomicI64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    pub fn figures(&self) -> WebhookFigures {
        WebhookFigures {
            cursor: self.cursor(),
            pending: self.pending(),
            last_error: self.last_error(),
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    pub fn pending(&self) -> Option<u64> {
        if !self.delivering.load(Ordering::Acquire) {
            return None;
        }
        // The cursor's count first: it never passes the tally's, read after it.
        let at = self.entries_at_cursor.load(Ordering::Acquire);
        let published = self.entries_published.load(Ordering::Acquire);
        Some(published.wrapping_sub(at))
    }

    /// When the last delivery failed (ms since the Unix epoch; 0: never).
    pub fn last_error_at_ms(&self) -> i64 {
        self.last_error_at_ms.load(Ordering::Acquire)
    }

    /// Whether the batch in flight has failed and is being retried.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// The cursor as another node left it (this node does not deliver).
    pub(super) fn seen_elsewhere(&self, cursor: u64) {
        self.delivering.store(false, Ordering::Release);
        self.cursor.store(cursor, Ordering::Release);
    }

    /// This node delivers from `cursor`, where the tally had counted `entries`.
    pub(super) fn delivering_from(&self, cursor: u64, entries: u64) {
        self.entries_at_cursor.store(entries, Ordering::Release);
        self.cursor.store(cursor, Ordering::Release);
        self.delivering.store(true, Ordering::Release);
    }

    /// The cursor moved to `cursor`, past `entries` more entries.
    pub(super) fn advanced(&self, cursor: u64, entries: u64) {
        // Only the delivery task writes it: a load and a store do.
        let at = self.entries_at_cursor.load(Ordering::Acquire);
        self.entries_at_cursor
            .store(at.wrapping_add(entries), Ordering::Release);
        self.cursor.store(cursor, Ordering::Release);
        self.failing.store(false, Ordering::Release);
    }

    pub(super) fn failed(&self, error: &dyn std::fmt::Display) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        *self.last_error.lock() = Some(format!("{}: {error}", crate::human::format_ms(now)));
        self.last_error_at_ms.store(now, Ordering::Release);
        self.failing.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_is_the_entries_published_past_the_cursor_and_unknown_when_not_delivering() {
        let published = Arc::new(AtomicU64::new(100));
        let status = WebhookStatus::new(published.clone());
        assert_eq!(status.pending(), None);
        status.delivering_from(40, 90);
        assert_eq!(status.figures().pending, Some(10));
        published.store(130, Ordering::Release);
        assert_eq!(status.pending(), Some(40));
        status.advanced(55, 25);
        assert_eq!((status.cursor(), status.pending()), (55, Some(15)));
        status.seen_elsewhere(70);
        assert_eq!((status.cursor(), status.pending()), (70, None));
        // A tally that started counting after the cursor: the difference still holds.
        status.delivering_from(70, 130u64.wrapping_sub(150));
        assert_eq!(status.pending(), Some(150));
        status.failed(&"the receiver answered 500");
        assert!(status
            .last_error()
            .unwrap()
            .ends_with("Z: the receiver answered 500"));
    }
}
