//! The `wkuser-loadtest` command: loads a running `wkuser serve` over loopback and prints each
//! figure beside its ceiling, what the bare stack the server is built on does under the same
//! load in the same run ([`run`] has the phases).
//!
//! Owns process concerns only: parsing the command line, the allocator, the runtime, exit
//! codes. The hidden `ceiling` subcommand is the child process a run starts for its ceilings
//! ([`ceiling`]); nobody else calls it. Must never: be needed by the server (the server crate
//! does not depend on this one) or send load off the machine ([`target`] refuses it).

mod across;
mod ceiling;
mod cpu;
mod drive;
mod figures;
mod http;
mod measure;
mod report;
mod run;
mod scale;
mod seed;
mod sink;
mod soak;
mod target;
mod users;
mod ws;

use clap::{Parser, Subcommand};

use ceiling::CeilingArgs;
use run::LoadtestArgs;

/// The server's allocator (see the root `Cargo.toml`). The ceiling child runs on it too, so a
/// ratio compares the server's work with the bare stack's, not two allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wkuser-loadtest",
    version,
    about = "Load a running wkuser server over loopback and compare each figure with its ceiling",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    #[command(flatten)]
    run: LoadtestArgs,
}

#[derive(Subcommand)]
enum Child {
    /// The bare servers a run measures its ceilings on, in a process of their own.
    #[command(name = ceiling::CEILING_SUBCOMMAND, hide = true)]
    Ceiling(CeilingArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The same runtime as `wkuser serve`: the ceilings must not get a differently tuned one.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wkuser-loadtest: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.child {
            None => run::run(cli.run).await,
            Some(Child::Ceiling(a)) => ceiling::serve(a).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wkuser-loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
