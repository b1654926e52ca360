//! The `wkuser` command: `serve` runs the server; `audit`, `events`, `replay`, `verify`,
//! `migrate-to-postgres` and `archive` are for operators. (The load tool is a binary of its own: `wkuser-loadtest`, in `loadtest/`.)
//!
//! Owns process concerns only: parsing the command line, the log subscriber (`RUST_LOG`), the
//! signals that stop the server, exit codes. Everything else is in the library.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Deserialize;
use serde_json::value::RawValue;
use wkuser::app::Server;
use wkuser::config::Config;
use wkuser::domain::{Seq, Uid};
use wkuser::ops::archive::{self as archive_run, Outcome};
use wkuser::ops::client::{encode, ApiClient};
use wkuser::ops::migrate::{self, Stage};
use wkuser::ops::replay::{self, Until};
use wkuser::ops::{across, audit, open_stopped_log, shared};
use wkuser::view::{SqliteView, ViewStore};

/// Per-thread free lists for every size the request path allocates (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wkuser",
    version,
    about = "The WuKongIM user subsystem: tokens, device sessions, online status, system uids"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// How log lines are written to stderr: `text` for a person, `json` for a log pipeline (one
    /// JSON object per line, its fields - uid, session_id, device_flag (by name), reason,
    /// node_id, seq - as keys of their own).
    #[arg(long, global = true, env = "WK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The format of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: HTTP API and WebSocket gateway over the data directory.
    Serve(Config),
    /// A user's session history as a table, current status on top.
    Audit(AuditArgs),
    /// Events as JSON lines, oldest first.
    Events(EventsArgs),
    /// Rebuild the SQL view from the log into a fresh database (stopped data dir).
    Replay(ReplayArgs),
    /// Rebuild the view in a temporary database and compare it with the live one (stopped data
    /// dir, or the shared database); exit 1 when they differ.
    Verify(VerifyArgs),
    /// Move a stopped single node's log into an empty PostgreSQL database and build the
    /// shared view there.
    MigrateToPostgres(MigrateArgs),
    /// Move the events recorded before a time out of the live log into a zstd archive file,
    /// and shrink the live log (stopped data dir, or a shared database whose nodes are all
    /// stopped). `events`, `replay` and `verify` read the archives with --archive FILE.
    Archive(ArchiveArgs),
}

#[derive(Args)]
struct ArchiveArgs {
    /// Archive the events recorded before this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    before: String,
    /// The archive file to write (must not exist). `zstd -dc FILE` prints its events as
    /// `wkuser events` does.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
}

#[derive(Args)]
struct ArchivesArg {
    /// An archive of this log (written by `wkuser archive --out FILE`), read before the live
    /// log. Repeat it for each archive; replay and verify need every archive of the log.
    #[arg(long = "archive", value_name = "FILE")]
    archives: Vec<PathBuf>,
}

#[derive(Args)]
struct SharedArg {
    /// Read the log and view that several nodes share in this PostgreSQL database
    /// (postgres://...) instead of the data dir.
    #[arg(long, env = "WK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    archives: ArchivesArg,
}

