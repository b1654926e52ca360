//! The load generators, each bounded by a count and a deadline: open many sessions at once,
//! churn held sessions at a given rate, drive `/user/onlinestatus` from K clients, register
//! tokens, keep held sessions alive.
//!
//! Each generator is written once and pointed at either the real server or a ceiling, so a
//! figure and its ceiling come from the same client code. Promises: every request or connect
//! has a timeout; a generator returns by its deadline plus that timeout; failures are counted,
//! never retried in a loop. Must never: queue work without bound (the churn skips, and counts,
//! the operations it cannot start on time).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::http::HttpConn;
use crate::measure::{Errors, Latencies};
use crate::target::Spread;
use crate::ws::{self, Expect, Frames, Ws};

/// The longest a single connect, close or request may take before it counts as failed.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Held sessions, one slot per simulated user; a slot is empty while its session is being
/// churned, or after its reconnect failed.
pub type Slots = Arc<Vec<Mutex<Option<Ws>>>>;

pub struct OpenRun {
    pub slots: Slots,
    pub opened: u64,
    pub answered_in: Latencies,
    pub elapsed: Duration,
    pub errors: Errors,
}

/// Opens a session for every user of `frames`, `concurrency` at a time, until all are open or
/// `limit` has passed.
pub async fn open_all(
    addr: Spread,
    frames: Arc<Frames>,
    expect: Expect,
    concurrency: usize,
    limit: Duration,
) -> OpenRun {
    let n = frames.uids.len();
    let slots: Slots = Arc::new((0..n).map(|_| Mutex::new(None)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (slots, next, frames, addr) =
            (slots.clone(), next.clone(), frames.clone(), addr.clone());
        workers.spawn(async move {
            let mut answered_in = Latencies::default();
            let mut errors = Errors::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    break;
                }
                match timeout(
                    OP_TIMEOUT,
                    ws::open(addr.for_index(i), frames.connect(i), expect),
                )
                .await
                {
                    Ok(Ok(o)) => {
                        answered_in.record(o.answered_in);
                        *slots[i].lock() = Some(o.ws);
                    }
                    Ok(Err(e)) => errors.add(e),
                    Err(_) => errors.add("connect timed out"),
                }
            }
            (answered_in, errors)
        });
    }
    let mut run = OpenRun {
        slots,
        opened: 0,
        answered_in: Latencies::default(),
        elapsed: Duration::ZERO,
        errors: Errors::default(),
    };
    while let Some(done) = workers.join_next().await {
        let (l, e) = done.expect("an open worker panicked");
        run.answered_in.merge(l);
        run.errors.merge(e);
    }
    run.elapsed = start.elapsed();
    run.opened = run.answered_in.len() as u64;
    run
}

#[derive(Default)]
pub struct ChurnRun {
    pub connects: u64,
    pub disconnects: u64,
    /// From sending the connect frame to its answer.
    pub connect_in: Latencies,
    /// From sending the close frame to the server's close frame or end of connection.
    pub close_in: Latencies,
    /// Closes the server answered by ending the connection without a close frame.
    pub closes_without_frame: u64,
    pub errors: Errors,
    /// Operations due that could not start (too many in flight, or no held session free).
    pub skipped: u64,
    pub elapsed: Duration,
    /// The slowest connect and close, and when each was sent: a soak's stall is found in the
    /// server's own log by its wall-clock time.
    pub slowest_connect: Option<Slowest>,
    pub slowest_close: Option<Slowest>,
}

/// One operation's latency and the wall-clock time its frame was sent.
#[derive(Debug, Clone, Copy)]
pub struct Slowest {
    pub took: Duration,
    pub sent_at: SystemTime,
}

impl Slowest {
    /// Keeps in `slot` the slower of what it holds and this one.
    fn keep(slot: &mut Option<Slowest>, took: Duration, sent_at: SystemTime) {
        if slot.is_none_or(|s| took > s.took) {
            *slot = Some(Slowest { took, sent_at });
        }
    }
}

