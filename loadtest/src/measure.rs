//! What the load tool counts: latency samples and their percentiles, rates, and errors grouped
//! by kind.
//!
//! Latencies are kept as every sample in a `Vec` and sorted once at the end: a run records at
//! most a few million samples (8 bytes each), so exact percentiles cost less than a histogram
//! dependency. Must never: report a percentile of an empty set as a number.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Latency samples, in nanoseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0.push(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Reads the percentiles (of a sorted copy).
    pub fn summary(&self) -> Summary {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> Option<Duration> {
            if sorted.is_empty() {
                return None;
            }
            // The nearest-rank percentile: the smallest sample with at least q of all at or
            // below it.
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            Some(Duration::from_nanos(sorted[rank - 1]))
        };
        Summary {
            count: sorted.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: sorted.last().map(|&n| Duration::from_nanos(n)),
        }
    }
}

/// Percentiles of a set of latencies (`None` when there was no sample).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub p999: Option<Duration>,
    pub max: Option<Duration>,
}

impl Summary {
    /// Percentile by percentile, the lower of the two (an absent one loses).
    pub fn best(&self, other: &Summary) -> Summary {
        let low = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Summary {
            count: self.count.max(other.count),
            p50: low(self.p50, other.p50),
            p99: low(self.p99, other.p99),
            p999: low(self.p999, other.p999),
            max: low(self.max, other.max),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} p99 {} p999 {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999)
        )
    }
}

/// A duration in milliseconds with enough digits to compare, or `-`.
pub fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1e3;
            if ms < 10.0 {
                format!("{ms:.3} ms")
            } else if ms < 100.0 {
                format!("{ms:.2} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
    }
}

/// Events per second over `elapsed`.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Failures, counted by a short description of their kind.
#[derive(Debug, Default)]
pub struct Errors(BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, n) in other.0 {
            *self.0.entry(k).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The most frequent kinds, most frequent first, one per line, indented.
    pub fn top(&self, n: usize) -> String {
        let mut kinds: Vec<_> = self.0.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut out = String::new();
        for (kind, count) in kinds.into_iter().take(n) {
            out.push_str(&format!("    {count} x {kind}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Some(Duration::from_micros(500)));
        assert_eq!(s.p99, Some(Duration::from_micros(990)));
        assert_eq!(s.p999, Some(Duration::from_micros(999)));
        assert_eq!(s.max, Some(Duration::from_micros(1000)));
        let empty = Latencies::default().summary();
        assert!(empty.p50.is_none());
        assert_eq!(ms(empty.p99), "-");
    }

    #[test]
    fn errors_are_grouped_most_frequent_first() {
        let mut e = Errors::default();
        e.add("b");
        e.add("a");
        e.add("b");
        assert_eq!(e.total(), 3);
        assert_eq!(e.top(5), "    2 x b\n    1 x a\n");
    }
}
