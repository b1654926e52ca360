//! One measurement of a target, taken the same way whether the target is the server or the
//! bare stack: open a session per user at full speed, then `/user/onlinestatus` from K clients
//! alone, then the same while held sessions churn at the given rate.
//!
//! Because both targets go through [`open`] and [`drive`], each figure of the server has a
//! ceiling taken under the same load shape by the same client code. The server's
//! "onlinestatus alone" is also taken in slices that alternate with a ceiling server's, in
//! the order server, ceiling, ceiling, server, server, ... ([`PAIRS`] of each): the machine's
//! speed drifts by tens of percent within a run, and in alternating slices a drift weighs on
//! both sides alike (a steady drift cancels out), where two runs of the ceiling a minute
//! before and after the server only bracket it. Promises: every phase is bounded (by
//! `--phase-limit` for opening, by `--measure-time` and `--duration` for the rest).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::across::{self, AcrossRun};
use crate::cpu::CpuTimes;
use crate::drive::{self, OpenRun, Slots, StatusRun};
use crate::measure::{rate, Errors, Latencies, Summary};
use crate::run::{Clock, LoadtestArgs};
use crate::target::Spread;
use crate::ws::{Expect, Frames};

/// A count, its rate, the latency of each, and how busy the machine's CPUs were meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rated {
    pub count: u64,
    pub per_sec: f64,
    pub latency: Summary,
    pub cpu_busy: Option<f64>,
}

/// Slices of "onlinestatus alone" taken of the server and of the ceiling beside it, each.
pub const PAIRS: u32 = 4;

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
    /// onlinestatus alone of a ceiling server, in slices alternating with this target's (when
    /// [`drive`] was given one).
    pub status_alone_beside: Option<Rated>,
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
    /// The probes across nodes, run during the churn (a target of several nodes only).
    pub across: Option<AcrossRun>,
}

impl Figures {
    /// The better of two measurements, figure by figure (for the ceilings, measured twice).
    pub fn best(&self, other: &Figures) -> Figures {
        Figures {
            sessions: self.sessions.max(other.sessions),
            open: self.open.best(&other.open),
            status_alone: self.status_alone.best(&other.status_alone),
            status_alone_beside: None,
            status_churn: self.status_churn.best(&other.status_churn),
            connects: self.connects.best(&other.connects),
            closes: self.closes.best(&other.closes),
            closes_without_frame: self.closes_without_frame + other.closes_without_frame,
            skipped: self.skipped + other.skipped,
            answer_bytes: self.answer_bytes.max(other.answer_bytes),
            errors: Vec::new(),
            across: None,
        }
    }
}

/// Where the load goes.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub ws: Spread,
    pub http: Spread,
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
        target.ws.clone(),
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

