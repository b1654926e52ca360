//! `--known-users N`: gives N users a token on the run's device flag through `/user/token`
//! before anything else runs, fast enough that a million take minutes: many keep-alive
//! connections at once (every answer waits for its event to be durable; the server's group
//! commit makes one flush of many connections' events), each optionally sending its requests
//! pipelined. Pipelining is off by default: against a server whose API sockets lack
//! TCP_NODELAY (builds before it was set), each pipelined batch waits about 40 ms for the
//! client's delayed ACK (figures in docs/performance.md).
//!
//! User `i` is [`Naming::uid`]`(i)` with the token [`known_token`]`(i)`, the same in every
//! run. A rerun on the same data skips the users already there: the users are sent in index
//! order with at most [`MAX_IN_FLIGHT`] requests unanswered, so a run stopped midway leaves
//! its holes within that many users of the last one it wrote. The seeder finds that last user
//! by a binary search over `GET /events?uid=U&limit=1` (a user with an event is there), asks
//! the same of each of the [`MAX_IN_FLIGHT`] users below it, and sends only the missing ones
//! and those after. Promises: bounded by `--seed-limit`; progress every [`PROGRESS_EVERY`];
//! failures counted by kind. Must never: retry a failed request in a loop (a rerun fills the
//! holes).
//!
//! `--seed-sessions M` then opens and closes M sessions of the known users ([`sessions`]), two
//! events each, for a log of millions of events without a long churn.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::drive::OP_TIMEOUT;
use crate::http::HttpConn;
use crate::measure::{rate, Errors};
use crate::run::{Clock, LoadtestArgs, Probe, ServerStats};
use crate::scale;
use crate::target::Spread;
use crate::users::{known_token, Naming, Users};
use crate::ws::Expect;

/// The most requests the seeder has unanswered at once (connections x pipeline depth), and so
/// how far below the last user found a rerun looks for holes.
pub const MAX_IN_FLIGHT: usize = 16_384;
/// How often a progress line is printed while seeding.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The longest one pipelined batch may take before it counts as failed.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How the seeding goes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub api: Spread,
    pub token: Option<String>,
    pub naming: Naming,
    pub known_users: usize,
    pub device_flag: u8,
    pub connections: usize,
    pub pipeline: usize,
    pub limit: Duration,
}

/// What the seeding did.
#[derive(Debug, Default)]
pub struct SeedRun {
    /// Users found already there (not sent).
    pub already: usize,
    /// Users answered 200.
    pub seeded: u64,
    /// How long finding the users already there took.
    pub looked_for: Duration,
    pub elapsed: Duration,
    pub errors: Errors,
}

/// Checks the shape of a seeding before anything is sent.
pub fn check(connections: usize, pipeline: usize) -> anyhow::Result<()> {
    if connections == 0 || pipeline == 0 {
        bail!("--seed-connections and --seed-pipeline must be at least 1");
    }
    if connections.saturating_mul(pipeline) > MAX_IN_FLIGHT {
        bail!(
            "--seed-connections x --seed-pipeline must be at most {MAX_IN_FLIGHT} (a rerun \
             looks that far back for holes)"
        );
    }
    Ok(())
}

/// Seeds the plan's users, skipping those already there.
pub async fn seed(clock: &Clock, plan: &Plan) -> anyhow::Result<SeedRun> {
    let n = plan.known_users;
    let found_at = Instant::now();
    let mut probe = HttpConn::new(plan.api.all()[0], plan.token.clone());
    let boundary = last_present(&mut probe, &plan.naming, n).await?;
    let window_start = boundary.saturating_sub(MAX_IN_FLIGHT);
    let present = present_among(plan, window_start..boundary).await?;
    let mut todo: Vec<usize> = (window_start..boundary)
        .zip(&present)
        .filter(|&(_, &there)| !there)
        .map(|(i, _)| i)
        .collect();
    todo.extend(boundary..n);
    let mut run = SeedRun {
        already: n - todo.len(),
        looked_for: found_at.elapsed(),
        ..SeedRun::default()
    };
    clock.say(&format!(
        "known users: {} of {n} already there (found in {:.2} s); seeding {}, {} connections x {} pipelined ...",
        run.already,
        run.looked_for.as_secs_f64(),
        todo.len(),
        plan.connections,
        plan.pipeline
    ));
    if todo.is_empty() {
        return Ok(run);
    }
    let todo = Arc::new(todo);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + plan.limit;
    let mut workers = JoinSet::new();
    let connections = plan.connections.min(todo.len().div_ceil(plan.pipeline));
    for w in 0..connections {
        let (todo, next, done, plan) = (todo.clone(), next.clone(), done.clone(), plan.clone());
        workers.spawn(async move {
            let mut conn = HttpConn::new(plan.api.for_index(w), plan.token.clone());
            let mut errors = Errors::default();
            loop {
                let from = next.fetch_add(plan.pipeline, Ordering::Relaxed);
                if from >= todo.len() || Instant::now() >= deadline {
                    break;
                }
                let batch = &todo[from..(from + plan.pipeline).min(todo.len())];
                let bodies: Vec<Vec<u8>> = batch
                    .iter()
                    .map(|&i| {
                        serde_json::json!({
                            "uid": plan.naming.uid(i),
                            "token": known_token(i),
                            "device_flag": plan.device_flag,
                            "device_level": 0,
                        })
                        .to_string()
                        .into_bytes()
                    })
                    .collect();
                let requests: Vec<(&str, &str, &[u8])> = bodies
                    .iter()
                    .map(|b| ("POST", "/user/token", b.as_slice()))
                    .collect();
                match timeout(BATCH_TIMEOUT, conn.pipeline(&requests)).await {
                    Ok(Ok(answers)) => {
                        for (status, body) in answers {
                            if status == 200 {
                                done.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors.add(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&body)
                                ));
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        for _ in batch {
                            errors.add(format!("/user/token: {e}"));
                        }
                    }
                    Err(_) => {
                        for _ in batch {
                            errors.add("/user/token timed out");
                        }
                    }
                }
            }
            errors
        });
    }
    let progress = tokio::spawn(progress(*clock, "known users", done.clone(), todo.len()));
    while let Some(errors) = workers.join_next().await {
        run.errors
            .merge(errors.context("a seeding worker panicked")?);
    }
    progress.abort();
    run.elapsed = start.elapsed();
    run.seeded = done.load(Ordering::Relaxed);
    clock.say(&format!(
        "known users:   seeded {} in {:.2} s ({:.0}/s), {} errors",
        run.seeded,
        run.elapsed.as_secs_f64(),
        rate(run.seeded, run.elapsed),
        run.errors.total()
    ));
    print!("{}", run.errors.top(5));
    Ok(run)
}

