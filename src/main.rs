//! The `wkuser` command: `serve` runs the server; the operator commands come beside it.
//!
//! Owns process concerns only: parsing the command line, the log subscriber (`RUST_LOG`), the
//! signals that stop the server. Everything else is in the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: HTTP API and WebSocket gateway over the data directory.
    Serve(Config),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Cmd::Serve(config) => runtime.block_on(serve(config)),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config)
        .await
        .context("wkuser could not start")?;
    wait_for_stop_signal().await;
    tracing::info!("stopping: closing sessions and flushing");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
