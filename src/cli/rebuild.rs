//! `wkuser replay` and `wkuser verify`: the SQL view rebuilt from the log (and its archives),
//! into a new file or into a temporary database compared with the live view.
//!
//! Owns their arguments, progress bars and verdict lines; `verify`'s exit code says whether the
//! view matches (0) or differs (1). Must never write to the live log or the live view.

use std::path::PathBuf;

use clap::Args;
use wkuser::domain::Seq;
use wkuser::ops::replay::{self, Until};
use wkuser::ops::{open_stopped_log, shared};

use super::{open_log, ArchivesArg, DataDirArg, Progress, SharedArg};

#[derive(Args)]
pub struct ReplayArgs {
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

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    archives: ArchivesArg,
}

/// What to do about a data directory a server holds.
const REPLAY_IN_USE: &str = "stop it first, or replay a copy of the data directory";
const VERIFY_IN_USE: &str = "stop it first, or verify a copy of the data directory";

pub async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    let until = match (a.until_seq, &a.until_time) {
        (Some(s), _) => Until::Seq(Seq(s)),
        (None, Some(t)) => Until::Time(
            wkuser::human::parse_rfc3339_ms(t)
                .ok_or_else(|| anyhow::anyhow!("--until-time {t:?} is not an RFC 3339 time"))?,
        ),
        (None, None) => Until::End,
    };
    let log = open_log(&a.shared, &a.data, REPLAY_IN_USE).await?;
    let total = match until {
        Until::Seq(s) => s.0.min(log.last_durable().0),
        _ => log.last_durable().0,
    };
    let bar = Progress::default();
    let report = replay::replay_into_file_with(&log, &a.into, until, &a.archives.archives, |seq| {
        bar.report("", seq.0, total)
    })
    .await;
    bar.finish();
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

/// Whether the live view matches a rebuild of the log.
pub async fn verify(a: VerifyArgs) -> anyhow::Result<bool> {
    let shared = a.shared.database_url.is_some();
    // The bar's end is known once the live view's checkpoint is read: it is made then.
    let bar = Progress::default();
    let progress = |seq: Seq, total: Seq| bar.report("rebuilding the view", seq.0, total.0);
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
    bar.finish();
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