/// For `duration`, closes a held session and opens a new one for the same user `rate` times a
/// second, at most `max_in_flight` at once.
pub async fn churn(
    addr: Spread,
    slots: Slots,
    frames: Arc<Frames>,
    expect: Expect,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> ChurnRun {
    let mut only = ChurnRun::default();
    let shape = Churn {
        rate,
        window: duration,
        windows: 1,
        max_in_flight,
    };
    churn_in_windows(addr, slots, frames, expect, shape, |run| only = run).await;
    only
}

/// The shape of a churn: `rate` a second for `windows` windows of `window` each.
#[derive(Debug, Clone, Copy)]
pub struct Churn {
    pub rate: f64,
    pub window: Duration,
    pub windows: u32,
    pub max_in_flight: usize,
}

/// The churn of [`churn`], without a pause between windows: at the end of each window its
/// figures go to `each_window` (an operation counts in the window where it ends), and the
/// operations still in flight at the very end count in the last window.
pub async fn churn_in_windows(
    addr: Spread,
    slots: Slots,
    frames: Arc<Frames>,
    expect: Expect,
    shape: Churn,
    mut each_window: impl FnMut(ChurnRun),
) {
    let mut run = ChurnRun::default();
    if shape.windows == 0 {
        return;
    }
    if slots.is_empty() || shape.rate <= 0.0 {
        for _ in 0..shape.windows {
            each_window(ChurnRun::default());
        }
        return;
    }
    let duration = shape.window * shape.windows;
    let in_flight = Arc::new(Semaphore::new(shape.max_in_flight.max(1)));
    let mut ops: JoinSet<Op> = JoinSet::new();
    let start = Instant::now();
    let end = start + duration;
    let mut window_end = start + shape.window;
    let mut window_start = start;
    let mut issued = 0u64;
    let mut cursor = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < end {
        tick.tick().await;
        let due = (shape.rate * start.elapsed().min(duration).as_secs_f64()) as u64;
        while issued < due {
            issued += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                run.skipped += 1;
                continue;
            };
            let Some((i, held)) = take_next(&slots, &mut cursor) else {
                run.skipped += 1;
                continue;
            };
            let (slots, frames) = (slots.clone(), frames.clone());
            let addr = addr.for_index(i);
            ops.spawn(async move {
                let _permit = permit;
                let close_sent = SystemTime::now();
                let closed = match timeout(OP_TIMEOUT, ws::close(held)).await {
                    Ok(r) => r,
                    Err(_) => Err("close timed out".into()),
                };
                let connect_sent = SystemTime::now();
                let opened =
                    match timeout(OP_TIMEOUT, ws::open(addr, frames.connect(i), expect)).await {
                        Ok(Ok(o)) => {
                            *slots[i].lock() = Some(o.ws);
                            Ok(o.answered_in)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("connect timed out".into()),
                    };
                Op {
                    closed,
                    close_sent,
                    opened,
                    connect_sent,
                }
            });
        }
        while let Some(done) = ops.try_join_next() {
            run.count(done.expect("a churn task panicked"));
        }
        let now = Instant::now();
        if now >= window_end && now < end {
            run.elapsed = now - window_start;
            each_window(std::mem::take(&mut run));
            window_start = now;
            window_end += shape.window;
        }
    }
    run.elapsed = window_start.elapsed();
    // Let the operations already started finish (each is bounded by its timeouts).
    while let Some(done) = ops.join_next().await {
        run.count(done.expect("a churn task panicked"));
    }
    each_window(run);
}

struct Op {
    closed: Result<ws::Closed, String>,
    close_sent: SystemTime,
    opened: Result<Duration, String>,
    connect_sent: SystemTime,
}

impl ChurnRun {
    fn count(&mut self, op: Op) {
        match op.closed {
            Ok(c) => {
                self.disconnects += 1;
                self.close_in.record(c.took);
                Slowest::keep(&mut self.slowest_close, c.took, op.close_sent);
                if !c.close_frame {
                    self.closes_without_frame += 1;
                }
            }
            Err(e) => self.errors.add(e),
        }
        match op.opened {
            Ok(d) => {
                self.connects += 1;
                self.connect_in.record(d);
                Slowest::keep(&mut self.slowest_connect, d, op.connect_sent);
            }
            Err(e) => self.errors.add(e),
        }
    }
}

/// Takes the next held session after `cursor`, looking at a bounded number of slots.
fn take_next(slots: &Slots, cursor: &mut usize) -> Option<(usize, Ws)> {
    for _ in 0..slots.len().min(1024) {
        let i = *cursor % slots.len();
        *cursor = cursor.wrapping_add(1);
        if let Some(ws) = slots[i].lock().take() {
            return Some((i, ws));
        }
    }
    None
}

/// Sends the EasySDK's ping on every held session every `every` until aborted, one session
/// after another at an even pace: each client's timer runs from its own connect, so the pings
/// of many clients arrive spread over the interval, not all at once.
pub async fn keep_alive(slots: Slots, every: Duration) {
    let mut n = 0u64;
    let Some(count) = u32::try_from(slots.len()).ok().filter(|c| *c > 0) else {
        return;
    };
    // Ticks missed to the timer's millisecond grain fire at once (the default): the pace is
    // kept on average.
    let mut pace = tokio::time::interval_at(tokio::time::Instant::now() + every, every / count);
    loop {
        for slot in slots.iter() {
            pace.tick().await;
            let Some(mut held) = slot.lock().take() else {
                continue;
            };
            n += 1;
            let alive = matches!(
                timeout(Duration::from_secs(1), ws::ping(&mut held, n)).await,
                Ok(Ok(()))
            );
            if alive {
                *slot.lock() = Some(held);
            }
        }
    }
}

#[derive(Default)]
pub struct StatusRun {
    pub requests: u64,
    pub answered_in: Latencies,
    pub answer_bytes: u64,
    pub errors: Errors,
    pub elapsed: Duration,
}

impl StatusRun {
    /// Adds a run of the same load on the same target (a later slice).
    pub fn merge(&mut self, other: StatusRun) {
        self.requests += other.requests;
        self.answered_in.merge(other.answered_in);
        self.answer_bytes += other.answer_bytes;
        self.errors.merge(other.errors);
        self.elapsed += other.elapsed;
    }
}

/// For `duration`, `clients` connections each POST `bodies` (in turn) to
/// `/user/onlinestatus` as fast as they are answered.
pub async fn onlinestatus(
    addr: Spread,
    token: Option<String>,
    bodies: Arc<Vec<Vec<u8>>>,
    clients: usize,
    duration: Duration,
) -> StatusRun {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (bodies, token) = (bodies.clone(), token.clone());
        let addr = addr.for_index(c);
        tasks.spawn(async move {
            let mut conn = HttpConn::new(addr, token);
            let mut answered_in = Latencies::default();
            let mut errors = Errors::default();
            let mut bytes = 0u64;
            let mut i = c * 17;
            while Instant::now() < end {
                let body = &bodies[i % bodies.len()];
                i += 1;
                let t = Instant::now();
                match timeout(OP_TIMEOUT, conn.post("/user/onlinestatus", body)).await {
                    Ok(Ok((200, answer))) => {
                        answered_in.record(t.elapsed());
                        bytes += answer.len() as u64;
                    }
                    Ok(Ok((status, answer))) => {
                        errors.add(format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(answer)
                        ));
                    }
                    Ok(Err(e)) => {
                        errors.add(format!("onlinestatus: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => errors.add("onlinestatus timed out"),
                }
            }
            (answered_in, errors, bytes)
        });
    }
    let mut run = StatusRun::default();
    while let Some(done) = tasks.join_next().await {
        let (l, e, b) = done.expect("a status client panicked");
        run.answered_in.merge(l);
        run.errors.merge(e);
        run.answer_bytes += b;
    }
    run.elapsed = start.elapsed().max(duration);
    run.requests = run.answered_in.len() as u64;
    run
}

pub struct RegisterRun {
    pub registered: u64,
    pub elapsed: Duration,
    pub errors: Errors,
}

/// Sets the token of every user of `frames` for its device flag (level 0, so that a reconnect
/// does not kick anybody), `concurrency` requests at a time, until done or `limit` has passed.
pub async fn register(
    addr: Spread,
    token: Option<String>,
    frames: Arc<Frames>,
    concurrency: usize,
    limit: Duration,
) -> RegisterRun {
    let n = frames.uids.len();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut workers = JoinSet::new();
    for w in 0..concurrency.clamp(1, n.max(1)) {
        let (next, frames, token) = (next.clone(), frames.clone(), token.clone());
        let addr = addr.for_index(w);
        workers.spawn(async move {
            let mut conn = HttpConn::new(addr, token);
            let mut ok = 0u64;
            let mut errors = Errors::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    break;
                }
                let body = serde_json::json!({
                    "uid": frames.uids[i],
                    "token": frames.tokens[i],
                    "device_flag": frames.device_flag,
                    "device_level": 0,
                })
                .to_string();
                match timeout(OP_TIMEOUT, conn.post("/user/token", body.as_bytes())).await {
                    Ok(Ok((200, _))) => ok += 1,
                    Ok(Ok((status, answer))) => errors.add(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(answer)
                    )),
                    Ok(Err(e)) => errors.add(format!("/user/token: {e}")),
                    Err(_) => errors.add("/user/token timed out"),
                }
            }
            (ok, errors)
        });
    }
    let mut run = RegisterRun {
        registered: 0,
        elapsed: Duration::ZERO,
        errors: Errors::default(),
    };
    while let Some(done) = workers.join_next().await {
        let (ok, e) = done.expect("a register worker panicked");
        run.registered += ok;
        run.errors.merge(e);
    }
    run.elapsed = start.elapsed();
    run
}
