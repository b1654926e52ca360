//! The server's metrics (`protocol.md` section 9), kept with prometheus-client and served as
//! Prometheus text by `GET /metrics` ([`crate::http`]).
//!
//! Owns the counters and histograms the running server moves: connects by result, sessions open
//! by device flag, events appended by type and sessions ended by reason (counted where this node
//! appends them, so that across a cluster each is counted once, by the node that recorded it),
//! the append latency, the API's requests ([`atomic::HttpMetrics`]), the webhook's gauges
//! ([`webhook::WebhookGauges`], the hook its sender reports through), and the process metrics
//! read at each scrape. Values that are already kept elsewhere (the log's last seq, known users,
//! open sockets, the view's progress) are read at the scrape, not duplicated here.
//!
//! Promises: recording is a few relaxed atomic additions, with no lock and no allocation, on
//! every path (connect, append, the onlinestatus hot path). Must never: hold anything a scrape
//! could block a recorder on, or take a label value from a client (labels come from fixed
//! lists: results, reasons, event types, the route table, device flags 0..=255).

pub mod atomic;
mod process;
pub mod webhook;

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::domain::{CloseReason, DeviceFlag, Event, RecordedEvent, Seq};
use crate::log::LogError;
use atomic::{AtomicHistogram, FlagGauges, HttpMetrics, LabeledCounters, Shared};
pub use webhook::WebhookGauges;

/// How a connect ended, as `wkuser_connects_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// Recorded: the session is open.
    Ok,
    /// Refused: unknown uid or flag, cleared or wrong token, bad params.
    AuthFail,
    /// The log could not record it (or the node is fenced): the client is told to retry.
    SystemError,
}

const CONNECT_RESULTS: &[&str] = &["ok", "auth_fail", "system_error"];

impl ConnectResult {
    fn index(self) -> usize {
        match self {
            ConnectResult::Ok => 0,
            ConnectResult::AuthFail => 1,
            ConnectResult::SystemError => 2,
        }
    }
}

/// Every event type, as `wkuser_events_appended_total` labels them (the envelope's `type`).
const EVENT_TYPES: &[&str] = &[
    "TokenUpdated",
    "DeviceQuit",
    "Connected",
    "Disconnected",
    "SystemUidsAdded",
    "SystemUidsRemoved",
    "NodeStarted",
    "NodeStopped",
];

fn event_index(event: &Event) -> usize {
    let at = match event {
        Event::TokenUpdated(_) => 0,
        Event::DeviceQuit(_) => 1,
        Event::Connected(_) => 2,
        Event::Disconnected(_) => 3,
        Event::SystemUidsAdded(_) => 4,
        Event::SystemUidsRemoved(_) => 5,
        Event::NodeStarted(_) => 6,
        Event::NodeStopped(_) => 7,
    };
    debug_assert_eq!(EVENT_TYPES[at], event.kind());
    at
}

/// The section 3.4 names, in [`CloseReason::ALL`]'s order.
static REASONS: LazyLock<[&str; CloseReason::ALL.len()]> =
    LazyLock::new(|| CloseReason::ALL.map(CloseReason::as_str));

fn reason_index(reason: CloseReason) -> usize {
    CloseReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is in ALL")
}

