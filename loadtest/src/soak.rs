//! Soak mode (`--soak 30m`): holds `--users` sessions and churns them at `--churn-rate` for a
//! long time, and prints, window by window (a minute each), what drifts when a server runs
//! for weeks: its RSS, the connect, close and onlinestatus tails, and onlinestatus/s against
//! its ceiling under the same churn.
//!
//! The phases: the ceiling under the same churn ([`crate::run::measure_ceilings`], as the
//! usual run measures it); the tokens and the sessions; the windows, with the churn running
//! through them without a pause ([`drive::churn_in_windows`]: an operation counts in the
//! window where it ends) and `--status-clients` asking onlinestatus meanwhile; every session
//! dropped, and the server's RSS once it has recorded every close; the ceiling again. Each
//! window's onlinestatus/s is printed live against the first ceiling, and in the closing table
//! against the better of the two (the machine drifts; nothing here cancels a drift within the
//! soak). Then the verdicts of issue 22: RSS growth after the first five minutes, every
//! window's connect and close p999, the last window against the second. Promises: bounded by
//! `--soak` (rounded up to whole windows) plus the phases around it; a verdict is given only
//! when the soak is long enough to judge it. Must never: keep a window's latency samples past
//! its line (a soak of hours would hold millions of them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::cpu::CpuTimes;
use crate::drive::{self, ChurnRun, Slowest, StatusRun};
use crate::figures::{self, Figures, Target};
use crate::measure::{ms, rate, Errors, Summary};
use crate::run::{self, Clock, Probe, ServerStats};
use crate::scale::{self, mib};
use crate::target::Spread;
use crate::users::Users;
use crate::ws::{Expect, Frames};

/// The time after which RSS must stay flat (issue 22: "after the first 5 minutes").
const SETTLING: Duration = Duration::from_secs(5 * 60);
/// How much RSS may grow after [`SETTLING`], as a share.
const RSS_GROWTH_LIMIT: f64 = 0.10;
/// The longest connect and close p999 of any window.
const P999_LIMIT: Duration = Duration::from_millis(20);
/// How long the server may take to record the closes of every session dropped at once.
const CLOSE_ALL_LIMIT: Duration = Duration::from_secs(60);

/// What the soak needs from the run's set-up.
pub struct Soak<'a> {
    pub clock: Clock,
    pub load: &'a figures::Load<'a>,
    pub users: &'a Users,
    pub frames: Arc<Frames>,
    pub ceiling_frames: &'a dyn Fn() -> Arc<Frames>,
    pub constant: Vec<u8>,
    pub api: Spread,
    pub ws: Spread,
    pub token: Option<String>,
    /// `/stats` before any session of the soak.
    pub before: ServerStats,
    pub length: Duration,
}

/// One window's figures (percentiles only: the samples are dropped).
#[derive(Debug, Clone)]
struct Window {
    /// 1-based.
    number: u32,
    /// Seconds since the windows started, at its end.
    end_s: f64,
    rss: Option<u64>,
    connects_per_sec: f64,
    connect: Summary,
    closes_per_sec: f64,
    close: Summary,
    status_per_sec: f64,
    status: Summary,
    errors: u64,
    skipped: u64,
    cpu_busy: Option<f64>,
    slowest_connect: Option<Slowest>,
    slowest_close: Option<Slowest>,
}

impl Window {
    fn of(
        number: u32,
        end_s: f64,
        rss: Option<u64>,
        churn: &ChurnRun,
        status: &StatusRun,
        cpu_busy: Option<f64>,
    ) -> Window {
        Window {
            number,
            end_s,
            rss,
            connects_per_sec: rate(churn.connects, churn.elapsed),
            connect: churn.connect_in.summary(),
            closes_per_sec: rate(churn.disconnects, churn.elapsed),
            close: churn.close_in.summary(),
            status_per_sec: rate(status.requests, status.elapsed),
            status: status.answered_in.summary(),
            errors: churn.errors.total() + status.errors.total(),
            skipped: churn.skipped,
            cpu_busy,
            slowest_connect: churn.slowest_connect,
            slowest_close: churn.slowest_close,
        }
    }

