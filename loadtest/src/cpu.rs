//! How busy the machine's CPUs were during a phase, from `/proc/stat` (Linux; elsewhere the
//! figure is left out).
//!
//! A throughput measured while the CPUs idle is a latency figure in disguise (each client
//! waits for its answer before asking again); the report prints this beside each
//! onlinestatus rate so a reader can tell which it is. Promises: reads a file, nothing more.

/// Jiffies of all CPUs: (busy, total).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    pub fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse(&stat)
    }

    /// The busy share of the CPUs between `self` and `later`, 0.0 to 1.0.
    pub fn busy_until(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let busy = later.busy.checked_sub(self.busy)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`.
fn parse(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values[4];
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_counts_idle_and_iowait_as_idle() {
        let before = parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = parse("cpu  250 0 150 750 100 0 0 0 0 0\n").unwrap();
        assert_eq!(before.busy_until(&after), Some(0.8));
        assert!(parse("intr 1 2 3\n").is_none());
    }
}
