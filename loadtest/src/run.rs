//! One run of the load tool: measures a running server over loopback, and the ceilings of the
//! stack it is built on, in one run on one machine, and prints each figure as a ratio to its
//! ceiling.
//!
//! The phases, each bounded by a count and a deadline:
//! 0. with `--known-users`, the known users ([`crate::seed`]) and the server's memory per known
//!    user ([`crate::scale`]); `--seed-only` stops there, and `--soak` goes on to the soak
//!    ([`crate::soak`]) instead of the phases below;
//! 1. the ceilings ([`crate::ceiling`]): a bare tokio-tungstenite accept + echo and an axum
//!    server answering a constant body of the real answer's size, started in a process of their
//!    own, measured ([`crate::figures`]), stopped;
//! 2. the server: register the users' tokens through `/user/token`; open one WebSocket session
//!    per user at full speed (durable connects), reading `/stats` before and after for the
//!    server's memory per idle connection; `/user/onlinestatus` with 100 uids from K clients
//!    alone, in slices alternating with a third ceiling server's ([`crate::figures`]), then for
//!    `--duration` while held sessions are closed and reopened at `--churn-rate`; drop every
//!    session;
//! 3. the ceilings again (the host's speed drifts: the better run is the ceiling);
//! 4. the report ([`crate::report`]).
//!
//! Promises: traffic goes to loopback addresses only ([`crate::target::loopback`]); the soft
//! file-descriptor limit is raised first and a run that cannot fit in it is refused before it
//! starts. Must never: run unbounded, or hide failures (every error kind is counted and shown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::http::HttpConn;
use crate::measure::rate;
use crate::target::Spread;
use crate::users::Users;
use crate::ws::{Expect, Frames};
use crate::{across, ceiling, drive, figures, report, scale, seed, target};

/// Options of a run: where the server is, and the load's shape.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// The server's HTTP API (loopback only); several nodes comma-separated
    /// (`127.0.0.1:5001,127.0.0.1:5011`): users and clients are spread over them in turn.
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub api: String,
    /// The server's WebSocket gateway (loopback only); several nodes comma-separated, in the
    /// order of --api: user `i` connects to the `i`-th modulo their number.
    #[arg(long, default_value = "127.0.0.1:5200")]
    pub ws: String,
    /// The server's manager token, if it has one.
    #[arg(long, env = "WK_MANAGER_TOKEN", hide_env_values = true)]
    pub manager_token: Option<String>,
    /// Simulated users: each gets a token and holds one WebSocket session.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Held sessions closed and reopened per second during --duration (0: no churn).
    #[arg(long, default_value_t = 1000.0)]
    pub churn_rate: f64,
    /// Concurrent clients POSTing /user/onlinestatus (100 uids each) in a loop (0: none, for a
    /// churn alone).
    #[arg(long, default_value_t = 8)]
    pub status_clients: usize,
    /// How long the churn and onlinestatus load run together.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The device flag the users register and connect with.
    #[arg(long, default_value_t = 1)]
    pub device_flag: u8,
    /// Prefix of the simulated uids (`load_000042`, offline ones `load_off000042`).
    #[arg(long, default_value = "load_")]
    pub uid_prefix: String,
    /// Registrations and session opens in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long each ceiling, and onlinestatus without churn, is measured.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub measure_time: Duration,
    /// The longest the registration, or the opening of the sessions, may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub phase_limit: Duration,
    /// With several nodes: tail lag probes per second during the churn (a probe user connects
    /// on one node, the next node is asked until it shows online).
    #[arg(long, default_value_t = 20.0)]
    pub tail_probes: f64,
    /// With several nodes: cross-node kick probes per second during the churn (a probe user
    /// connects on one node, its device is quit on the next).
    #[arg(long, default_value_t = 10.0)]
    pub kick_probes: f64,
    /// Listen here (loopback) as the server's webhook receiver, answering each batch after
    /// 1 ms, and report how the webhook keeps up (start the server with
    /// `--webhook-url http://ADDR/hook`).
    #[arg(long)]
    pub webhook_sink: Option<String>,
    /// Before anything else, give this many users a token on --device-flag (`load_000000`,
    /// ...; the users holding sessions are the first of them), skipping those a previous run
    /// left on the same data; then print the server's RSS per known user.
    #[arg(long, default_value_t = 0)]
    pub known_users: usize,
    /// Connections seeding the known users at once.
    #[arg(long, default_value_t = 64)]
    pub seed_connections: usize,
    /// Requests each seeding connection sends before reading their answers (HTTP/1.1
    /// pipelining; slower than 1 against builds whose API sockets lack TCP_NODELAY, see
    /// docs/performance.md).
    #[arg(long, default_value_t = 1)]
    pub seed_pipeline: usize,
    /// The longest the seeding of the known users may take.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub seed_limit: Duration,
    /// After the known users, open and close this many sessions of theirs (two events each),
    /// for a log of millions of events in minutes; skipped when the log already holds the
    /// known users' and these sessions' events.
    #[arg(long, default_value_t = 0)]
    pub seed_sessions: usize,
    /// Stop after seeding the known users and printing their figures.
    #[arg(long)]
    pub seed_only: bool,
    /// The server's --data-dir (sled and SQLite), to report the log's bytes on disk per event
    /// and the view's size.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Soak mode: hold --users sessions and churn them at --churn-rate for this long (`30m`),
    /// printing the server's RSS and the tails minute by minute, instead of the usual run.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// The soak's window (a minute; shorter only for tests).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, hide = true)]
    pub soak_window: Duration,
}