    /// One line: `minute 3 (180 s): RSS ... | connect ... | close ... | onlinestatus ... | errors
    /// ... | slowest connect ... at TIME, close ... at TIME`.
    fn line(&self, unit: &str, ceiling: f64) -> String {
        let rss = self
            .rss
            .map_or("RSS ?".into(), |r| format!("RSS {:.1} MiB", mib(r)));
        let ratio = if ceiling > 0.0 {
            format!("{:.2}x", self.status_per_sec / ceiling)
        } else {
            "-".into()
        };
        let cpu = self
            .cpu_busy
            .map_or("?".into(), |b| format!("{:.0}%", b * 100.0));
        format!(
            "{unit} {:>3} ({:>5.0} s): {rss} | connect {:.0}/s p99 {} p999 {} | close {:.0}/s p99 {} p999 {} | onlinestatus {:.0}/s {ratio} p99 {} p999 {} | {} errors / {} skipped | CPUs {cpu} | slowest connect {}, close {}",
            self.number,
            self.end_s,
            self.connects_per_sec,
            ms(self.connect.p99),
            ms(self.connect.p999),
            self.closes_per_sec,
            ms(self.close.p99),
            ms(self.close.p999),
            self.status_per_sec,
            ms(self.status.p99),
            ms(self.status.p999),
            self.errors,
            self.skipped,
            slowest(self.slowest_connect),
            slowest(self.slowest_close),
        )
    }
}

/// `12.3 ms at 2026-12-07T20:31:05.123Z` (the time its frame was sent, as the server's log
/// prints its own), or `-`.
fn slowest(s: Option<Slowest>) -> String {
    s.map_or("-".into(), |s| {
        format!(
            "{} at {}",
            ms(Some(s.took)),
            humantime::format_rfc3339_millis(s.sent_at)
        )
    })
}

