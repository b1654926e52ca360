//! The process metrics every Prometheus client exports (`process_resident_memory_bytes`,
//! `process_open_fds`, ...), read from `/proc` through the `procfs` crate at each scrape and
//! named as client_golang names them, so that the usual dashboards find them.
//!
//! Promises: a value that cannot be read is left out, never made up. Must never: fail a scrape.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Writes the process metrics that can be read on this system.
pub fn encode(mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let (gauges, cpu_seconds) = read();
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    if let Some(seconds) = cpu_seconds {
        let counter = ConstCounter::new(seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            counter.metric_type(),
        )?)?;
    }
    Ok(())
}

/// A gauge: its name, its help, its value.
type Gauge = (&'static str, &'static str, f64);

/// The gauges, and the CPU seconds (a counter).
#[cfg(target_os = "linux")]
fn read() -> (Vec<Gauge>, Option<f64>) {
    use procfs::process::{LimitValue, Process};
    use procfs::WithCurrentSystemInfo;

    let mut out = Vec::new();
    let Ok(me) = Process::myself() else {
        return (out, None);
    };
    let ticks = procfs::ticks_per_second() as f64;
    let mut cpu_seconds = None;
    if let Ok(stat) = me.stat() {
        cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
        out.push((
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            stat.rss_bytes().get() as f64,
        ));
        out.push((
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            stat.vsize as f64,
        ));
        out.push((
            "process_threads",
            "Number of OS threads in the process.",
            stat.num_threads as f64,
        ));
        if let Ok(boot) = procfs::boot_time_secs() {
            let since_boot = stat.starttime as f64 / ticks;
            out.push((
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + since_boot,
            ));
        }
    }
    if let Ok(n) = me.fd_count() {
        out.push((
            "process_open_fds",
            "Number of open file descriptors.",
            n as f64,
        ));
    }
    if let Ok(limits) = me.limits() {
        if let LimitValue::Value(n) = limits.max_open_files.soft_limit {
            out.push((
                "process_max_fds",
                "Maximum number of open file descriptors.",
                n as f64,
            ));
        }
    }
    (out, cpu_seconds)
}

#[cfg(not(target_os = "linux"))]
fn read() -> (Vec<Gauge>, Option<f64>) {
    (Vec::new(), None)
}