/// Uids per onlinestatus request, half of them online.
pub const UIDS_PER_REQUEST: usize = 100;
/// Distinct request bodies each status client cycles through.
const BODIES: usize = 256;
/// The longest any phase may be asked to last.
const MAX_PHASE: Duration = Duration::from_secs(24 * 3600);
/// The EasySDK's ping interval.
pub const PING_EVERY: Duration = Duration::from_secs(25);

/// The answer of `GET /stats`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ServerStats {
    pub open_connections: u64,
    pub online_sessions: u64,
    pub known_users: u64,
    pub rss_bytes: Option<u64>,
    pub last_seq: u64,
    /// Absent without a webhook, or on a node that does not deliver.
    #[serde(default)]
    pub webhook_pending: Option<u64>,
}

/// Progress lines, stamped with the time since the start (to line them up with other tools).
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn say(&self, line: &str) {
        println!("[{:6.1} s] {line}", self.0.elapsed().as_secs_f64());
    }
}

/// What the report needs from the server's side of the run.
pub struct ServerRun {
    pub figures: figures::Figures,
    pub registered: drive::RegisterRun,
    pub rss_before: ServerStats,
    pub rss_after: ServerStats,
    pub at_end: ServerStats,
    pub held: usize,
    /// How long the server took to record the close of every held session dropped at once.
    pub dropped_in: Option<Duration>,
    /// With --webhook-sink.
    pub webhook: Option<crate::sink::WebhookRun>,
}

