//! `wkuser migrate-to-postgres`: a stopped single node's log moved into an empty PostgreSQL
//! database, and the shared view built there (the work is `wkuser::ops::migrate`).
//!
//! Owns the arguments, the progress bar and the summary line. Must never touch the data
//! directory beyond reading it.

use std::path::PathBuf;

use clap::Args;
use wkuser::domain::Seq;
use wkuser::ops::migrate::{self, Stage};

use super::Progress;

#[derive(Args)]
pub struct MigrateArgs {
    /// The stopped node's data directory, whose log moves.
    #[arg(long, env = "WK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The empty PostgreSQL database to move it into (postgres://...).
    #[arg(long, env = "WK_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

pub async fn migrate(a: MigrateArgs) -> anyhow::Result<()> {
    let bar = Progress::default();
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
            bar.report("moving the log", from.0, end.0);
        },
        |stage, seq| {
            let doing = match stage {
                Stage::Moving => "moving the log",
                Stage::Projecting => "building the view",
            };
            bar.report(doing, seq.0, total.get());
        },
    )
    .await;
    bar.finish();
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