#[derive(Args)]
struct MigrateArgs {
    /// The stopped node's data directory, whose log moves.
    #[arg(long, env = "WK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The empty PostgreSQL database to move it into (postgres://...).
    #[arg(long, env = "WK_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Args)]
struct DataDirArg {
    /// The data directory.
    #[arg(long, env = "WK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct RemoteArgs {
    /// Read through a running server's API (e.g. 127.0.0.1:5001) instead of the data dir.
    #[arg(long, conflicts_with = "database_url")]
    api: Option<String>,
    /// The manager token of that server, if it has one.
    #[arg(long, env = "WK_MANAGER_TOKEN", hide_env_values = true)]
    manager_token: Option<String>,
}

#[derive(Args)]
struct AuditArgs {
    /// The uid.
    uid: String,
    /// Most sessions shown, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct EventsArgs {
    /// Only the events of this uid.
    #[arg(long)]
    uid: Option<String>,
    /// Only events after this seq.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Keep printing new events as they are recorded (needs --api: a stopped log does not grow).
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    archives: ArchivesArg,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct ReplayArgs {
    /// The new database file to build (must not exist).
    #[arg(long)]
    into: PathBuf,
    /// Stop after this seq.
    #[arg(long, conflicts_with = "until_time")]
    until_seq: Option<u64>,
    /// Stop after the events recorded at or before this time (RFC 3339).
    #[arg(long)]
    until_time: Option<String>,
    #[command(flatten)]
    archives: ArchivesArg,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
}

fn main() -> std::process::ExitCode {
    let cli = parse_command_line();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wkuser: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Cmd::Serve(config) => serve(config).await.map(|()| true),
            Cmd::Audit(a) => audit_cmd(a).await.map(|()| true),
            Cmd::Events(a) => events_cmd(a).await.map(|()| true),
            Cmd::Replay(a) => replay_cmd(a).await.map(|()| true),
            Cmd::Verify(a) => verify_cmd(a).await,
            Cmd::MigrateToPostgres(a) => migrate_cmd(a).await.map(|()| true),
            Cmd::Archive(a) => archive_cmd(a).await.map(|()| true),
        }
    });
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("wkuser: {}", one_line(&e));
            std::process::ExitCode::from(2)
        }
    }
}

/// Parses the command line, or exits with clap's error, which names the environment variable
/// when the wrong value came from one (see [`wkuser::config::name_the_environment`]).
fn parse_command_line() -> Cli {
    let argv: Vec<OsString> = std::env::args_os().collect();
    Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| wkuser::config::name_the_environment(e, &Cli::command(), &argv).exit())
}

/// An error and its causes on one line, each said once: most errors here write their cause
/// into their own message (so that a log line of the error alone is complete) and also
/// return it as their source, and printing every link of the chain would say it twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if line.contains(&said) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&said);
    }
    line
}

/// Logs to stderr at `RUST_LOG` (default `info`), as text or one JSON object per line, except
/// the WebSocket library's trace level: there it prints whole messages, and a connect frame
/// carries a token.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let level = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A closure filter gives no level hint of its own, and without one the process-wide
    // maximum is TRACE: every `log` record of sled and tungstenite (a trace line per frame)
    // was then built and offered to the filter, a cost that showed in profiles while
    // sessions open. With this hint the maximum is what `RUST_LOG` asks for, and a record
    // below it costs one comparison.
    let no_payloads = filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("tungstenite"))
    })
    .with_max_level_hint(tracing::level_filters::LevelFilter::TRACE);
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        // The event's fields beside `timestamp`, `level`, `target` and `message`, not nested:
        // a pipeline filters on `uid` or `session_id` directly. The server opens no span an
        // operator filters on, so spans are left out.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(level.and(no_payloads)))
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Listening before starting: a SIGTERM that arrives while the server starts (a supervisor
    // stopping it early) must stop it gracefully once started, not kill it mid-start.
    let stop = stop_signal().context("cannot listen for stop signals")?;
    // No context of its own: every start error says what could not be done, and the line
    // already begins with `wkuser: `.
    let server = Server::start(config).await?;
    stop.await;
    tracing::info!("stopping: closing sessions and flushing");
    server.shutdown().await;
    Ok(())
}