/// Seeds `--known-users` and prints the server's memory (and disk) with them; returns the
/// server's `/stats` afterwards.
pub async fn known_users(
    clock: &Clock,
    args: &LoadtestArgs,
    api: &Spread,
    token: &Option<String>,
    users: &Users,
    before: ServerStats,
) -> anyhow::Result<ServerStats> {
    let plan = Plan {
        api: api.clone(),
        token: token.clone(),
        naming: users.naming.clone(),
        known_users: args.known_users,
        device_flag: args.device_flag,
        connections: args.seed_connections,
        pipeline: args.seed_pipeline,
        limit: args.seed_limit,
    };
    let run = seed(clock, &plan).await?;
    if args.seed_sessions > 0 {
        let last_seq = Probe::new(api, token).stats().await?.last_seq;
        let ws = Spread::parse("--ws", &args.ws).await?;
        // The users the run gives tokens of its own come first (crate::users).
        let first = users.online.len() + users.offline.len();
        sessions(clock, &plan, &ws, args.seed_sessions, first, last_seq).await;
    }
    // Memory settles for a moment after the last write (buffers returned, caches flushed).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut probe = Probe::new(api, token);
    let after = probe.stats().await?;
    clock.say(&scale::memory_line(
        "known users: 1 s after seeding",
        &after,
        Some(&before),
    ));
    clock.say(&scale::disk_line(args.data_dir.as_deref(), &after));
    if run.seeded as usize + run.already < args.known_users {
        bail!(
            "only {} of --known-users {} are there ({} errors): see the errors above; a rerun \
             sends the missing ones",
            run.seeded as usize + run.already,
            args.known_users,
            run.errors.total()
        );
    }
    Ok(after)
}

/// What the seeding of sessions did.
#[derive(Debug, Default)]
pub struct SessionsRun {
    pub done: u64,
    pub elapsed: Duration,
    pub errors: Errors,
}

