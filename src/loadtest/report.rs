//! The report: every figure next to its ceiling and their ratio, latency percentiles, memory per
//! idle connection, the targets of the issue, and every error counted on the way.
//!
//! Throughput ratios are measured / ceiling (1.00x = as fast as the bare stack); latency ratios
//! are measured / ceiling too (1.00x = as quick, 3.00x = three times slower). Promises: a
//! target is marked met or missed only when the run matches its conditions (10,000 sessions,
//! 1,000 connects/s achieved), otherwise it says why it cannot judge. Must never: print a
//! figure that was not measured in this run.

use std::time::Duration;

use super::drive::{ChurnRun, RegisterRun, StatusRun};
use super::measure::{ms, rate, Summary};
use super::{CeilingRun, LoadtestArgs, ServerStats};

pub struct Report<'a> {
    pub args: &'a LoadtestArgs,
    pub answer_size: usize,
    pub ceilings: CeilingRun,
    pub registered: RegisterRun,
    pub opened_count: u64,
    pub opened_in: Duration,
    pub open_answers: Summary,
    pub rss_before: ServerStats,
    pub rss_after: ServerStats,
    pub status_alone: StatusRun,
    pub status_churn: StatusRun,
    pub churned: ChurnRun,
    pub at_end: ServerStats,
    pub held: usize,
    pub dropped_in: Option<Duration>,
}

pub fn print(r: &Report<'_>) {
    let a = r.args;
    let c = &r.ceilings;
    println!();
    println!(
        "== wkuser loadtest: {} users, churn {}/s, {} onlinestatus clients x {} uids, {:.0} s; api {} ws {} ==",
        a.users,
        a.churn_rate,
        a.status_clients,
        super::UIDS_PER_REQUEST,
        a.duration.as_secs_f64(),
        a.api,
        a.ws
    );
    println!(
        "ceilings: bare tokio-tungstenite accept + echo ({} sessions); axum answering a constant {}-byte body; same client code, same machine, this run",
        c.sessions, r.answer_size
    );

    println!();
    println!(
        "{:<48} {:>12} {:>12} {:>8}   target",
        "throughput", "measured", "ceiling", "ratio"
    );
    let open_rate = rate(r.opened_count, r.opened_in);
    let open_ceiling = rate(c.open.opened, c.open.elapsed);
    row(
        &format!("durable connects/s (opening {} sessions)", r.opened_count),
        open_rate,
        open_ceiling,
        Some(judge_at_least(open_rate / open_ceiling, 0.5)),
    );
    let alone = rate(r.status_alone.requests, r.status_alone.elapsed);
    let status_ceiling = rate(c.status.requests, c.status.elapsed);
    row(
        "onlinestatus/s (100 uids, no churn)",
        alone,
        status_ceiling,
        Some(judge_at_least(alone / status_ceiling, 0.7)),
    );
    let with_churn = rate(r.status_churn.requests, r.status_churn.elapsed);
    row(
        &format!("onlinestatus/s (100 uids, churn {}/s)", a.churn_rate),
        with_churn,
        status_ceiling,
        None,
    );
    let connects = rate(r.churned.connects, r.churned.elapsed);
    let disconnects = rate(r.churned.disconnects, r.churned.elapsed);
    row(
        &format!("churn connects/s (asked {}/s)", a.churn_rate),
        connects,
        rate(c.churn.connects, c.churn.elapsed),
        None,
    );
    row(
        "churn disconnects/s (completed closes)",
        disconnects,
        rate(c.churn.disconnects, c.churn.elapsed),
        None,
    );

    println!();
    println!(
        "{:<48} {:>34} {:>34}   ratio",
        "latency p50 / p99 / p999", "measured", "ceiling"
    );
    lat_row(
        "connect frame -> result (opening phase)",
        &r.open_answers,
        &c.open.answered_in.summary(),
        None,
    );
    lat_row(
        "connect frame -> result (churn)",
        &r.churned.connect_in.summary(),
        &c.churn.connect_in.summary(),
        None,
    );
    lat_row(
        "close frame -> server's close (churn)",
        &r.churned.close_in.summary(),
        &c.churn.close_in.summary(),
        None,
    );
    lat_row(
        "onlinestatus (no churn)",
        &r.status_alone.answered_in.summary(),
        &c.status.answered_in.summary(),
        None,
    );
    let churn_ok = a.churn_rate >= 1000.0 && connects >= 0.95 * 1000.0;
    let p99_target = match r.status_churn.answered_in.summary().p99 {
        None => "p99 <= 5 ms under 1,000 connects/s: not measured".to_string(),
        Some(_) if !churn_ok => format!(
            "p99 <= 5 ms under 1,000 connects/s: cannot judge (churn reached {connects:.0}/s)"
        ),
        Some(p99) => format!(
            "p99 <= 5 ms under 1,000 connects/s: {}",
            if p99 <= Duration::from_millis(5) {
                "met"
            } else {
                "missed"
            }
        ),
    };
    lat_row(
        &format!("onlinestatus (churn {}/s)", a.churn_rate),
        &r.status_churn.answered_in.summary(),
        &c.status.answered_in.summary(),
        Some(p99_target),
    );

    println!();
    let (b, f) = (r.rss_before, r.rss_after);
    let conns = f.open_connections.saturating_sub(b.open_connections);
    match (b.rss_bytes, f.rss_bytes) {
        (Some(rb), Some(rf)) if conns > 0 => {
            let per = (rf as f64 - rb as f64) / conns as f64 / 1024.0;
            let target = if conns >= 10_000 {
                format!(
                    "<= 10 KiB at 10,000: {}",
                    if per <= 10.0 { "met" } else { "missed" }
                )
            } else {
                format!("<= 10 KiB at 10,000: cannot judge at {conns} connections")
            };
            println!(
                "server RSS per idle connection: {per:.1} KiB  (RSS {:.1} MiB -> {:.1} MiB over {conns} new connections, 1 s after the last opened)   target {target}",
                mib(rb),
                mib(rf)
            );
        }
        (Some(_), Some(_)) => println!("server RSS per idle connection: no connection was opened"),
        _ => println!("server RSS per idle connection: the server reports no RSS (no /proc)"),
    }

    println!();
    let answers = r.status_alone.requests + r.status_churn.requests;
    if answers > 0 {
        println!(
            "onlinestatus answers: {:.0} bytes on average (ceiling body {} bytes)",
            (r.status_alone.answer_bytes + r.status_churn.answer_bytes) as f64 / answers as f64,
            r.answer_size
        );
    }
    println!(
        "tokens registered: {} in {:.2} s ({:.0}/s durable writes, {} at a time)",
        r.registered.registered,
        r.registered.elapsed.as_secs_f64(),
        rate(r.registered.registered, r.registered.elapsed),
        a.concurrency
    );
    println!(
        "churn: {} connects, {} closes, {} skipped (none free or too many in flight), sessions held at the end {}",
        r.churned.connects, r.churned.disconnects, r.churned.skipped, r.held
    );
    println!(
        "server at the end: {} open connections, {} online sessions, {} known users, last seq {}",
        r.at_end.open_connections,
        r.at_end.online_sessions,
        r.at_end.known_users,
        r.at_end.last_seq
    );
    match r.dropped_in {
        Some(d) => println!(
            "leaving: dropped {} sessions at once; the server had recorded every close after {:.2} s ({:.0}/s)",
            r.held,
            d.as_secs_f64(),
            rate(r.held as u64, d)
        ),
        None => println!(
            "leaving: dropped {} sessions at once; the server still counted some online after 60 s",
            r.held
        ),
    }
    for (what, run) in [("the server", &r.churned), ("the bare ceiling", &c.churn)] {
        if run.closes_without_frame > 0 {
            println!(
                "note: {what} ended {} of {} closes without answering the client's close frame (RFC 6455 5.5.1 asks for one)",
                run.closes_without_frame, run.disconnects
            );
        }
    }
    errors("ceiling open", &c.open.errors);
    errors("ceiling churn", &c.churn.errors);
    errors("ceiling onlinestatus", &c.status.errors);
    errors("register", &r.registered.errors);
    errors("churn", &r.churned.errors);
    errors("onlinestatus (no churn)", &r.status_alone.errors);
    errors("onlinestatus (churn)", &r.status_churn.errors);
}