/// Runs the whole load test and prints its report.
pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let clock = Clock(Instant::now());
    check(&args)?;
    let api = Spread::parse("--api", &args.api).await?;
    let ws_addr = Spread::parse("--ws", &args.ws).await?;
    let token = args.manager_token.clone().filter(|t| !t.is_empty());
    let users = Users::new(&args, api.all().len())?;

    let mut probe = Probe::new(&api, &token);
    let mut before = probe.stats().await.with_context(|| {
        format!(
            "cannot read {api}/stats: is `wkuser serve` running there (and --manager-token right)?"
        )
    })?;
    if args.known_users > 0 {
        before = seed::known_users(&clock, &args, &api, &token, &users, before).await?;
        if args.seed_only {
            return Ok(());
        }
    }

    // File descriptors: one per held session here (and one per session in the server), plus
    // churn in flight, HTTP clients and some slack.
    let fds = target::raise_fd_limit().context("reading the open-file limit")?;
    let churn_in_flight = ((args.churn_rate / 2.0).ceil() as usize).max(64);
    let slack = churn_in_flight + args.status_clients + args.concurrency + 128;
    let needed = args.users as u64 + slack as u64;
    clock.say(&format!(
        "file descriptors: soft limit {} (was {}), hard limit {}; this run needs about {needed} here",
        fds.soft, fds.before, fds.hard
    ));
    if needed > fds.soft {
        bail!(
            "--users {} needs about {needed} open files in this tool (one per session) and as many \
             in the server, but the limit here is {} (hard limit {}): lower --users, or raise the \
             hard limit (`ulimit -Hn`, as root) in both shells",
            args.users,
            fds.soft,
            fds.hard
        );
    }
    clock.say(&format!(
        "the server needs about {} open files too: start it from a shell where `ulimit -n` allows it",
        args.users + 256
    ));

    let bodies = Arc::new(users.bodies(BODIES));
    let constant = users.expected_answer(&bodies[0], args.device_flag);
    let frames = Arc::new(users.frames(&args));
    clock.say(&format!(
        "{} users holding a session each, {} offline users; onlinestatus asks {} uids ({} online), answer {} bytes",
        args.users,
        users.offline.len(),
        UIDS_PER_REQUEST,
        users.online_per_request(),
        constant.len()
    ));
    let load = figures::Load {
        args: &args,
        bodies: bodies.clone(),
        churn_in_flight,
    };
    // The ceiling holds both ends of each session in this process.
    let ceiling_sessions = ((fds.soft as usize).saturating_sub(2 * slack) / 2).min(args.users);
    let ceiling_frames = || {
        Arc::new(Frames::new(
            users.online[..ceiling_sessions].to_vec(),
            users.tokens(ceiling_sessions),
            args.device_flag,
        ))
    };

    if let Some(length) = args.soak {
        return crate::soak::run(crate::soak::Soak {
            clock,
            load: &load,
            users: &users,
            frames,
            ceiling_frames: &ceiling_frames,
            constant,
            api,
            ws: ws_addr,
            token,
            before,
            length,
        })
        .await;
    }

    // 1. The ceilings, a first time.
    let first = measure_ceilings(&clock, &load, ceiling_frames(), constant.clone()).await?;

    // 2-4. The server.
    let mut server = measure_server(
        &clock, &load, &users, frames, api, ws_addr, token, before, &constant,
    )
    .await?;

    // 1'. The ceilings again: the machine's speed drifts; the better of the two is the ceiling.
    let second = measure_ceilings(&clock, &load, ceiling_frames(), constant.clone()).await?;

    let webhook = server.webhook.take();
    let (with_sessions, at_end) = (server.rss_after, server.at_end);
    report::print(&report::Report {
        args: &args,
        answer_size: constant.len(),
        ceiling: first.best(&second),
        ceilings: [first, second],
        server,
    });
    if let Some(webhook) = &webhook {
        crate::sink::print(webhook);
    }
    if args.known_users > 0 || args.data_dir.is_some() {
        println!(
            "{}",
            scale::memory_line("with the sessions open, 1 s after", &with_sessions, None)
        );
        println!("{}", scale::disk_line(args.data_dir.as_deref(), &at_end));
    }
    Ok(())
}

/// Refuses options that cannot make a run, before anything is sent.
fn check(args: &LoadtestArgs) -> anyhow::Result<()> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    for (name, rate) in [
        ("--churn-rate", args.churn_rate),
        ("--tail-probes", args.tail_probes),
        ("--kick-probes", args.kick_probes),
    ] {
        if !(rate >= 0.0 && rate.is_finite()) {
            bail!("{name} must be a number per second, 0 or more");
        }
    }
    for (name, value) in [
        ("--duration", args.duration),
        ("--measure-time", args.measure_time),
        ("--phase-limit", args.phase_limit),
        ("--seed-limit", args.seed_limit),
        ("--soak", args.soak.unwrap_or_default()),
        ("--soak-window", args.soak_window),
    ] {
        // Each is added to the time now: far past a day it would overflow the clock.
        if value > MAX_PHASE {
            bail!("{name} must be at most a day");
        }
    }
    seed::check(args.seed_connections, args.seed_pipeline)?;
    if args.seed_only && args.known_users == 0 {
        bail!("--seed-only needs --known-users");
    }
    if args.soak_window < Duration::from_secs(1) {
        bail!("--soak-window must be at least 1 s");
    }
    if args.soak.is_some_and(|s| s < args.soak_window) {
        bail!(
            "--soak must be at least one window ({})",
            humantime::format_duration(args.soak_window)
        );
    }
    Ok(())
}