/// The bounds of the append histogram, in seconds: a lone append pays one flush (about 100 µs
/// on a fast disk), a busy group commit a few milliseconds, PostgreSQL a round trip or more.
const APPEND_BOUNDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connects: Arc<LabeledCounters>,
    disconnects: Arc<LabeledCounters>,
    events: Arc<LabeledCounters>,
    append_failures: Counter,
    append_conflicts: Counter,
    append_latency: Arc<AtomicHistogram>,
    sessions_open: Arc<FlagGauges>,
    webhook: Arc<WebhookGauges>,
    http: OnceLock<(Arc<HttpMetrics>, Registry)>,
    view_progress: OnceLock<watch::Receiver<Seq>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let connects = Arc::new(LabeledCounters::new("result", CONNECT_RESULTS));
        let disconnects = Arc::new(LabeledCounters::new("reason", &*REASONS));
        let events = Arc::new(LabeledCounters::new("type", EVENT_TYPES));
        let append_failures = Counter::default();
        let append_conflicts = Counter::default();
        let append_latency = Arc::new(AtomicHistogram::new(APPEND_BOUNDS));
        let sessions_open = Arc::new(FlagGauges::default());
        let webhook = Arc::new(WebhookGauges::default());

        let mut registry = Registry::default();
        registry.register(
            "wkuser_connects",
            "WebSocket connects by result: ok, auth_fail, system_error",
            Shared(connects.clone()),
        );
        registry.register(
            "wkuser_sessions_open",
            "Authenticated WebSocket sessions this node holds, by device flag",
            Shared(sessions_open.clone()),
        );
        registry.register(
            "wkuser_disconnects",
            "Sessions ended, by reason (protocol.md 3.4), counted by the node that recorded the end",
            Shared(disconnects.clone()),
        );
        registry.register(
            "wkuser_events_appended",
            "Events this node appended to the log, by type",
            Shared(events.clone()),
        );
        registry.register(
            "wkuser_log_append_failures",
            "Appends the log refused (nothing of them was recorded)",
            append_failures.clone(),
        );
        registry.register(
            "wkuser_log_append_conflicts",
            "Appends refused because another node changed the same uid first (decided again)",
            append_conflicts.clone(),
        );
        registry.register(
            "wkuser_log_append_duration_seconds",
            "Time from handing events to the log to their being durable and applied (group commit included)",
            Shared(append_latency.clone()),
        );
        registry.register_collector(Box::new(WebhookCollector(webhook.clone())));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            connects,
            disconnects,
            events,
            append_failures,
            append_conflicts,
            append_latency,
            sessions_open,
            webhook,
            http: OnceLock::new(),
            view_progress: OnceLock::new(),
        }
    }

    /// A connect ended with `result`.
    pub fn connect(&self, result: ConnectResult) {
        self.connects.inc(result.index());
    }

    /// How many connects ended with `result` so far.
    pub fn connects(&self, result: ConnectResult) -> u64 {
        self.connects.get(result.index())
    }

    /// A session of `flag` is now held by this node.
    pub fn session_opened(&self, flag: DeviceFlag) {
        self.sessions_open.add(flag.0, 1);
    }

    /// A session of `flag` this node held has ended.
    pub fn session_closed(&self, flag: DeviceFlag) {
        self.sessions_open.add(flag.0, -1);
    }

    /// Sessions of `flag` this node holds.
    pub fn sessions_open(&self, flag: DeviceFlag) -> i64 {
        self.sessions_open.get(flag.0)
    }

    /// An append that began at `started` ended with `outcome`: the events it recorded are
    /// counted (by type, and a session's end by reason), and its time observed.
    pub fn appended(&self, outcome: &Result<Vec<RecordedEvent>, LogError>, started: Instant) {
        match outcome {
            // Nothing to record: the log was not asked.
            Ok(recorded) if recorded.is_empty() => {}
            Ok(recorded) => {
                for r in recorded {
                    self.events.inc(event_index(&r.event));
                    if let Event::Disconnected(d) = &r.event {
                        self.disconnects.inc(reason_index(d.reason));
                    }
                }
                self.append_latency.observe(started.elapsed());
            }
            // Not a failure: the command is decided again against the other node's change.
            Err(LogError::Conflict(_)) => {
                self.append_conflicts.inc();
            }
            Err(_) => {
                self.append_failures.inc();
            }
        };
    }

    /// Sessions this node recorded as ended with `reason`.
    pub fn disconnects(&self, reason: CloseReason) -> u64 {
        self.disconnects.get(reason_index(reason))
    }

    /// The API's request metrics over the route table `routes` (made at the first call; the
    /// API is served once per server).
    pub fn http(&self, routes: impl FnOnce() -> Vec<String>) -> Arc<HttpMetrics> {
        let (http, _) = self.http.get_or_init(|| {
            let http = Arc::new(HttpMetrics::new(routes()));
            let mut registry = Registry::default();
            registry.register(
                "wkuser_http_requests",
                "API requests by route (the route table's path, or unmatched) and status",
                http.requests(),
            );
            registry.register(
                "wkuser_http_request_duration_seconds",
                "API request durations by route, until the answer's head is ready",
                http.durations(),
            );
            (http, registry)
        });
        http.clone()
    }

    /// The hook the webhook sender reports through.
    pub fn webhook(&self) -> &WebhookGauges {
        &self.webhook
    }

    /// Where the SQL view's progress is read from (the projector's last applied seq).
    pub fn watch_view(&self, projected: watch::Receiver<Seq>) {
        let _ = self.view_progress.set(projected);
    }

    /// The last seq the SQL view has applied, once [`Metrics::watch_view`] was called.
    pub fn view_projected(&self) -> Option<Seq> {
        self.view_progress.get().map(|p| *p.borrow())
    }

    /// Everything, as Prometheus text (format 0.0.4), followed by `now`: the values the caller
    /// read at this scrape.
    pub fn encode(&self, now: &Registry) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut out = String::with_capacity(16 * 1024);
        encode(&mut out, now)?;
        encode(&mut out, &self.registry)?;
        if let Some((_, http)) = self.http.get() {
            encode(&mut out, http)?;
        }
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct WebhookCollector(Arc<WebhookGauges>);

impl Collector for WebhookCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        process::encode(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_and_event_type_has_its_counter() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(REASONS[reason_index(*reason)], reason.as_str());
            assert_eq!(reason_index(*reason), i);
        }
        let text = Metrics::new().encode(&Registry::default()).unwrap();
        for reason in CloseReason::ALL {
            let line = format!(
                "wkuser_disconnects_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
        for kind in EVENT_TYPES {
            assert!(text.contains(&format!(
                "wkuser_events_appended_total{{type=\"{kind}\"}} 0"
            )));
        }
    }
}
