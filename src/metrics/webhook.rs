//! The webhook's gauges (`protocol.md` sections 7 and 9). It owns nothing of the webhook: the
//! sender (`src/webhook/`) keeps its own [`WebhookStatus`], which [`WebhookGauges::follow`]
//! hands to the scrape; a caller without one may set the gauges directly.
//!
//! Without a webhook, every value is 0 and `wkuser_webhook_enabled` says 0, so a dashboard
//! reads "nothing pending" rather than "no data". Promises: each setter is one atomic store,
//! and a scrape reads atomics only. Must never: block the sender.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::webhook::status::WebhookStatus;

/// What the webhook sender reports; read at each scrape.
#[derive(Debug, Default)]
pub struct WebhookGauges {
    enabled: AtomicBool,
    cursor: AtomicU64,
    pending: AtomicU64,
    failing: AtomicBool,
    last_error_at_ms: AtomicI64,
    /// The sender's own status, read at each scrape in place of the setters' values.
    source: std::sync::OnceLock<std::sync::Arc<WebhookStatus>>,
}

impl WebhookGauges {
    /// Reads the gauges from the webhook sender's `status` from now on.
    pub fn follow(&self, status: std::sync::Arc<WebhookStatus>) {
        let _ = self.source.set(status);
    }

    /// enabled, cursor, pending, failing, last error's time in ms.
    fn read(&self) -> (bool, u64, u64, bool, i64) {
        match self.source.get() {
            Some(s) => (
                true,
                s.cursor(),
                s.pending().unwrap_or(0),
                s.failing(),
                s.last_error_at_ms(),
            ),
            None => (
                self.enabled.load(Relaxed),
                self.cursor.load(Relaxed),
                self.pending.load(Relaxed),
                self.failing.load(Relaxed),
                self.last_error_at_ms.load(Relaxed),
            ),
        }
    }

    /// A webhook is configured on this node (whether or not this node holds the delivery lease).
    pub fn enable(&self) {
        self.enabled.store(true, Relaxed);
    }

    /// The last seq delivered (the durable cursor).
    pub fn set_cursor(&self, seq: u64) {
        self.cursor.store(seq, Relaxed);
    }

    /// Entries not yet delivered.
    pub fn set_pending(&self, entries: u64) {
        self.pending.store(entries, Relaxed);
    }

    /// A delivery failed at `at_ms` (milliseconds since the Unix epoch): it is retried.
    pub fn delivery_failed(&self, at_ms: i64) {
        self.failing.store(true, Relaxed);
        self.last_error_at_ms.store(at_ms, Relaxed);
    }

    /// A delivery succeeded: the sender is no longer failing (the last error's time stays).
    pub fn delivered(&self) {
        self.failing.store(false, Relaxed);
    }

    /// The gauges, as the scrape shows them.
    pub(super) fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (enabled, cursor, pending, failing, last_error_at_ms) = self.read();
        // Help texts end with a period, as the registry writes its own.
        let gauges: [(&str, &str, f64); 5] = [
            (
                "wkuser_webhook_enabled",
                "1 when a webhook URL is configured on this node.",
                f64::from(u8::from(enabled)),
            ),
            (
                "wkuser_webhook_cursor",
                "The last seq the webhook delivered (its durable cursor).",
                cursor as f64,
            ),
            (
                "wkuser_webhook_pending",
                "Webhook entries recorded in the log and not yet delivered.",
                pending as f64,
            ),
            (
                "wkuser_webhook_failing",
                "1 while the last webhook delivery failed and is being retried.",
                f64::from(u8::from(failing)),
            ),
            (
                "wkuser_webhook_last_error_timestamp_seconds",
                "When the last webhook delivery failed (Unix time; 0: never).",
                last_error_at_ms as f64 / 1000.0,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
