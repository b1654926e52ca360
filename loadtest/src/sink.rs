//! The webhook sink (`--webhook-sink ADDR`): an application server's endpoint that takes every
//! `user.onlinestatus` batch the server sends and answers 200 after 1 ms, for the issue's
//! "keeping up" figures: how far the webhook falls behind during churn (`webhook_pending`,
//! sampled from `/stats`) and how long an entry takes from its event's append to its arrival.
//!
//! Owns the sink's server and its record of batches (seq range, entries, arrival time by the
//! machine's clock, the clock the server stamps `recorded_at` with). The delay of a batch is
//! taken from the `recorded_at` of the first seq it covers, read back through `/events`: an
//! upper bound for every entry in it, counted once per entry. Promises: every batch is
//! answered 200; figures are printed only from what this run received. Must never: answer
//! before the 1 ms has passed, or send load anywhere (it only listens, on loopback).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::http::HttpConn;
use crate::measure::{Latencies, Summary};
use crate::run::Probe;

/// How long the sink takes to answer a batch.
pub const ANSWER_AFTER: Duration = Duration::from_millis(1);

/// One batch as the sink took it.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub from: u64,
    pub to: u64,
    pub entries: usize,
    /// Milliseconds since the Unix epoch.
    pub arrived_ms: i64,
}

pub struct Sink {
    pub addr: SocketAddr,
    taken: Arc<Mutex<Vec<Taken>>>,
    task: JoinHandle<()>,
}