fn errors(what: &str, e: &super::measure::Errors) {
    if e.total() > 0 {
        println!("errors, {what}: {}", e.total());
        print!("{}", e.top(5));
    }
}

fn row(name: &str, measured: f64, ceiling: f64, target: Option<String>) {
    let ratio = if ceiling > 0.0 {
        format!("{:.2}x", measured / ceiling)
    } else {
        "-".into()
    };
    println!(
        "{name:<48} {:>10.0}/s {:>10.0}/s {ratio:>8}   {}",
        measured,
        ceiling,
        target.unwrap_or_default()
    );
}

fn judge_at_least(ratio: f64, want: f64) -> String {
    format!(
        ">= {want:.2}x: {}",
        if ratio >= want { "met" } else { "missed" }
    )
}

fn lat_row(name: &str, measured: &Summary, ceiling: &Summary, target: Option<String>) {
    let three = |s: &Summary| format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.p999));
    let ratio = |m: Option<Duration>, c: Option<Duration>| match (m, c) {
        (Some(m), Some(c)) if !c.is_zero() => format!("{:.1}x", m.as_secs_f64() / c.as_secs_f64()),
        _ => "-".into(),
    };
    println!(
        "{name:<48} {:>34} {:>34}   {} / {} / {}   {}",
        three(measured),
        three(ceiling),
        ratio(measured.p50, ceiling.p50),
        ratio(measured.p99, ceiling.p99),
        ratio(measured.p999, ceiling.p999),
        target.unwrap_or_default()
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
