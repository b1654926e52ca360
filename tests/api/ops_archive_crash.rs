//! `wkuser archive` killed (SIGKILL) at each of its steps and at moments no step names, then
//! run again: nothing is lost and nothing doubled across the archive and the live log, and a
//! start and `verify --archive` agree (protocol.md section 10).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{stderr, stdout, wkuser};
use crate::helpers::*;
use crate::ops_archive::{archive, events, lines, many_events, ok, path};

/// Copies a stopped data directory.
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .args(["-a", &path(from), &path(to)])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `wkuser archive`, paused at `step` (or after `delay` when no step is named), then
/// kills it with SIGKILL.
async fn archive_killed(dir: &Path, cut: &str, out: &Path, step: Option<&str>, delay: Duration) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wkuser"));
    cmd.args([
        "archive",
        "--data-dir",
        &path(dir),
        "--before",
        cut,
        "--out",
        &path(out),
    ])
    .env("RUST_LOG", "warn")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    if let Some(step) = step {
        cmd.env("WK_TEST_ARCHIVE_PAUSE_AT", step);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    match step {
        Some(step) => {
            let want = format!("archive paused at {step}");
            let seen = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some(line) = lines.next_line().await.unwrap() {
                    if line.contains(&want) {
                        return true;
                    }
                }
                false
            })
            .await
            .expect("the archive reaches its pause point within 60 s");
            assert!(seen, "the archive ended without pausing at {step}");
        }
        None => tokio::time::sleep(delay).await,
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// After a killed run: the rerun finishes (or finds it finished), nothing is lost or doubled
/// across the archive and the live log, and a start and `verify --archive` agree.
async fn finish_and_check(dir: &Path, cut: &str, out: &Path, all: &[String], case: &str) {
    let rerun = archive(dir, cut, out).await;
    assert_eq!(rerun.status.code(), Some(0), "{case}: {}", stderr(&rerun));
    let a = path(out);
    let read = lines(&events(dir, &["--archive", &a]).await);
    assert_eq!(read.len(), all.len(), "{case}: as many events as before");
    assert_eq!(read, all, "{case}: the same events, once each, in order");
    let mut app = start_on(dir, vec![]).await;
    app.stop().await;
    let verified = wkuser(&["verify", "--data-dir", &path(dir), "--archive", &a]).await;
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{case}: {}{}",
        stdout(&verified),
        stderr(&verified)
    );
}

#[tokio::test]
async fn an_archive_killed_at_any_point_loses_nothing_and_doubles_nothing() {
    let (app, cut) = many_events(1000).await;
    let all = lines(&events(&app.data_dir, &[]).await);
    let tmp = tempfile::tempdir().unwrap();
    let steps = [
        "archive-writing",
        "archive-written",
        "rewrite-built",
        "log-moved-aside",
        "rewrite-in-place",
    ];
    for step in steps {
        let dir = tmp.path().join(step);
        copy_dir(&app.data_dir, &dir);
        let out = tmp.path().join(format!("{step}.zst"));
        archive_killed(&dir, &cut, &out, Some(step), Duration::ZERO).await;
        finish_and_check(&dir, &cut, &out, &all, step).await;
    }
    // And at moments no pause point names: spread over a run's length.
    let timing_dir = tmp.path().join("timing");
    copy_dir(&app.data_dir, &timing_dir);
    let started = std::time::Instant::now();
    ok(&archive(&timing_dir, &cut, &tmp.path().join("timing.zst")).await);
    let run = started.elapsed();
    let seed = now_ms() as u64;
    for i in 0..4u64 {
        let delay = run
            .mul_f64(((seed.wrapping_mul(2654435761).wrapping_add(i * 97)) % 100) as f64 / 100.0);
        let dir = tmp.path().join(format!("random{i}"));
        copy_dir(&app.data_dir, &dir);
        let out = tmp.path().join(format!("random{i}.zst"));
        archive_killed(&dir, &cut, &out, None, delay).await;
        finish_and_check(&dir, &cut, &out, &all, &format!("killed after {delay:?}")).await;
    }
}
