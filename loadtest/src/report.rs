//! The report: every figure of the server next to its ceiling and their ratio, latency
//! percentiles, memory per idle connection, the targets, and every error counted.
//!
//! Throughput ratios are server / ceiling (1.00x = as fast as the bare stack); latency ratios
//! are server / ceiling too (1.0x = as quick, 3.0x = three times slower). Promises: a target is
//! marked met or missed only when the run matches its conditions (10,000 sessions, 1,000
//! connects/s reached), otherwise it says why it cannot judge. Must never: print a figure that
//! was not measured in this run.

use std::time::Duration;

use crate::across::AcrossRun;
use crate::figures::Figures;
use crate::measure::{ms, rate, Summary};
use crate::run::{LoadtestArgs, ServerRun};

pub struct Report<'a> {
    pub args: &'a LoadtestArgs,
    pub answer_size: usize,
    /// The better of the two ceiling runs, figure by figure.
    pub ceiling: Figures,
    pub ceilings: [Figures; 2],
    pub server: ServerRun,
}

pub fn print(r: &Report<'_>) {
    let a = r.args;
    let s = &r.server.figures;
    let c = &r.ceiling;
    let churn = format!("churn {}/s", a.churn_rate);
    println!();
    println!(
        "== wkuser-loadtest: {} users, {churn}, {} onlinestatus clients x {} uids, {:.0} s; api {} ws {} ==",
        a.users,
        a.status_clients,
        crate::run::UIDS_PER_REQUEST,
        a.duration.as_secs_f64(),
        a.api,
        a.ws
    );
    println!(
        "ceiling: a bare tokio-tungstenite accept + echo ({} sessions, {} KiB read buffer) and axum answering a constant {}-byte body,",
        c.sessions,
        crate::ceiling::READ_BUFFER_BYTES / 1024,
        r.answer_size
    );
    println!(
        "         same client code and load shape, measured before and after the server in this run (the better of the two);"
    );
    println!(
        "         onlinestatus alone against a third one, in {} slices each alternating with the server's (server, ceiling, ceiling, server, ...)",
        crate::figures::PAIRS
    );

    println!();
    println!(
        "{:<46} {:>12} {:>12} {:>7}   target (point 4)",
        "throughput", "server", "ceiling", "ratio"
    );
    let open_ratio = s.open.per_sec / c.open.per_sec;
    row(
        &format!("durable connects/s (opening {} at once)", s.open.count),
        s.open.per_sec,
        c.open.per_sec,
        &format!(">= 0.50x: {}", verdict(open_ratio >= 0.5)),
    );
    // The ceiling of the slices in between, when there was one: it ran when the server did.
    let status_ceiling = s.status_alone_beside.unwrap_or(c.status_alone);
    let status_ratio = s.status_alone.per_sec / status_ceiling.per_sec;
    row(
        "onlinestatus/s (100 uids, no churn)",
        s.status_alone.per_sec,
        status_ceiling.per_sec,
        &format!(">= 0.70x: {}", verdict(status_ratio >= 0.7)),
    );
    if s.status_alone_beside.is_some() {
        row(
            "  against the better ceiling run instead",
            s.status_alone.per_sec,
            c.status_alone.per_sec,
            "(runs a minute before and after the server)",
        );
    }
    let busy = |r: &crate::figures::Rated| {
        r.cpu_busy
            .map_or("?".into(), |b| format!("{:.0}%", b * 100.0))
    };
    println!(
        "{:<46} {:>12} {:>12}   (under 100%: the clients wait on latency, not on CPU)",
        "  CPUs busy meanwhile",
        busy(&s.status_alone),
        busy(&status_ceiling)
    );
    row(
        &format!("onlinestatus/s (100 uids, {churn})"),
        s.status_churn.per_sec,
        c.status_churn.per_sec,
        "",
    );
    row(
        &format!("reconnects/s ({churn})"),
        s.connects.per_sec,
        c.connects.per_sec,
        "",
    );
    row(
        &format!("closes/s, completed ({churn})"),
        s.closes.per_sec,
        c.closes.per_sec,
        "",
    );

    println!();
    println!(
        "{:<46} {:>34} {:>34}   ratio",
        "latency p50 / p99 / p999", "server", "ceiling"
    );
    lat_row(
        "connect frame -> result (opening at once)",
        &s.open.latency,
        &c.open.latency,
        "",
    );
    let nodes = a.api.split(',').filter(|t| !t.trim().is_empty()).count();
    lat_row(
        &format!("connect frame -> result ({churn})"),
        &s.connects.latency,
        &c.connects.latency,
        &connect_target(nodes, s),
    );
    lat_row(
        &format!("close frame -> server's close ({churn})"),
        &s.closes.latency,
        &c.closes.latency,
        "",
    );
    lat_row(
        "onlinestatus (no churn)",
        &s.status_alone.latency,
        &status_ceiling.latency,
        "",
    );
    let churn_reached = s.connects.per_sec >= 950.0;
    let p99_target = match s.status_churn.latency.p99 {
        None => "p99 <= 5 ms at 1,000 connects/s: not measured".to_string(),
        Some(_) if !churn_reached => format!(
            "p99 <= 5 ms at 1,000 connects/s: cannot judge (churn reached {:.0}/s)",
            s.connects.per_sec
        ),
        Some(p99) => format!(
            "p99 <= 5 ms at 1,000 connects/s: {}",
            verdict(p99 <= Duration::from_millis(5))
        ),
    };
    lat_row(
        &format!("onlinestatus ({churn})"),
        &s.status_churn.latency,
        &c.status_churn.latency,
        &p99_target,
    );

    if let Some(across) = &s.across {
        print_across(across);
    }

    println!();
    let (b, f) = (r.server.rss_before, r.server.rss_after);
    let conns = f.open_connections.saturating_sub(b.open_connections);
    match (b.rss_bytes, f.rss_bytes) {
        (Some(rb), Some(rf)) if conns > 0 => {
            let per = (rf as f64 - rb as f64) / conns as f64 / 1024.0;
            let target = if conns >= 10_000 {
                format!("<= 10 KiB at 10,000: {}", verdict(per <= 10.0))
            } else {
                format!("<= 10 KiB at 10,000: cannot judge at {conns} connections")
            };
            println!(
                "server RSS per idle connection: {per:.1} KiB   target {target}\n  (RSS {:.1} MiB before opening, {:.1} MiB 1 s after {conns} more connections were open)",
                mib(rb),
                mib(rf)
            );
        }
        (Some(_), Some(_)) => println!("server RSS per idle connection: no connection was opened"),
        _ => println!("server RSS per idle connection: the server reports no RSS (no /proc)"),
    }

    println!();
    println!(
        "onlinestatus answers: {:.0} bytes on average (the constant body: {} bytes)",
        s.answer_bytes, r.answer_size
    );
    let reg = &r.server.registered;
    println!(
        "tokens registered: {} in {:.2} s ({:.0}/s durable writes, {} at a time)",
        reg.registered,
        reg.elapsed.as_secs_f64(),
        rate(reg.registered, reg.elapsed),
        a.concurrency
    );
    println!(
        "churn: {} reconnects, {} closes, {} skipped (no held session free, or too many in flight)",
        s.connects.count, s.closes.count, s.skipped
    );
    let e = &r.server.at_end;
    println!(
        "server after the churn: {} open connections, {} online sessions, {} known users, last seq {}",
        e.open_connections, e.online_sessions, e.known_users, e.last_seq
    );
    match r.server.dropped_in {
        Some(d) => println!(
            "leaving: {} sessions dropped at once; the server had recorded every close after {:.2} s ({:.0}/s)",
            r.server.held,
            d.as_secs_f64(),
            rate(r.server.held as u64, d)
        ),
        None => println!(
            "leaving: {} sessions dropped at once; the server still counted some online after 60 s",
            r.server.held
        ),
    }
    for (i, run) in r.ceilings.iter().enumerate() {
        println!(
            "ceiling run {}: connects {:.0}/s, onlinestatus {:.0}/s alone and {:.0}/s with churn, reconnects {:.0}/s",
            i + 1,
            run.open.per_sec,
            run.status_alone.per_sec,
            run.status_churn.per_sec,
            run.connects.per_sec
        );
    }
    if s.closes_without_frame > 0 {
        println!(
            "note: the server ended {} of {} closes without answering the client's close frame (RFC 6455 5.5.1 asks for one); \
             the close latency above runs to the end of the connection",
            s.closes_without_frame, s.closes.count
        );
    }
    for (who, figures) in [
        ("server", s),
        ("ceiling run 1", &r.ceilings[0]),
        ("ceiling run 2", &r.ceilings[1]),
    ] {
        for (what, errors) in &figures.errors {
            if errors.total() > 0 {
                println!("errors, {who}, {what}: {}", errors.total());
                print!("{}", errors.top(5));
            }
        }
    }
    if reg.errors.total() > 0 {
        println!("errors, server, registration: {}", reg.errors.total());
        print!("{}", reg.errors.top(5));
    }
}

