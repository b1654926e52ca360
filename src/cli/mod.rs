//! The operator commands of the `wkuser` binary: `audit`, `events`, `replay`, `verify`,
//! `migrate-to-postgres` and `archive`, one file each kind (reading, rebuilding, moving).
//!
//! Owns their command-line arguments, their progress bars and what they print; the work itself
//! is in the library's `ops` module. Must never hold logic an operator could not also reach
//! through the library (the tests drive the binary, but the rules live in `ops`).

pub mod archive;
pub mod migrate;
pub mod read;
pub mod rebuild;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use wkuser::log::EventLog;
use wkuser::ops::{open_stopped_log, shared};

#[derive(Args)]
pub struct ArchivesArg {
    /// An archive of this log (written by `wkuser archive --out FILE`), read before the live
    /// log. Repeat it for each archive; replay and verify need every archive of the log.
    #[arg(long = "archive", value_name = "FILE")]
    pub archives: Vec<PathBuf>,
}

#[derive(Args)]
pub struct SharedArg {
    /// Read the log and view that several nodes share in this PostgreSQL database
    /// (postgres://...) instead of the data dir.
    #[arg(long, env = "WK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Args)]
pub struct DataDirArg {
    /// The data directory.
    #[arg(long, env = "WK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Args)]
pub struct RemoteArgs {
    /// Read through a running server's API (e.g. 127.0.0.1:5001) instead of the data dir.
    #[arg(long, conflicts_with = "database_url")]
    pub api: Option<String>,
    /// The manager token of that server, if it has one.
    #[arg(long, env = "WK_MANAGER_TOKEN", hide_env_values = true)]
    pub manager_token: Option<String>,
}

/// The log a command reads: the shared one with `--database-url`, else the stopped data
/// directory's, with `in_use` saying what to do when a server holds it.
async fn open_log(
    shared: &SharedArg,
    data: &DataDirArg,
    in_use: &'static str,
) -> anyhow::Result<EventLog> {
    Ok(match &shared.database_url {
        Some(url) => shared::open_shared_log(url).await?,
        None => {
            let dir = &data.data_dir;
            open_stopped_log(dir)
                .await
                .map_err(|e| e.in_data_dir(dir, in_use))?
        }
    })
}

/// A progress bar on stderr, made at the first report (when the total is known), and only
/// when stderr is a terminal: a log file gets the summary line alone.
#[derive(Default)]
pub struct Progress(RefCell<Option<Option<indicatif::ProgressBar>>>);

impl Progress {
    /// Shows `at` of `total`, after `doing` when it is not empty.
    pub fn report(&self, doing: &str, at: u64, total: u64) {
        let mut bar = self.0.borrow_mut();
        if let Some(b) = bar.get_or_insert_with(|| new_bar(total)).as_ref() {
            b.set_position(at);
            let done = wkuser::human::progress(at, total);
            b.set_message(if doing.is_empty() {
                done
            } else {
                format!("{doing}: {done}")
            });
        }
    }

    /// Clears the bar, before the command prints its summary.
    pub fn finish(&self) {
        if let Some(Some(b)) = self.0.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}

fn new_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    // Not indicatif's `{per_sec}`: it shows four decimals of events per second.
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {msg}  eta {eta}")
            .expect("a valid template"),
    );
    Some(bar)
}