/// Registers for SIGTERM and SIGINT (Ctrl-C) now; the future ends at the first of them,
/// including one received before it is awaited.
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn audit_cmd(a: AuditArgs) -> anyhow::Result<()> {
    let uid = Uid::parse(&a.uid)
        .map_err(|e| anyhow::anyhow!("{:?} is not a valid uid: it {e}", a.uid))?;
    let limit = a.limit.clamp(1, 1000);
    let (history, source) = match &a.remote.api {
        Some(api) => {
            let client = ApiClient::new(api, a.remote.manager_token.clone());
            let path = format!("/user/sessions?uid={}&limit={limit}", encode(uid.as_str()));
            let history: audit::History = client.get(&path).await?;
            (history, format!("running server at {api} (live status)"))
        }
        None if a.shared.database_url.is_some() => {
            let url = a.shared.database_url.as_deref().unwrap_or_default();
            let view = shared::open_shared_view(url).await?;
            // One snapshot: the nodes keep projecting into the shared view meanwhile.
            let snapshot = view.history_snapshot(&uid, limit + 1).await;
            view.close().await;
            let snapshot = snapshot?;
            let source = format!(
                "shared SQL view in PostgreSQL as of seq {}",
                snapshot.checkpoint
            );
            (audit::from_snapshot(&uid, snapshot, limit), source)
        }
        None => {
            let path = a.data.data_dir.join("view.sqlite");
            let view = SqliteView::open_existing_read_only(&path).await?;
            // One snapshot: a server beside may be projecting into the view meanwhile.
            let snapshot = view.history_snapshot(&uid, limit + 1).await;
            view.close().await;
            let snapshot = snapshot?;
            let source = format!(
                "SQL view {} as of seq {}",
                path.display(),
                snapshot.checkpoint
            );
            (audit::from_snapshot(&uid, snapshot, limit), source)
        }
    };
    print!("{}", audit::render(&history, &source));
    Ok(())
}