/// Point 4's connect target, judged at 1,000 connects/s over three nodes or more.
fn connect_target(nodes: usize, s: &Figures) -> String {
    if nodes < 3 {
        return String::new();
    }
    let target = "p99 <= 10 ms at 1,000 connects/s over 3 nodes";
    match s.connects.latency.p99 {
        None => format!("{target}: not measured"),
        Some(_) if s.connects.per_sec < 950.0 => format!(
            "{target}: cannot judge (churn reached {:.0}/s)",
            s.connects.per_sec
        ),
        Some(p99) => format!("{target}: {}", verdict(p99 <= Duration::from_millis(10))),
    }
}

/// The probes across nodes: tail lag and cross-node kick, with their targets.
fn print_across(a: &AcrossRun) {
    println!();
    println!(
        "{:<46} {:>34}   target (point 4)",
        format!("across {} nodes, p50 / p99 / p999 (max)", a.nodes),
        "",
    );
    let judged = |l: &Summary, limit: Duration, name: &str| match l.p99 {
        None => format!("{name}: not measured"),
        Some(_) if l.count < MIN_PROBES => {
            format!(
                "{name}: cannot judge ({} probes, fewer than {MIN_PROBES})",
                l.count
            )
        }
        Some(p99) => format!("{name}: {}", verdict(p99 <= limit)),
    };
    let tail = a.tail_lag.summary();
    println!(
        "{:<46} {:>34}   {}",
        "tail lag: connect acked on B -> online on A",
        format!("{} ({})", three(&tail), ms(tail.max)),
        judged(&tail, Duration::from_millis(100), "p99 <= 100 ms")
    );
    let kick = a.kick.summary();
    println!(
        "{:<46} {:>34}   {}",
        "kick: device_quit answered on A -> close on B",
        format!("{} ({})", three(&kick), ms(kick.max)),
        judged(&kick, Duration::from_millis(200), "p99 <= 200 ms")
    );
    println!(
        "  {} tail probes ({} skipped, one asked every {} ms: the lag's resolution), {} kick probes ({} skipped, {} closed before the quit's answer, counted as 0)",
        tail.count,
        a.tail_skipped,
        crate::across::POLL.as_millis(),
        kick.count,
        a.kick_skipped,
        a.kick_before_answer
    );
    for (what, errors) in [
        ("tail probes", &a.tail_errors),
        ("kick probes", &a.kick_errors),
    ] {
        if errors.total() > 0 {
            println!("errors, server, {what}: {}", errors.total());
            print!("{}", errors.top(5));
        }
    }
}

/// Probes a latency target needs before it is judged.
const MIN_PROBES: usize = 100;

fn three(s: &Summary) -> String {
    format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.p999))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

fn row(name: &str, server: f64, ceiling: f64, target: &str) {
    let ratio = if ceiling > 0.0 {
        format!("{:.2}x", server / ceiling)
    } else {
        "-".into()
    };
    println!("{name:<46} {server:>10.0}/s {ceiling:>10.0}/s {ratio:>7}   {target}");
}

fn lat_row(name: &str, server: &Summary, ceiling: &Summary, target: &str) {
    let three = |s: &Summary| format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.p999));
    let ratio = |m: Option<Duration>, c: Option<Duration>| match (m, c) {
        (Some(m), Some(c)) if !c.is_zero() => {
            format!("{:.1}x", m.as_secs_f64() / c.as_secs_f64())
        }
        _ => "-".into(),
    };
    println!(
        "{name:<46} {:>34} {:>34}   {} / {} / {}   {target}",
        three(server),
        three(ceiling),
        ratio(server.p50, ceiling.p50),
        ratio(server.p99, ceiling.p99),
        ratio(server.p999, ceiling.p999),
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
