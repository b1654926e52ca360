//! The metric types the hot paths touch, kept as plain atomics and encoded by prometheus-client
//! through its [`EncodeMetric`] trait: a histogram, a counter per value of one label, a gauge
//! per device flag, and the HTTP grid (a counter per route and status, a histogram per route).
//!
//! prometheus-client's own `Histogram` takes a mutex per observation and its `Family` a
//! read-write lock per lookup; a connect, an append and an onlinestatus request must not meet
//! other cores on a lock for a metric, so these record with one relaxed `fetch_add` per number
//! they move. Promises: a scrape sees every count recorded before it began (it may see a
//! bucket before the sum that goes with it, which Prometheus tolerates). Must never: allocate
//! or lock when recording.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// A shared metric, registered in a registry while its owner keeps recording into it.
#[derive(Debug)]
pub struct Shared<T>(pub Arc<T>);

impl<T: EncodeMetric> EncodeMetric for Shared<T> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A histogram of durations over fixed bounds (seconds), recorded in nanoseconds.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    bounds_ns: Box<[u64]>,
    /// One count per bound, plus the overflow past the last one (`+Inf`); not cumulative.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // The first bound at or above the value: Prometheus buckets are `le`.
        let at = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[at].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn encode_into(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A counter for each value of one label, every value known in advance and always shown
/// (a zero too: `rate()` needs a series to exist before its first increase).
#[derive(Debug)]
pub struct LabeledCounters {
    label: &'static str,
    values: &'static [&'static str],
    counts: Box<[AtomicU64]>,
}

impl LabeledCounters {
    pub fn new(label: &'static str, values: &'static [&'static str]) -> Self {
        LabeledCounters {
            label,
            values,
            counts: values.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Adds one to the counter of `values[at]`.
    pub fn inc(&self, at: usize) {
        self.counts[at].fetch_add(1, Relaxed);
    }

    pub fn get(&self, at: usize) -> u64 {
        self.counts[at].load(Relaxed)
    }
}

impl EncodeMetric for LabeledCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (value, count) in self.values.iter().zip(self.counts.iter()) {
            let labels = [(self.label, *value)];
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&count.load(Relaxed), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A gauge for each device flag (0..=255). A flag is shown once it has been used, and stays
/// shown at zero afterwards, so that its series drops to 0 rather than going stale.
#[derive(Debug)]
pub struct FlagGauges {
    values: Box<[AtomicI64]>,
    used: Box<[AtomicBool]>,
}

impl Default for FlagGauges {
    fn default() -> Self {
        FlagGauges {
            values: (0..256).map(|_| AtomicI64::new(0)).collect(),
            used: (0..256).map(|_| AtomicBool::new(false)).collect(),
        }
    }
}

impl FlagGauges {
    pub fn add(&self, flag: u8, n: i64) {
        let at = usize::from(flag);
        self.values[at].fetch_add(n, Relaxed);
        // A load first: once set, the line stays shared between cores instead of being
        // written again by every session.
        if !self.used[at].load(Relaxed) {
            self.used[at].store(true, Relaxed);
        }
    }

    pub fn get(&self, flag: u8) -> i64 {
        self.values[usize::from(flag)].load(Relaxed)
    }
}

impl EncodeMetric for FlagGauges {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (flag, value) in self.values.iter().enumerate() {
            if !self.used[flag].load(Relaxed) {
                continue;
            }
            let labels = [("device_flag", flag.to_string())];
            encoder
                .encode_family(&labels)?
                .encode_gauge(&value.load(Relaxed))?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The status codes an HTTP counter row has a cell for: 100..=599 (any other is counted as 599,
/// which no route answers).
const STATUSES: usize = 500;

/// The API's requests: a counter per (route, status), and a histogram of durations per route.
/// Routes are named by the API's route table; requests no route serves count as
/// [`HttpMetrics::UNMATCHED`], so that a scan of unknown paths cannot make series without end.
#[derive(Debug)]
pub struct HttpMetrics {
    routes: Box<[Box<str>]>,
    requests: Box<[Box<[AtomicU64]>]>,
    durations: Box<[AtomicHistogram]>,
}

/// The bounds of the HTTP histogram, in seconds: the hot path answers in tens of microseconds,
/// a mutation waits for a flush (a millisecond or more), a history page for SQL.
pub const HTTP_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

impl HttpMetrics {
    /// The route label of requests for a path no route serves.
    pub const UNMATCHED: &'static str = "unmatched";

    pub fn new(routes: impl IntoIterator<Item = String>) -> Self {
        let routes: Box<[Box<str>]> = routes
            .into_iter()
            .map(String::into_boxed_str)
            .chain([Self::UNMATCHED.into()])
            .collect();
        HttpMetrics {
            requests: routes
                .iter()
                .map(|_| (0..STATUSES).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            durations: routes
                .iter()
                .map(|_| AtomicHistogram::new(HTTP_BOUNDS))
                .collect(),
            routes,
        }
    }

    /// The index of the route that serves `path`, or of [`HttpMetrics::UNMATCHED`].
    pub fn route_of(&self, path: &str) -> usize {
        let last = self.routes.len() - 1;
        self.routes[..last]
            .iter()
            .position(|r| **r == *path)
            .unwrap_or(last)
    }

    pub fn record(&self, route: usize, status: u16, took: Duration) {
        let cell = usize::from(status.clamp(100, 599) - 100);
        self.requests[route][cell].fetch_add(1, Relaxed);
        self.durations[route].observe(took);
    }

    /// The requests counter, for registering.
    pub fn requests(self: &Arc<Self>) -> Shared<HttpRequests> {
        Shared(Arc::new(HttpRequests(self.clone())))
    }

    /// The duration histograms, for registering.
    pub fn durations(self: &Arc<Self>) -> Shared<HttpDurations> {
        Shared(Arc::new(HttpDurations(self.clone())))
    }
}

/// `wkuser_http_requests_total{route,status}`: only the cells that have counted.
#[derive(Debug)]
pub struct HttpRequests(Arc<HttpMetrics>);

impl EncodeMetric for HttpRequests {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let http = &self.0;
        for (route, row) in http.routes.iter().zip(http.requests.iter()) {
            for (cell, count) in row.iter().enumerate() {
                let n = count.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let labels = [
                    ("route", route.to_string()),
                    ("status", (cell + 100).to_string()),
                ];
                encoder
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// `wkuser_http_request_duration_seconds{route}`: the routes that have been asked.
#[derive(Debug)]
pub struct HttpDurations(Arc<HttpMetrics>);

impl EncodeMetric for HttpDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let http = &self.0;
        for (route, histogram) in http.routes.iter().zip(http.durations.iter()) {
            if histogram.count() == 0 {
                continue;
            }
            let labels = [("route", route.to_string())];
            histogram.encode_into(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_lands_in_the_first_bucket_at_or_above_it() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(1000)); // exactly the first bound: le="0.001"
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_secs(3));
        let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(h.count(), 3);
        assert_eq!(
            h.sum_ns.load(Relaxed),
            1_000_000 + 1_001_000 + 3_000_000_000
        );
    }

    #[test]
    fn unknown_paths_share_one_route_and_odd_statuses_one_cell() {
        let http = HttpMetrics::new(["/a".to_string(), "/b".to_string()]);
        assert_eq!(http.route_of("/b"), 1);
        assert_eq!(http.route_of("/c"), 2);
        assert_eq!(http.route_of("/a/"), 2);
        http.record(2, 999, Duration::ZERO);
        assert_eq!(http.requests[2][499].load(Relaxed), 1);
    }
}