/// Runs the soak and prints its windows and verdicts.
pub async fn run(s: Soak<'_>) -> anyhow::Result<()> {
    let (clock, load, args) = (s.clock, s.load, s.load.args);
    let window = args.soak_window;
    let windows = s.length.as_nanos().div_ceil(window.as_nanos()) as u32;
    let unit = if window == Duration::from_secs(60) {
        "minute"
    } else {
        "window"
    };
    clock.say(&format!(
        "soak: {} sessions held, churn {}/s, {windows} {unit}s of {}",
        args.users,
        args.churn_rate,
        humantime::format_duration(window)
    ));

    // The ceiling under the same churn, before.
    let first =
        run::measure_ceilings(&clock, load, (s.ceiling_frames)(), s.constant.clone()).await?;
    clock.say(&format!(
        "ceiling under churn {}/s: onlinestatus {:.0}/s",
        args.churn_rate, first.status_churn.per_sec
    ));

    // The sessions.
    let registered = run::register_users(&clock, args, s.users, &s.api, &s.token).await?;
    let target = Target {
        name: "server",
        ws: s.ws.clone(),
        http: s.api.clone(),
        token: s.token.clone(),
        expect: Expect::ConnectOk,
    };
    let opened = figures::open(&clock, &target, load, s.frames.clone()).await;
    let slots = opened.slots.clone();
    let mut probe = Probe::new(&s.api, &s.token);

    // The windows.
    let keep_alive = tokio::spawn(drive::keep_alive(slots.clone(), run::PING_EVERY));
    let (tx, mut churned) = mpsc::unbounded_channel();
    let shape = drive::Churn {
        rate: args.churn_rate,
        window,
        windows,
        max_in_flight: load.churn_in_flight,
    };
    let churn = tokio::spawn(drive::churn_in_windows(
        s.ws.clone(),
        slots.clone(),
        s.frames.clone(),
        Expect::ConnectOk,
        shape,
        move |run| {
            // The receiver outlives the churn; a send fails only if the soak has given up.
            let _ = tx.send(run);
        },
    ));
    let start = Instant::now();
    let mut rows: Vec<Window> = Vec::with_capacity(windows as usize);
    let mut errors = Errors::default();
    let (mut connects, mut closes, mut skipped, mut without_frame) = (0u64, 0u64, 0u64, 0u64);
    for w in 0..windows {
        let until = start + window * (w + 1);
        let cpu = CpuTimes::now();
        let status = drive::onlinestatus(
            s.api.clone(),
            s.token.clone(),
            load.bodies.clone(),
            args.status_clients,
            until.saturating_duration_since(Instant::now()),
        )
        .await;
        let Some(churn_run) = churned.recv().await else {
            break;
        };
        let busy = cpu
            .zip(CpuTimes::now())
            .and_then(|(before, after)| before.busy_until(&after));
        let rss = probe.stats().await.ok().and_then(|st| st.rss_bytes);
        let row = Window::of(
            w + 1,
            start.elapsed().as_secs_f64(),
            rss,
            &churn_run,
            &status,
            busy,
        );
        println!("{}", row.line(unit, first.status_churn.per_sec));
        connects += churn_run.connects;
        closes += churn_run.disconnects;
        skipped += churn_run.skipped;
        without_frame += churn_run.closes_without_frame;
        errors.merge(churn_run.errors);
        errors.merge(status.errors);
        rows.push(row);
    }
    churn.await.expect("the churn task panicked");
    keep_alive.abort();

    // Every session dropped; the server's memory once it has recorded the closes.
    let dropped_at = Instant::now();
    let held = figures::release(&slots);
    let settled =
        run::wait_for_sessions(&mut probe, s.before.online_sessions, CLOSE_ALL_LIMIT).await;
    let closed_in = settled.map(|()| dropped_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = probe.stats().await?;

    // The ceiling again: the better of the two is the ceiling of the closing table.
    let second =
        run::measure_ceilings(&clock, load, (s.ceiling_frames)(), s.constant.clone()).await?;

    print_summary(&Closing {
        args_line: format!(
            "{} sessions held, churn {}/s, {} {unit}s of {}; api {} ws {}",
            args.users,
            args.churn_rate,
            rows.len(),
            humantime::format_duration(window),
            args.api,
            args.ws
        ),
        unit,
        window,
        rows: &rows,
        ceilings: [&first, &second],
        held,
        closed_in,
        after_close: &after_close,
        data_dir: args.data_dir.as_deref(),
    });
    println!(
        "churn: {connects} reconnects, {closes} closes ({without_frame} without a close frame), {skipped} skipped; tokens registered: {} in {:.2} s",
        registered.registered,
        registered.elapsed.as_secs_f64()
    );
    if errors.total() > 0 {
        println!("errors, server, soak: {}", errors.total());
        print!("{}", errors.top(5));
    }
    Ok(())
}

/// What the closing summary prints.
struct Closing<'a> {
    args_line: String,
    unit: &'a str,
    window: Duration,
    rows: &'a [Window],
    ceilings: [&'a Figures; 2],
    held: usize,
    closed_in: Option<Duration>,
    after_close: &'a ServerStats,
    data_dir: Option<&'a std::path::Path>,
}

fn print_summary(s: &Closing<'_>) {
    let [first, second] = s.ceilings;
    let ceiling = first.status_churn.per_sec.max(second.status_churn.per_sec);
    println!();
    println!("== wkuser-loadtest soak: {} ==", s.args_line);
    println!(
        "ceiling under the same churn: onlinestatus {ceiling:.0}/s, the better of a bare stack's before ({:.0}/s) and after ({:.0}/s) the soak",
        first.status_churn.per_sec, second.status_churn.per_sec
    );
    for row in s.rows {
        println!("{}", row.line(s.unit, ceiling));
    }
    if let (Some(lo), Some(hi)) = (
        s.rows.iter().map(|r| r.status_per_sec).reduce(f64::min),
        s.rows.iter().map(|r| r.status_per_sec).reduce(f64::max),
    ) {
        if ceiling > 0.0 {
            println!(
                "onlinestatus/s against the ceiling under the same churn: {:.2}x to {:.2}x",
                lo / ceiling,
                hi / ceiling
            );
        }
    }
    println!("{}", rss_verdict(s.rows, s.window, s.unit));
    println!("{}", p999_verdict(s.rows, s.unit));
    println!("{}", second_and_last_verdict(s.rows, s.unit));
    let closed = match s.closed_in {
        Some(d) => format!(
            "the server recorded every close after {:.2} s",
            d.as_secs_f64()
        ),
        None => format!(
            "the server still counted sessions online after {} s",
            CLOSE_ALL_LIMIT.as_secs()
        ),
    };
    println!(
        "{}",
        scale::memory_line(
            &format!("after closing all {} sessions ({closed})", s.held),
            s.after_close,
            None
        )
    );
    println!(
        "  compare with a restarted server on the same data (within 20%: issue 22's target); loadtest/soak.sh restarts it and prints both"
    );
    println!("{}", scale::disk_line(s.data_dir, s.after_close));
}

/// RSS after the first five minutes: the highest of any later window against the window that
/// ends them.
fn rss_verdict(rows: &[Window], window: Duration, unit: &str) -> String {
    let settled = SETTLING.as_nanos().div_ceil(window.as_nanos()) as usize;
    let name = format!(
        "RSS grows <= {:.0}% after the first 5 minutes",
        RSS_GROWTH_LIMIT * 100.0
    );
    if rows.len() <= settled {
        return format!(
            "{name}: cannot judge ({} {unit}s: the soak must run past 5 minutes)",
            rows.len()
        );
    }
    let Some(base) = rows[settled - 1].rss else {
        return format!("{name}: cannot judge (no RSS at {unit} {settled})");
    };
    let later: Vec<u64> = rows[settled..].iter().filter_map(|r| r.rss).collect();
    let (Some(&highest), Some(&last)) = (later.iter().max(), later.last()) else {
        return format!("{name}: cannot judge (no RSS after {unit} {settled})");
    };
    let growth = |r: u64| r as f64 / base as f64 - 1.0;
    format!(
        "{name}: {} (after {unit} {settled}: {:.1} MiB; highest after it {:.1} MiB, {:+.1}%; at the end {:.1} MiB, {:+.1}%)",
        verdict(growth(highest) <= RSS_GROWTH_LIMIT),
        mib(base),
        mib(highest),
        growth(highest) * 100.0,
        mib(last),
        growth(last) * 100.0
    )
}

/// Connect and close p999 in every window.
fn p999_verdict(rows: &[Window], unit: &str) -> String {
    let name = format!(
        "connect and close p999 <= {} ms in every {unit}",
        P999_LIMIT.as_millis()
    );
    if rows.is_empty() {
        return format!("{name}: not measured");
    }
    let mut missed = Vec::new();
    let mut unmeasured = 0;
    for r in rows {
        match (r.connect.p999, r.close.p999) {
            (Some(c), Some(d)) if c <= P999_LIMIT && d <= P999_LIMIT => {}
            (Some(c), Some(d)) => missed.push(format!(
                "{} (connect {}, close {})",
                r.number,
                ms(Some(c)),
                ms(Some(d))
            )),
            _ => unmeasured += 1,
        }
    }
    if unmeasured > 0 {
        return format!("{name}: cannot judge ({unmeasured} {unit}s without a connect or a close)");
    }
    if missed.is_empty() {
        let worst = |f: fn(&Window) -> Option<Duration>| rows.iter().filter_map(f).max();
        format!(
            "{name}: met (the worst: connect {}, close {})",
            ms(worst(|r| r.connect.p999)),
            ms(worst(|r| r.close.p999))
        )
    } else {
        format!(
            "{name}: missed in {} of {} ({unit}s {})",
            missed.len(),
            rows.len(),
            missed.join(", ")
        )
    }
}

/// The last window's connect and close p99 and p999 against the second's.
fn second_and_last_verdict(rows: &[Window], unit: &str) -> String {
    let name = format!("the last {unit} no worse than the second");
    if rows.len() < 3 {
        return format!(
            "{name}: cannot judge ({} {unit}s, fewer than 3)",
            rows.len()
        );
    }
    let (second, last) = (&rows[1], &rows[rows.len() - 1]);
    let figures = [
        ("connect p99", second.connect.p99, last.connect.p99),
        ("connect p999", second.connect.p999, last.connect.p999),
        ("close p99", second.close.p99, last.close.p99),
        ("close p999", second.close.p999, last.close.p999),
    ];
    let mut met = true;
    let mut parts = Vec::new();
    for (what, a, b) in figures {
        match (a, b) {
            (Some(a), Some(b)) => {
                met &= b <= a;
                parts.push(format!("{what} {} -> {}", ms(Some(a)), ms(Some(b))));
            }
            _ => return format!("{name}: cannot judge ({what} not measured)"),
        }
    }
    format!("{name}: {} ({})", verdict(met), parts.join(", "))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: u32, rss_mib: u64, connect_p999_ms: u64, close_p999_ms: u64) -> Window {
        let at = |ms: u64| Summary {
            count: 1,
            p99: Some(Duration::from_millis(ms / 2)),
            p999: Some(Duration::from_millis(ms)),
            ..Summary::default()
        };
        Window {
            number,
            end_s: 60.0 * number as f64,
            rss: Some(rss_mib << 20),
            connects_per_sec: 1000.0,
            connect: at(connect_p999_ms),
            closes_per_sec: 1000.0,
            close: at(close_p999_ms),
            status_per_sec: 20_000.0,
            status: at(2),
            errors: 0,
            skipped: 0,
            cpu_busy: Some(1.0),
            slowest_connect: None,
            slowest_close: None,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// A minute's line ends with its slowest operations and when they were sent, in the form
    /// the server's log prints its own times; a minute without any says so.
    #[test]
    fn a_line_names_the_slowest_operations_and_when_they_were_sent() {
        let mut w = row(3, 100, 9, 12);
        assert!(
            w.line("minute", 1.0)
                .ends_with("| slowest connect -, close -"),
            "{}",
            w.line("minute", 1.0)
        );
        let sent = std::time::UNIX_EPOCH + Duration::from_millis(1_796_676_079_386);
        w.slowest_connect = Some(Slowest {
            took: Duration::from_millis(184),
            sent_at: sent,
        });
        w.slowest_close = Some(Slowest {
            took: Duration::from_micros(12_500),
            sent_at: sent + Duration::from_millis(2),
        });
        let line = w.line("minute", 1.0);
        assert!(
            line.ends_with(
                "| slowest connect 184 ms at 2026-12-07T20:41:19.386Z, close 12.50 ms at 2026-12-07T20:41:19.388Z"
            ),
            "{line}"
        );
    }

    #[test]
    fn rss_is_judged_from_the_fifth_minute_on() {
        let flat: Vec<Window> = (1..=8).map(|n| row(n, 100 + n as u64, 10, 10)).collect();
        let v = rss_verdict(&flat, MINUTE, "minute");
        assert!(v.contains(": met (after minute 5: 105.0 MiB"), "{v}");
        let mut growing = flat.clone();
        growing[6].rss = Some(120 << 20);
        let v = rss_verdict(&growing, MINUTE, "minute");
        assert!(v.contains(": missed"), "{v}");
        assert!(v.contains("highest after it 120.0 MiB, +14.3%"), "{v}");
        let short = rss_verdict(&flat[..5], MINUTE, "minute");
        assert!(short.contains("cannot judge"), "{short}");
    }

    #[test]
    fn every_window_s_p999_counts() {
        let mut rows: Vec<Window> = (1..=4).map(|n| row(n, 100, 12, 20)).collect();
        let v = p999_verdict(&rows, "minute");
        assert!(
            v.contains(": met (the worst: connect 12.00 ms, close 20.00 ms)"),
            "{v}"
        );
        rows[2].close.p999 = Some(Duration::from_millis(21));
        let v = p999_verdict(&rows, "minute");
        assert!(
            v.contains("missed in 1 of 4 (minutes 3 (connect 12.00 ms, close 21.00 ms))"),
            "{v}"
        );
    }

    #[test]
    fn the_last_window_against_the_second() {
        let rows: Vec<Window> = vec![row(1, 100, 30, 30), row(2, 100, 10, 10), row(3, 100, 10, 9)];
        let v = second_and_last_verdict(&rows, "minute");
        assert!(v.contains(": met (connect p99 5.000 ms -> 5.000 ms"), "{v}");
        let worse = vec![row(1, 100, 30, 30), row(2, 100, 10, 10), row(3, 100, 11, 9)];
        assert!(second_and_last_verdict(&worse, "minute").contains(": missed"));
        assert!(second_and_last_verdict(&rows[..2], "minute").contains("cannot judge"));
    }

    #[test]
    fn a_window_line_has_every_figure() {
        let line = row(3, 231, 12, 9).line("minute", 40_000.0);
        for part in [
            "minute   3 (  180 s): RSS 231.0 MiB",
            "| connect 1000/s p99 6.000 ms p999 12.00 ms",
            "| close 1000/s p99 4.000 ms p999 9.000 ms",
            "| onlinestatus 20000/s 0.50x p99 1.000 ms p999 2.000 ms",
            "| 0 errors / 0 skipped | CPUs 100%",
        ] {
            assert!(line.contains(part), "no {part:?} in {line}");
        }
    }
}