/// Gives every user of the run (online, offline, probes) a token of this run.
pub(crate) async fn register_users(
    clock: &Clock,
    args: &LoadtestArgs,
    users: &Users,
    api: &Spread,
    token: &Option<String>,
) -> anyhow::Result<drive::RegisterRun> {
    let everyone = users.registered();
    let n = everyone.len();
    clock.say(&format!(
        "server: registering {n} tokens ({} for the probes across nodes), {} at a time ...",
        users.tail.len() + users.kick.len(),
        args.concurrency
    ));
    let register_frames = Arc::new(Frames::new(everyone, users.tokens(n), args.device_flag));
    let registered = drive::register(
        api.clone(),
        token.clone(),
        register_frames,
        args.concurrency,
        args.phase_limit,
    )
    .await;
    clock.say(&format!(
        "server:   registered {} in {:.2} s ({:.0}/s), {} errors",
        registered.registered,
        registered.elapsed.as_secs_f64(),
        rate(registered.registered, registered.elapsed),
        registered.errors.total()
    ));
    print!("{}", registered.errors.top(5));
    if registered.registered == 0 {
        bail!("no token could be registered; stopping");
    }
    Ok(registered)
}

#[allow(clippy::too_many_arguments)]
async fn measure_server(
    clock: &Clock,
    load: &figures::Load<'_>,
    users: &Users,
    frames: Arc<Frames>,
    api: Spread,
    ws: Spread,
    token: Option<String>,
    before: ServerStats,
    constant: &[u8],
) -> anyhow::Result<ServerRun> {
    let args = load.args;
    let mut probe = Probe::new(&api, &token);
    let sink = match &args.webhook_sink {
        Some(addr) => {
            let sink = crate::sink::Sink::start(addr).await?;
            clock.say(&format!(
                "webhook sink on {0}: the server must run with --webhook-url http://{0}/hook",
                sink.addr
            ));
            Some(sink)
        }
        None => None,
    };
    let registered = register_users(clock, args, users, &api, &token).await?;

    let before_probes = args.users + users.offline.len();
    let across = (api.all().len() > 1).then(|| across::Plan {
        api: api.clone(),
        ws: ws.clone(),
        token: token.clone(),
        tail: users.probe_frames(&users.tail, before_probes, args.device_flag),
        kick: users.probe_frames(
            &users.kick,
            before_probes + users.tail.len(),
            args.device_flag,
        ),
        tail_rate: args.tail_probes,
        kick_rate: args.kick_probes,
    });
    let target = figures::Target {
        name: "server",
        ws,
        http: api,
        token,
        expect: Expect::ConnectOk,
    };
    let rss_before = probe.stats().await?;
    let opened = figures::open(clock, &target, load, frames.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = probe.stats().await?;
    // The webhook's backlog of the opening burst drains before the churn is measured.
    let watch = match sink {
        Some(sink) => {
            let sampling = Probe::new(&target.http, &target.token);
            Some(crate::sink::Watch::begin(sink, &mut probe, sampling).await)
        }
        None => None,
    };
    // A ceiling of its own, for the slices of "onlinestatus alone" between the server's.
    let beside = ceiling::Ceilings::start(constant)
        .await
        .context("starting the ceiling servers")?;
    let (figures, slots) = figures::drive(
        clock,
        &target,
        load,
        frames,
        opened,
        args.duration,
        Some(beside.http_addr),
        across.as_ref(),
    )
    .await;
    beside.stop().await;
    let at_end = probe.stats().await?;
    let webhook = match watch {
        Some(watch) => {
            let events = HttpConn::new(target.http.all()[0], target.token.clone());
            Some(watch.end(&mut probe, events).await?)
        }
        None => None,
    };
    // Leave: drop every session at once and time how long the server takes to record them.
    let dropped_at = Instant::now();
    let held = figures::release(&slots);
    let settled =
        wait_for_sessions(&mut probe, before.online_sessions, Duration::from_secs(60)).await;
    let dropped_in = settled.map(|()| dropped_at.elapsed());
    clock.say(&format!(
        "server:   dropped {held} sessions at once; all closes recorded: {}",
        dropped_in.map_or("not within 60 s".into(), |d| format!(
            "after {:.2} s",
            d.as_secs_f64()
        ))
    ));
    Ok(ServerRun {
        figures,
        registered,
        rss_before,
        rss_after,
        at_end,
        held,
        dropped_in,
        webhook,
    })
}

/// Starts the bare servers, measures them like the server, stops them.
pub(crate) async fn measure_ceilings(
    clock: &Clock,
    load: &figures::Load<'_>,
    frames: Arc<Frames>,
    constant: Vec<u8>,
) -> anyhow::Result<figures::Figures> {
    let ceilings = ceiling::Ceilings::start(&constant)
        .await
        .context("starting the ceiling servers")?;
    let target = figures::Target {
        name: "ceiling",
        ws: Spread::one(ceilings.ws_addr),
        http: Spread::one(ceilings.http_addr),
        token: None,
        expect: Expect::Echo,
    };
    let opened = figures::open(clock, &target, load, frames.clone()).await;
    let (figures, slots) = figures::drive(
        clock,
        &target,
        load,
        frames,
        opened,
        load.args.measure_time,
        None,
        None,
    )
    .await;
    figures::release(&slots);
    ceilings.stop().await;
    Ok(figures)
}

/// The `/stats` of every node of the target, added up as one server: sockets and memory are
/// each node's own (summed); sessions, users and the log are the cluster's, which every node
/// sees whole (the largest count is the most recent).
pub(crate) struct Probe(Vec<HttpConn>);

impl Probe {
    pub(crate) fn new(api: &Spread, token: &Option<String>) -> Self {
        Probe(
            api.all()
                .iter()
                .map(|addr| HttpConn::new(*addr, token.clone()))
                .collect(),
        )
    }

    pub(crate) async fn stats(&mut self) -> anyhow::Result<ServerStats> {
        let mut all = ServerStats::default();
        for conn in &mut self.0 {
            let one = server_stats(conn).await?;
            all.open_connections += one.open_connections;
            all.online_sessions = all.online_sessions.max(one.online_sessions);
            all.known_users = all.known_users.max(one.known_users);
            all.rss_bytes = match (all.rss_bytes, one.rss_bytes) {
                (Some(a), Some(b)) => Some(a + b),
                (None, b) => b,
                (a, None) => a,
            };
            all.last_seq = all.last_seq.max(one.last_seq);
            // Only the delivering node knows it.
            all.webhook_pending = all.webhook_pending.max(one.webhook_pending);
        }
        Ok(all)
    }
}

async fn server_stats(conn: &mut HttpConn) -> anyhow::Result<ServerStats> {
    let (status, body) = tokio::time::timeout(drive::OP_TIMEOUT, conn.get("/stats"))
        .await
        .context("GET /stats timed out")??;
    if status != 200 {
        bail!(
            "GET /stats answered {status}: {}",
            String::from_utf8_lossy(body)
        );
    }
    serde_json::from_slice(body).context("GET /stats answered something else than its counters")
}

/// Polls `/stats` until the server's online sessions are back to `baseline`; `None` after
/// `limit`.
pub(crate) async fn wait_for_sessions(
    probe: &mut Probe,
    baseline: u64,
    limit: Duration,
) -> Option<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(s) = probe.stats().await {
            if s.online_sessions <= baseline {
                return Some(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