impl Sink {
    /// Listens on `addr` (loopback only).
    pub async fn start(addr: &str) -> anyhow::Result<Sink> {
        let addr = crate::target::loopback("--webhook-sink", addr).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --webhook-sink {addr}"))?;
        let taken = Arc::new(Mutex::new(Vec::new()));
        let keep = taken.clone();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let keep = keep.clone();
                async move { take(&keep, &headers, &body).await }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { addr, taken, task })
    }

    pub fn taken(&self) -> Vec<Taken> {
        self.taken.lock().clone()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Milliseconds since the Unix epoch, by the clock the server stamps its events with.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn take(taken: &Mutex<Vec<Taken>>, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let arrived_ms = now_ms();
    let seq = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let entries = serde_json::from_slice::<Vec<&str>>(body).map_or(0, |e| e.len());
    if let (Some(from), Some(to)) = (seq("x-wk-seq-from"), seq("x-wk-seq-to")) {
        taken.lock().push(Taken {
            from,
            to,
            entries,
            arrived_ms,
        });
    }
    tokio::time::sleep(ANSWER_AFTER).await;
    StatusCode::OK
}

/// The webhook's side of the server's run: the sink, the opening burst's backlog drained
/// first, then `webhook_pending` sampled while the churn runs.
pub struct Watch {
    sink: Sink,
    window_from: i64,
    backlog_drained_in: Option<Duration>,
    stop: tokio::sync::oneshot::Sender<()>,
    sampler: JoinHandle<Option<u64>>,
}

impl Watch {
    /// Waits for the backlog to drain (at most 120 s), then samples with `sampling`.
    pub async fn begin(sink: Sink, probe: &mut Probe, sampling: Probe) -> Watch {
        let since = Instant::now();
        let backlog_drained_in = wait_for_webhook(probe, Duration::from_secs(120))
            .await
            .map(|()| since.elapsed());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        Watch {
            sink,
            window_from: now_ms(),
            backlog_drained_in,
            stop,
            sampler: tokio::spawn(sample_pending(sampling, stopped)),
        }
    }

    /// Stops sampling, lets the last batches in (at most 60 s), and takes the figures of the
    /// window, reading the events' times through `events`.
    pub async fn end(self, probe: &mut Probe, mut events: HttpConn) -> anyhow::Result<WebhookRun> {
        let _ = self.stop.send(());
        let max_pending = self.sampler.await.ok().flatten();
        let _ = wait_for_webhook(probe, Duration::from_secs(60)).await;
        let (batches, entries, delay) =
            figures(&self.sink.taken(), self.window_from, now_ms(), &mut events).await?;
        self.sink.stop();
        Ok(WebhookRun {
            batches,
            entries,
            max_pending,
            delay,
            backlog_drained_in: self.backlog_drained_in,
        })
    }
}

/// Polls `/stats` until the webhook has nothing pending; `None` after `limit`.
async fn wait_for_webhook(probe: &mut Probe, limit: Duration) -> Option<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = probe.stats().await {
            if s.webhook_pending == Some(0) {
                return Some(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The most `webhook_pending` seen, every 100 ms, until `stop` fires.
async fn sample_pending(
    mut probe: Probe,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<u64> {
    let mut most = None;
    loop {
        if let Ok(s) = probe.stats().await {
            most = most.max(s.webhook_pending);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut stop => return most,
        }
    }
}

/// What the report says of the webhook.
#[derive(Debug, Default)]
pub struct WebhookRun {
    /// Batches and entries taken in the window, first copies only (a batch sent again after a
    /// failure is counted once).
    pub batches: usize,
    pub entries: usize,
    /// The most `webhook_pending` seen in the window (every 100 ms).
    pub max_pending: Option<u64>,
    /// Append to arrival, per entry (an upper bound: the batch's first event's append).
    pub delay: Summary,
    /// How long the backlog of the opening burst took to drain before the window.
    pub backlog_drained_in: Option<Duration>,
}

#[derive(Deserialize)]
struct EventsPage {
    events: Vec<EventTime>,
}

#[derive(Deserialize)]
struct EventTime {
    seq: u64,
    recorded_at: i64,
}

/// The figures of the batches that arrived between `from_ms` and `to_ms`: their delays from
/// the `recorded_at` of their first seq, read through `/events` on `api`.
pub async fn figures(
    taken: &[Taken],
    from_ms: i64,
    to_ms: i64,
    api: &mut HttpConn,
) -> anyhow::Result<(usize, usize, Summary)> {
    let mut window: Vec<Taken> = taken
        .iter()
        .filter(|t| (from_ms..=to_ms).contains(&t.arrived_ms))
        .copied()
        .collect();
    window.sort_by_key(|t| t.from);
    window.dedup_by_key(|t| (t.from, t.to));
    let Some(first) = window.first().map(|t| t.from) else {
        return Ok((0, 0, Summary::default()));
    };
    let last = window.iter().map(|t| t.from).max().unwrap_or(first);
    let mut recorded = std::collections::HashMap::new();
    let mut after = first - 1;
    while after < last {
        let (status, body) = api
            .get(&format!("/events?after={after}&limit=1000"))
            .await
            .context("GET /events")?;
        anyhow::ensure!(status == 200, "GET /events answered {status}");
        let page: EventsPage = serde_json::from_slice(body).context("GET /events's answer")?;
        let Some(end) = page.events.last().map(|e| e.seq) else {
            break;
        };
        recorded.extend(page.events.iter().map(|e| (e.seq, e.recorded_at)));
        after = end;
    }
    let mut delays = Latencies::default();
    for t in &window {
        if let Some(at) = recorded.get(&t.from) {
            let d = Duration::from_millis((t.arrived_ms - at).max(0) as u64);
            for _ in 0..t.entries {
                delays.record(d);
            }
        }
    }
    let entries = window.iter().map(|t| t.entries).sum();
    Ok((window.len(), entries, delays.summary()))
}

/// Prints the webhook's section of the report.
pub fn print(run: &WebhookRun) {
    let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
    println!();
    println!(
        "webhook (point 4, a sink answering after {} ms): {} entries in {} batches during the churn",
        ANSWER_AFTER.as_millis(),
        run.entries,
        run.batches
    );
    println!(
        "  opening burst's backlog drained in {}",
        run.backlog_drained_in
            .map_or("(not within 120 s)".into(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            ))
    );
    let pending = run.max_pending.map_or("-".into(), |p| p.to_string());
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "cannot judge",
    };
    println!(
        "  most webhook_pending seen: {pending:>8}   target < 2,000: {}",
        verdict(run.max_pending.map(|p| p < 2000))
    );
    println!(
        "  append to arrival, per entry (upper bound): p50 {}  p99 {}  max {}   target p99 <= 1 s: {}",
        ms(run.delay.p50),
        ms(run.delay.p99),
        ms(run.delay.max),
        verdict(run.delay.p99.map(|d| d <= Duration::from_secs(1)))
    );
}