/// onlinestatus alone for `--measure-time` (in slices alternating with the ceiling at
/// `beside`, when given), then with churn for `churn_for`, and the `probes` across nodes (when
/// given) meanwhile; the sessions of `opened` stay held (those whose reconnect failed are
/// gone).
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    clock: &Clock,
    target: &Target,
    load: &Load<'_>,
    frames: Arc<Frames>,
    opened: OpenRun,
    churn_for: Duration,
    beside: Option<SocketAddr>,
    probes: Option<&across::Plan>,
) -> (Figures, Slots) {
    let a = load.args;
    let (alone, alone_rated, beside_run, beside_rated) = match beside {
        None => {
            let (run, busy) = status_alone(
                target.http.clone(),
                target.token.clone(),
                load,
                a.measure_time,
            )
            .await;
            let mut rated = Rated::of(run.requests, run.elapsed, &run.answered_in);
            rated.cpu_busy = busy;
            (run, rated, None, None)
        }
        Some(ceiling) => {
            let (run, rated, beside, beside_rated) =
                status_alone_in_pairs(target, ceiling, load).await;
            (run, rated, Some(beside), Some(beside_rated))
        }
    };
    let busy = |r: &Rated| {
        r.cpu_busy
            .map_or("?".into(), |b| format!("{:.0}%", b * 100.0))
    };
    clock.say(&format!(
        "{}:   onlinestatus alone, {} clients, {:.1} s: {:.0}/s, {}, CPUs {} busy",
        target.name,
        a.status_clients,
        a.measure_time.as_secs_f64(),
        alone_rated.per_sec,
        alone_rated.latency,
        busy(&alone_rated)
    ));
    if let Some(c) = &beside_rated {
        clock.say(&format!(
            "{}:   the ceiling in the slices between: {:.0}/s, {}, CPUs {} busy; ratio {:.2}x",
            target.name,
            c.per_sec,
            c.latency,
            busy(c),
            alone_rated.per_sec / c.per_sec
        ));
    }
    let keep_alive = tokio::spawn(drive::keep_alive(
        opened.slots.clone(),
        crate::run::PING_EVERY,
    ));
    let probing = async {
        match probes {
            Some(plan) => Some(across::probe(plan, churn_for).await),
            None => None,
        }
    };
    let (churn, busy, across) = tokio::join!(
        drive::churn(
            target.ws.clone(),
            opened.slots.clone(),
            frames,
            target.expect,
            a.churn_rate,
            churn_for,
            load.churn_in_flight,
        ),
        drive::onlinestatus(
            target.http.clone(),
            target.token.clone(),
            load.bodies.clone(),
            a.status_clients,
            churn_for,
        ),
        probing
    );
    keep_alive.abort();
    let figures = Figures {
        sessions: opened.slots.len(),
        open: Rated::of(opened.opened, opened.elapsed, &opened.answered_in),
        status_alone: alone_rated,
        status_alone_beside: beside_rated,
        status_churn: Rated::of(busy.requests, busy.elapsed, &busy.answered_in),
        connects: Rated::of(churn.connects, churn.elapsed, &churn.connect_in),
        closes: Rated::of(churn.disconnects, churn.elapsed, &churn.close_in),
        closes_without_frame: churn.closes_without_frame,
        skipped: churn.skipped,
        answer_bytes: (alone.answer_bytes + busy.answer_bytes) as f64
            / (alone.requests + busy.requests).max(1) as f64,
        across,
        errors: vec![
            ("open", opened.errors),
            ("onlinestatus alone", alone.errors),
            (
                "onlinestatus alone, the ceiling between",
                beside_run.map(|run| run.errors).unwrap_or_default(),
            ),
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

/// One run of onlinestatus alone against `http`, with how busy the CPUs were meanwhile.
async fn status_alone(
    http: Spread,
    token: Option<String>,
    load: &Load<'_>,
    duration: Duration,
) -> (StatusRun, Option<f64>) {
    let a = load.args;
    let before = CpuTimes::now();
    let run =
        drive::onlinestatus(http, token, load.bodies.clone(), a.status_clients, duration).await;
    let busy = before
        .zip(CpuTimes::now())
        .and_then(|(before, after)| before.busy_until(&after));
    (run, busy)
}

/// onlinestatus alone in [`PAIRS`] slices of the target and as many of the ceiling at
/// `ceiling`, alternating (target, ceiling, ceiling, target, ...), `--measure-time` in all
/// for each: the target's run and figure, then the ceiling's run and figure.
async fn status_alone_in_pairs(
    target: &Target,
    ceiling: SocketAddr,
    load: &Load<'_>,
) -> (StatusRun, Rated, StatusRun, Rated) {
    let slice = load.args.measure_time / PAIRS;
    // The ceiling process was just started: warmed up first, unmeasured, as the target was by
    // the phases before (its errors still count).
    let ceiling = Spread::one(ceiling);
    let (warm_up, _) = status_alone(ceiling.clone(), None, load, slice / 4).await;
    let mut runs = [StatusRun::default(), StatusRun::default()];
    let mut busy = [(0.0, Duration::ZERO); 2];
    for pair in 0..PAIRS {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (http, token) = match side {
                0 => (target.http.clone(), target.token.clone()),
                _ => (ceiling.clone(), None),
            };
            let (run, share) = status_alone(http, token, load, slice).await;
            if let Some(share) = share {
                busy[side].0 += share * run.elapsed.as_secs_f64();
                busy[side].1 += run.elapsed;
            }
            runs[side].merge(run);
        }
    }
    let [run, mut beside] = runs;
    let rate = |run: &StatusRun, (busy, over): (f64, Duration)| Rated {
        cpu_busy: (!over.is_zero()).then(|| busy / over.as_secs_f64()),
        ..Rated::of(run.requests, run.elapsed, &run.answered_in)
    };
    let (target_rated, beside_rated) = (rate(&run, busy[0]), rate(&beside, busy[1]));
    beside.errors.merge(warm_up.errors);
    (run, target_rated, beside, beside_rated)
}

/// Drops every held session; returns how many there were.
pub fn release(slots: &Slots) -> usize {
    slots.iter().filter(|s| s.lock().take().is_some()).count()
}
