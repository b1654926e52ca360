//! `wkuser archive`: the events recorded before a time moved out of the live log into a zstd
//! archive file (the work is `wkuser::ops::archive`; protocol section 10).
//!
//! Owns the arguments, the progress bar, the summary line, and the test-only pause that lets a
//! test kill the run at each step. Must never run against a log a server holds (the library
//! refuses it).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wkuser::domain::Seq;
use wkuser::ops::archive::{self as archive_run, ArchiveRequest, Outcome};

use super::{DataDirArg, Progress, SharedArg};

#[derive(Args)]
pub struct ArchiveArgs {
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

/// Set to a step's name (`archive-writing`, `archive-written`, `rewrite-built`,
/// `log-moved-aside`, `rewrite-in-place`, `swapped`; `range-dropped` on a shared database),
/// `wkuser archive` stops there and waits to be killed: for the tests of a crash at each point
/// of the run. Not for operators.
const ARCHIVE_PAUSE_AT: &str = "WK_TEST_ARCHIVE_PAUSE_AT";

pub async fn archive(a: ArchiveArgs) -> anyhow::Result<()> {
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
    let bar = Progress::default();
    let progress = |at: Seq, upto: Seq| bar.report("archiving", at.0, upto.0);
    let request = ArchiveRequest {
        before_ms,
        before: &a.before,
        out: &a.out,
    };
    let outcome = match &a.shared.database_url {
        Some(url) => archive_run::archive_shared(url, &request, step, progress).await,
        None => archive_run::archive_data_dir(&a.data.data_dir, &request, step, progress).await,
    };
    bar.finish();
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
