//! One measurement of a target, taken the same way whether the target is the server or the
//! bare stack: open a session per user at full speed, then `/user/onlinestatus` from K clients
//! alone, then the same while held sessions churn at the given rate.
//!
//! Because both targets go through [`open`] and [`drive`], each figure of the server has a
//! ceiling taken under the same load shape by the same client code. Promises: every phase is
//! bounded (by `--phase-limit` for opening, by `--measure-time` and `--duration` for the rest).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::cpu::CpuTimes;
use super::drive::{self, OpenRun, Slots};
use super::measure::{rate, Errors, Latencies, Summary};
use super::ws::{Expect, Frames};
use super::{Clock, LoadtestArgs};

/// A count, its rate, the latency of each, and how busy the machine's CPUs were meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rated {
    pub count: u64,
    pub per_sec: f64,
    pub latency: Summary,
    pub cpu_busy: Option<f64>,
}

impl Rated {
    fn of(count: u64, elapsed: Duration, latency: &Latencies) -> Rated {
        Rated {
            count,
            per_sec: rate(count, elapsed),
            latency: latency.summary(),
            cpu_busy: None,
        }
    }

    /// The better of two measurements of the same thing: the higher rate, the lower latencies.
    pub fn best(&self, other: &Rated) -> Rated {
        Rated {
            count: self.count.max(other.count),
            per_sec: self.per_sec.max(other.per_sec),
            latency: self.latency.best(&other.latency),
            cpu_busy: if self.per_sec >= other.per_sec {
                self.cpu_busy
            } else {
                other.cpu_busy
            },
        }
    }
}

/// What one target did.
#[derive(Debug, Default)]
pub struct Figures {
    /// Sessions asked for.
    pub sessions: usize,
    /// Opening every session at once: connects/s, connect frame -> answer.
    pub open: Rated,
    /// onlinestatus alone.
    pub status_alone: Rated,
    /// onlinestatus while sessions churn.
    pub status_churn: Rated,
    /// Churn reconnects: connects/s, connect frame -> answer.
    pub connects: Rated,
    /// Churn closes: closes/s, close frame -> the server's close.
    pub closes: Rated,
    pub closes_without_frame: u64,
    /// Churn operations that could not start on time.
    pub skipped: u64,
    /// Average onlinestatus answer, in bytes.
    pub answer_bytes: f64,
    pub errors: Vec<(&'static str, Errors)>,
}

impl Figures {
    /// The better of two measurements, figure by figure (for the ceilings, measured twice).
    pub fn best(&self, other: &Figures) -> Figures {
        Figures {
            sessions: self.sessions.max(other.sessions),
            open: self.open.best(&other.open),
            status_alone: self.status_alone.best(&other.status_alone),
            status_churn: self.status_churn.best(&other.status_churn),
            connects: self.connects.best(&other.connects),
            closes: self.closes.best(&other.closes),
            closes_without_frame: self.closes_without_frame + other.closes_without_frame,
            skipped: self.skipped + other.skipped,
            answer_bytes: self.answer_bytes.max(other.answer_bytes),
            errors: Vec::new(),
        }
    }
}

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    pub token: Option<String>,
    pub expect: Expect,
}

/// The load's shape, the same for every target.
pub struct Load<'a> {
    pub args: &'a LoadtestArgs,
    pub bodies: Arc<Vec<Vec<u8>>>,
    pub churn_in_flight: usize,
}

/// Opens a session for every user of `frames` on `target`, `--concurrency` at a time.
pub async fn open(clock: &Clock, target: &Target, load: &Load<'_>, frames: Arc<Frames>) -> OpenRun {
    let n = frames.uids.len();
    clock.say(&format!(
        "{}: opening {n} sessions, {} at a time ...",
        target.name, load.args.concurrency
    ));
    let run = drive::open_all(
        target.ws,
        frames,
        target.expect,
        load.args.concurrency,
        load.args.phase_limit,
    )
    .await;
    clock.say(&format!(
        "{}:   opened {} in {:.2} s ({:.0}/s), connect {}, {} errors",
        target.name,
        run.opened,
        run.elapsed.as_secs_f64(),
        rate(run.opened, run.elapsed),
        run.answered_in.summary(),
        run.errors.total()
    ));
    print!("{}", run.errors.top(5));
    run
}

/// onlinestatus alone for `--measure-time`, then with churn for `churn_for`; the sessions of
/// `opened` stay held (those whose reconnect failed are gone).
pub async fn drive(
    clock: &Clock,
    target: &Target,
    load: &Load<'_>,
    frames: Arc<Frames>,
    opened: OpenRun,
    churn_for: Duration,
) -> (Figures, Slots) {
    let a = load.args;
    let cpu_before = CpuTimes::now();
    let alone = drive::onlinestatus(
        target.http,
        target.token.clone(),
        load.bodies.clone(),
        a.status_clients,
        a.measure_time,
    )
    .await;
    let mut alone_rated = Rated::of(alone.requests, alone.elapsed, &alone.answered_in);
    alone_rated.cpu_busy = cpu_before
        .zip(CpuTimes::now())
        .and_then(|(before, after)| before.busy_until(&after));
    clock.say(&format!(
        "{}:   onlinestatus alone, {} clients, {:.1} s: {:.0}/s, {}, CPUs {} busy",
        target.name,
        a.status_clients,
        a.measure_time.as_secs_f64(),
        alone_rated.per_sec,
        alone_rated.latency,
        alone_rated
            .cpu_busy
            .map_or("?".into(), |b| format!("{:.0}%", b * 100.0))
    ));
    let keep_alive = tokio::spawn(drive::keep_alive(opened.slots.clone(), super::PING_EVERY));
    let (churn, busy) = tokio::join!(
        drive::churn(
            target.ws,
            opened.slots.clone(),
            frames,
            target.expect,
            a.churn_rate,
            churn_for,
            load.churn_in_flight,
        ),
        drive::onlinestatus(
            target.http,
            target.token.clone(),
            load.bodies.clone(),
            a.status_clients,
            churn_for,
        )
    );
    keep_alive.abort();
    let figures = Figures {
        sessions: opened.slots.len(),
        open: Rated::of(opened.opened, opened.elapsed, &opened.answered_in),
        status_alone: alone_rated,
        status_churn: Rated::of(busy.requests, busy.elapsed, &busy.answered_in),
        connects: Rated::of(churn.connects, churn.elapsed, &churn.connect_in),
        closes: Rated::of(churn.disconnects, churn.elapsed, &churn.close_in),
        closes_without_frame: churn.closes_without_frame,
        skipped: churn.skipped,
        answer_bytes: (alone.answer_bytes + busy.answer_bytes) as f64
            / (alone.requests + busy.requests).max(1) as f64,
        errors: vec![
            ("open", opened.errors),
            ("onlinestatus alone", alone.errors),
            ("churn", churn.errors),
            ("onlinestatus with churn", busy.errors),
        ],
    };
    clock.say(&format!(
        "{}:   with churn at {}/s for {:.1} s: onlinestatus {:.0}/s, {}; reconnects {:.0}/s, connect {}; closes {:.0}/s, close {}",
        target.name,
        a.churn_rate,
        churn_for.as_secs_f64(),
        figures.status_churn.per_sec,
        figures.status_churn.latency,
        figures.connects.per_sec,
        figures.connects.latency,
        figures.closes.per_sec,
        figures.closes.latency
    ));
    (figures, opened.slots)
}

/// Drops every held session; returns how many there were.
pub fn release(slots: &Slots) -> usize {
    slots.iter().filter(|s| s.lock().take().is_some()).count()
}