/// `--seed-sessions M`: M sessions of known users, each opened and closed at once, over the
/// seeding connections: two events each (its `Connected` and its `Disconnected`), for a log of
/// the size issue 21 starts up on in minutes. Session `i` is user `first + i mod (N - first)`
/// with its seeded token: the users from `first` on are those the run does not give a token of
/// its own. Skipped when the log already holds `N + 2M` events (a rerun on the same data).
pub async fn sessions(
    clock: &Clock,
    plan: &Plan,
    ws: &Spread,
    count: usize,
    first: usize,
    last_seq: u64,
) -> SessionsRun {
    let mut run = SessionsRun::default();
    let wanted = (plan.known_users + 2 * count) as u64;
    if last_seq >= wanted {
        clock.say(&format!(
            "sessions: the log already holds {last_seq} events, at least the {wanted} of the known users and {count} sessions: none opened"
        ));
        return run;
    }
    let first = if first < plan.known_users { first } else { 0 };
    let spread = plan.known_users - first;
    clock.say(&format!(
        "sessions: opening and closing {count} sessions of users {first} to {}, {} at a time ...",
        plan.known_users - 1,
        plan.connections
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + plan.limit;
    let mut workers = JoinSet::new();
    for _ in 0..plan.connections.min(count) {
        let (next, done, plan, ws) = (next.clone(), done.clone(), plan.clone(), ws.clone());
        workers.spawn(async move {
            let mut errors = Errors::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                let user = first + i % spread;
                let frame = crate::ws::connect_frame(
                    &plan.naming.uid(user),
                    &known_token(user),
                    plan.device_flag,
                    i as u64,
                );
                let open = crate::ws::open(ws.for_index(i), frame, Expect::ConnectOk);
                let session = match timeout(OP_TIMEOUT, open).await {
                    Ok(Ok(o)) => o.ws,
                    Ok(Err(e)) => {
                        errors.add(e);
                        continue;
                    }
                    Err(_) => {
                        errors.add("connect timed out");
                        continue;
                    }
                };
                match timeout(OP_TIMEOUT, crate::ws::close(session)).await {
                    Ok(Ok(_)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => errors.add(e),
                    Err(_) => errors.add("close timed out"),
                }
            }
            errors
        });
    }
    let progress = tokio::spawn(progress(*clock, "sessions", done.clone(), count));
    while let Some(errors) = workers.join_next().await {
        match errors {
            Ok(e) => run.errors.merge(e),
            Err(_) => run.errors.add("a session worker panicked"),
        }
    }
    progress.abort();
    run.elapsed = start.elapsed();
    run.done = done.load(Ordering::Relaxed);
    clock.say(&format!(
        "sessions:   opened and closed {} in {:.2} s ({:.0}/s), {} errors",
        run.done,
        run.elapsed.as_secs_f64(),
        rate(run.done, run.elapsed),
        run.errors.total()
    ));
    print!("{}", run.errors.top(5));
    run
}

/// Prints how far `done` has got out of `total` every [`PROGRESS_EVERY`], until aborted.
async fn progress(clock: Clock, what: &'static str, done: Arc<AtomicU64>, total: usize) {
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let (now, n) = (Instant::now(), done.load(Ordering::Relaxed));
        clock.say(&format!(
            "{what}:   {n} of {total} done, {:.0}/s over the last {:.0} s",
            rate(n - last.1, now - last.0),
            (now - last.0).as_secs_f64()
        ));
        last = (now, n);
    }
}

/// The answer of `GET /events`, as far as the seeder reads it.
#[derive(Deserialize)]
struct EventsPage {
    events: Vec<IgnoredAny>,
}

/// The number of users at the front of `0..n` that a binary search finds there: user `b - 1`
/// is there and user `b` is not (0 when user 0 is not, `n` when user `n - 1` is).
async fn last_present(conn: &mut HttpConn, naming: &Naming, n: usize) -> anyhow::Result<usize> {
    // Invariant: every probed index below `lo` was there, `hi` and above were not.
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if is_there(conn, naming, mid).await? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Whether each user of `range` has an event in the log, asked over the plan's connections,
/// one request at a time on each (pipelined reads wait on the server's Nagle like the writes).
async fn present_among(plan: &Plan, range: std::ops::Range<usize>) -> anyhow::Result<Vec<bool>> {
    let first = range.start;
    let found: Arc<Vec<std::sync::atomic::AtomicBool>> =
        Arc::new(range.clone().map(|_| Default::default()).collect());
    let next = Arc::new(AtomicUsize::new(first));
    let mut workers = JoinSet::new();
    for w in 0..plan.connections.min(range.len()) {
        let (plan, next, found, end) = (plan.clone(), next.clone(), found.clone(), range.end);
        workers.spawn(async move {
            let mut conn = HttpConn::new(plan.api.for_index(w), plan.token.clone());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return anyhow::Ok(());
                }
                if is_there(&mut conn, &plan.naming, i).await? {
                    found[i - first].store(true, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a worker looking for known users panicked")??;
    }
    Ok(found.iter().map(|f| f.load(Ordering::Relaxed)).collect())
}

/// Whether user `i` has an event in the log.
async fn is_there(conn: &mut HttpConn, naming: &Naming, i: usize) -> anyhow::Result<bool> {
    let path = format!("/events?uid={}&limit=1", query_escape(&naming.uid(i)));
    let (status, body) = timeout(BATCH_TIMEOUT, conn.get(&path))
        .await
        .context("GET /events timed out")?
        .context("GET /events")?;
    if status != 200 {
        bail!(
            "GET /events answered {status}: {}",
            String::from_utf8_lossy(body)
        );
    }
    let page: EventsPage = serde_json::from_slice(body)
        .context("GET /events answered something else than a page of events")?;
    Ok(!page.events.is_empty())
}

/// `s` as a query-string value: every byte but the unreserved ones percent-encoded (a uid may
/// hold `+`, `%`, `=` or `?`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_goes_into_the_query_escaped() {
        assert_eq!(query_escape("load_000042"), "load_000042");
        assert_eq!(query_escape("a+b=c?d%"), "a%2Bb%3Dc%3Fd%25");
        assert_eq!(query_escape("é"), "%C3%A9");
    }

    #[test]
    fn the_seeding_shape_is_checked() {
        assert!(check(256, 8).is_ok());
        assert!(check(0, 8).is_err());
        assert!(check(8, 0).is_err());
        assert!(check(MAX_IN_FLIGHT, 2).is_err());
    }
}