/// A page of `/events`, its events kept as the server wrote them: printed as they are, they
/// are the lines `events` prints from a data directory, keys in the same order.
#[derive(Deserialize)]
struct EventsPage {
    events: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct EventSeq {
    seq: u64,
}

/// What to do about a data directory a server holds, for each command that reads its log.
const EVENTS_IN_USE: &str = "stop it first, or read through its API with --api ADDR";
const REPLAY_IN_USE: &str = "stop it first, or replay a copy of the data directory";
const VERIFY_IN_USE: &str = "stop it first, or verify a copy of the data directory";

async fn events_cmd(a: EventsArgs) -> anyhow::Result<()> {
    let uid = a
        .uid
        .as_deref()
        .map(|u| Uid::parse(u).map_err(|e| anyhow::anyhow!("{u:?} is not a valid uid: it {e}")))
        .transpose()?;
    let mut out = std::io::stdout().lock();
    if a.remote.api.is_some() && !a.archives.archives.is_empty() {
        bail!("--archive reads a stopped data directory or a shared database: it cannot go with --api");
    }
    match &a.remote.api {
        Some(api) => {
            let client = ApiClient::new(api, a.remote.manager_token.clone());
            let mut after = a.after;
            loop {
                let mut path = format!("/events?after={after}&limit=1000");
                if let Some(u) = &uid {
                    path.push_str(&format!("&uid={}", encode(u.as_str())));
                }
                let page: EventsPage = client.get(&path).await?;
                for e in &page.events {
                    writeln!(out, "{}", e.get())?;
                    let seq: EventSeq = serde_json::from_str(e.get())
                        .context("an event of /events without a seq")?;
                    after = seq.seq.max(after);
                }
                out.flush()?;
                if page.events.is_empty() {
                    if !a.follow {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        None => {
            if a.follow {
                bail!("--follow needs --api: a stopped data directory does not grow, and a shared database is followed through a node's API");
            }
            let log = match &a.shared.database_url {
                Some(url) => shared::open_shared_log(url).await?,
                None => {
                    let dir = &a.data.data_dir;
                    open_stopped_log(dir)
                        .await
                        .map_err(|e| e.in_data_dir(dir, EVENTS_IN_USE))?
                }
            };
            let mut after = Seq(a.after);
            let archives = &a.archives.archives;
            if !archives.is_empty() {
                across::archived_events(
                    &log,
                    archives,
                    uid.as_ref().map(Uid::as_str),
                    after,
                    |e| writeln!(out, "{}", e.to_operator_json()),
                )?;
            }
            if let Some(b) = across::boundary_of(&log)? {
                if archives.is_empty() && after < b.seq {
                    eprintln!(
                        "note: the events up to seq {} are archived, in {}: pass --archive FILE to read them too",
                        b.seq,
                        b.files()
                    );
                }
                after = after.max(b.seq);
            }
            loop {
                let batch = match &uid {
                    Some(u) => log.read_uid(u.as_str(), after, 4096)?,
                    None => log.read_after(after, 4096)?,
                };
                let Some(last) = batch.last() else { break };
                after = last.seq;
                for e in &batch {
                    writeln!(out, "{}", e.to_operator_json())?;
                }
            }
            out.flush()?;
            log.close().await;
            Ok(())
        }
    }
}

async fn replay_cmd(a: ReplayArgs) -> anyhow::Result<()> {
    let until = match (a.until_seq, &a.until_time) {
        (Some(s), _) => Until::Seq(Seq(s)),
        (None, Some(t)) => Until::Time(
            wkuser::human::parse_rfc3339_ms(t)
                .ok_or_else(|| anyhow::anyhow!("--until-time {t:?} is not an RFC 3339 time"))?,
        ),
        (None, None) => Until::End,
    };
    let log = match &a.shared.database_url {
        Some(url) => shared::open_shared_log(url).await?,
        None => {
            let dir = &a.data.data_dir;
            open_stopped_log(dir)
                .await
                .map_err(|e| e.in_data_dir(dir, REPLAY_IN_USE))?
        }
    };
    let total = match until {
        Until::Seq(s) => s.0.min(log.last_durable().0),
        _ => log.last_durable().0,
    };
    let bar = progress_bar(total);
    let report = replay::replay_into_file_with(&log, &a.into, until, &a.archives.archives, |seq| {
        if let Some(b) = &bar {
            b.set_position(seq.0);
            b.set_message(wkuser::human::progress(seq.0, total));
        }
    })
    .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    log.close().await;
    let report = report?;
    if let Some(at) = report.from_state_at {
        eprintln!(
            "note: the log is archived up to seq {at}: this view starts from the log's snapshot at that seq, without the sessions that had ended by then (pass every archive with --archive to rebuild them too)"
        );
    }
    eprintln!(
        "replayed {} events (up to seq {}) into {} in {:.2} s ({:.0} events/s)",
        report.events,
        report.last_seq,
        a.into.display(),
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    Ok(())
}

/// A progress bar over `total` events on stderr, when stderr is a terminal.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    // Not indicatif's `{per_sec}`: it shows four decimals of events per second.
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {msg}  eta {eta}")
            .expect("a valid template"),
    );
    bar.set_message(wkuser::human::progress(0, total));
    Some(bar)
}

async fn verify_cmd(a: VerifyArgs) -> anyhow::Result<bool> {
    let shared = a.shared.database_url.is_some();
    // The bar's end is known once the live view's checkpoint is read: it is made then.
    let bar: std::cell::RefCell<Option<Option<indicatif::ProgressBar>>> = Default::default();
    let progress = |seq: Seq, total: Seq| {
        let mut bar = bar.borrow_mut();
        if let Some(b) = bar.get_or_insert_with(|| progress_bar(total.0)).as_ref() {
            b.set_position(seq.0);
            b.set_message(format!(
                "rebuilding the view: {}",
                wkuser::human::progress(seq.0, total.0)
            ));
        }
    };
    let archives = &a.archives.archives;
    let verdict = match &a.shared.database_url {
        Some(url) => shared::verify_shared_with(url, archives, progress).await,
        None => {
            let dir = &a.data.data_dir;
            let log = open_stopped_log(dir)
                .await
                .map_err(|e| e.in_data_dir(dir, VERIFY_IN_USE))?;
            let verdict =
                replay::verify_with(&log, &dir.join("view.sqlite"), archives, progress).await;
            log.close().await;
            verdict
        }
    };
    if let Some(Some(b)) = bar.borrow_mut().take() {
        b.finish_and_clear();
    }
    let verdict = verdict?;
    if verdict.behind > 0 {
        let catch_up = if shared {
            "the nodes' projectors are applying them"
        } else {
            "it catches up at the next start"
        };
        println!(
            "note: the view is {} events behind the log ({catch_up}); compared up to seq {}",
            verdict.behind, verdict.checkpoint
        );
    }
    if verdict.differences.is_empty() {
        println!(
            "the view matches a rebuild of the log up to seq {}",
            verdict.checkpoint
        );
        return Ok(true);
    }
    for d in &verdict.differences {
        println!("{d}");
    }
    println!(
        "{} differences between the live view and a rebuild of the log up to seq {}",
        verdict.differences.len(),
        verdict.checkpoint
    );
    Ok(false)
}

async fn migrate_cmd(a: MigrateArgs) -> anyhow::Result<()> {
    let bar: std::cell::RefCell<Option<indicatif::ProgressBar>> = Default::default();
    let total = std::cell::Cell::new(0u64);
    let report = migrate::migrate(
        &a.data_dir,
        &a.database_url,
        migrate::IMPORT_BATCH,
        |from, end| {
            if from > Seq(0) {
                eprintln!("an interrupted move stopped at seq {from}: moving on from there");
            }
            total.set(end.0);
            *bar.borrow_mut() = progress_bar(end.0);
            if let Some(b) = &*bar.borrow() {
                b.set_position(from.0);
            }
        },
        |stage, seq| {
            if let Some(b) = &*bar.borrow() {
                let doing = match stage {
                    Stage::Moving => "moving the log",
                    Stage::Projecting => "building the view",
                };
                b.set_position(seq.0);
                b.set_message(format!(
                    "{doing}: {}",
                    wkuser::human::progress(seq.0, total.get())
                ));
            }
        },
    )
    .await;
    if let Some(b) = bar.borrow_mut().take() {
        b.finish_and_clear();
    }
    let report = report?;
    let moved_now = report.events - report.resumed_after.map_or(0, |s| s.0);
    eprintln!(
        "moved {moved_now} events (the log up to seq {}) from {} into the shared database and built its view up to seq {} in {:.2} s",
        report.events,
        a.data_dir.display(),
        report.last_seq,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Set to a step's name (`archive-writing`, `archive-written`, `rewrite-built`,
/// `log-moved-aside`, `rewrite-in-place`, `swapped`; `range-dropped` on a shared database),
/// `wkuser archive` stops there and waits to be killed: for the tests of a crash at each point
/// of the run. Not for operators.
const ARCHIVE_PAUSE_AT: &str = "WK_TEST_ARCHIVE_PAUSE_AT";

async fn archive_cmd(a: ArchiveArgs) -> anyhow::Result<()> {
    let before_ms = wkuser::human::parse_rfc3339_ms(&a.before)
        .ok_or_else(|| anyhow::anyhow!("--before {:?} is not an RFC 3339 time", a.before))?;
    let pause_at = std::env::var(ARCHIVE_PAUSE_AT).ok();
    let step = move |name: &'static str| {
        if pause_at.as_deref() == Some(name) {
            eprintln!("archive paused at {name}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    let bar: std::cell::RefCell<Option<Option<indicatif::ProgressBar>>> = Default::default();
    let progress = |at: Seq, upto: Seq| {
        let mut bar = bar.borrow_mut();
        if let Some(b) = bar.get_or_insert_with(|| progress_bar(upto.0)).as_ref() {
            b.set_position(at.0);
            b.set_message(format!(
                "archiving: {}",
                wkuser::human::progress(at.0, upto.0)
            ));
        }
    };
    let outcome = match &a.shared.database_url {
        Some(url) => {
            archive_run::archive_shared(url, before_ms, &a.before, &a.out, step, progress).await
        }
        None => {
            archive_run::archive_data_dir(
                &a.data.data_dir,
                before_ms,
                &a.before,
                &a.out,
                step,
                progress,
            )
            .await
        }
    };
    if let Some(Some(b)) = bar.borrow_mut().take() {
        b.finish_and_clear();
    }
    match outcome? {
        Outcome::Nothing { why } => eprintln!("nothing archived: {why}"),
        Outcome::Archived(r) => {
            eprintln!(
                "archived seq {}..={} ({} events) into {} ({} bytes) in {:.2} s; the live log \
                 went from {} to {} bytes on disk",
                r.first_seq,
                r.last_seq,
                r.last_seq.0 - r.first_seq.0 + 1,
                r.file.display(),
                r.file_bytes,
                r.elapsed.as_secs_f64(),
                r.live_before,
                r.live_after
            );
            if let Some(why) = r.limited_by {
                eprintln!("note: the archive stops before --before: {why}");
            }
        }
    }
    Ok(())
}
