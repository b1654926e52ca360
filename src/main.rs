//! The `wkuser` command: `serve` runs the server; `audit`, `events`, `replay`, `verify`,
//! `migrate-to-postgres` and `archive` are for operators. (The load tool is a binary of its own: `wkuser-loadtest`, in `loadtest/`.)
//!
//! Owns process concerns only: parsing the command line, the log subscriber (`RUST_LOG`), the
//! signals that stop the server, exit codes, the allocator (`allocator`). The operator
//! commands' arguments and output are in `cli/`; everything else is in the library.

mod allocator;
mod cli;

use std::ffi::OsString;
use std::io::IsTerminal;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use wkuser::app::Server;
use wkuser::config::Config;

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
    Audit(cli::read::AuditArgs),
    /// Events as JSON lines, oldest first.
    Events(cli::read::EventsArgs),
    /// Rebuild the SQL view from the log into a fresh database (stopped data dir).
    Replay(cli::rebuild::ReplayArgs),
    /// Rebuild the view in a temporary database and compare it with the live one (stopped data
    /// dir, or the shared database); exit 1 when they differ.
    Verify(cli::rebuild::VerifyArgs),
    /// Move a stopped single node's log into an empty PostgreSQL database and build the
    /// shared view there.
    MigrateToPostgres(cli::migrate::MigrateArgs),
    /// Move the events recorded before a time out of the live log into a zstd archive file,
    /// and shrink the live log (stopped data dir, or a shared database whose nodes are all
    /// stopped). `events`, `replay` and `verify` read the archives with --archive FILE.
    Archive(cli::archive::ArchiveArgs),
}

fn main() -> std::process::ExitCode {
    let args = parse_command_line();
    init_logging(args.log_format);
    // The multi-thread runtime with everything on, as `Runtime::new` builds it, plus the
    // allocator's hook for a worker going idle.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::on_worker_park)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wkuser: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match args.command {
            Cmd::Serve(config) => serve(config).await.map(|()| true),
            Cmd::Audit(a) => cli::read::audit(a).await.map(|()| true),
            Cmd::Events(a) => cli::read::events(a).await.map(|()| true),
            Cmd::Replay(a) => cli::rebuild::replay(a).await.map(|()| true),
            Cmd::Verify(a) => cli::rebuild::verify(a).await,
            Cmd::MigrateToPostgres(a) => cli::migrate::migrate(a).await.map(|()| true),
            Cmd::Archive(a) => cli::archive::archive(a).await.map(|()| true),
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
