//! The operator commands, run as a newcomer runs them: the real binary on a stopped data
//! directory (`verify`, `replay`, `events`, `audit`), and `events --api` against a running
//! server, whose data directory the binary must not open itself.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::process::serve_refused;

/// Runs the binary to its end, within a minute: past that, the test fails with the stacks of
/// the binary's threads, and the binary is killed.
pub(crate) async fn wkuser(args: &[&str]) -> Output {
    wkuser_with_env(args, &[]).await
}

/// [`wkuser`] with these environment variables set too.
pub(crate) async fn wkuser_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    crate::watchdog::arm();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wkuser"))
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let pid = child
        .id()
        .expect("a child that has not been waited for has a pid");
    let mut run = std::pin::pin!(child.wait_with_output());
    match tokio::time::timeout(Duration::from_secs(60), &mut run).await {
        Ok(output) => output.expect("the binary's output is read"),
        Err(_) => panic!(
            "`wkuser {}` did not end within 60 s; its threads:\n{}",
            args.join(" "),
            crate::watchdog::stacks(pid)
        ),
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a command's exit code, showing what it printed when it is another.
#[track_caller]
pub(crate) fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}{}", stdout(o), stderr(o));
}

/// A stopped data directory with a little history: u1 has a token on flag 1 (iOS) and one
/// closed session; u2 has a token.
pub(crate) async fn history() -> TestApp {
    let mut app = spawn_app().await;
    app.set_token("u1", "cli-secret-1", 1, 0).await;
    app.set_token("u2", "cli-secret-2", 2, 0).await;
    // Later events get a later recorded_at (milliseconds), for the point-in-time replay.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (mut ws, answer) = app.ws_connect("u1", "cli-secret-1", 1, "web_cli").await;
    assert_connected(&answer);
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    app.stop().await;
    app
}

pub(crate) fn dir(app: &TestApp) -> String {
    app.data_dir.display().to_string()
}

#[tokio::test]
async fn verify_passes_on_a_faithful_view_and_fails_on_a_tampered_one() {
    let app = history().await;
    let ok = wkuser(&["verify", "--data-dir", &dir(&app)]).await;
    assert_exit(&ok, 0);
    assert!(
        stdout(&ok).contains("the view matches a rebuild of the log"),
        "{}",
        stdout(&ok)
    );

    tamper(&app.data_dir.join("view.sqlite")).await;
    let bad = wkuser(&["verify", "--data-dir", &dir(&app)]).await;
    assert_exit(&bad, 1);
    let said = stdout(&bad);
    assert!(
        said.contains("device_sessions: only in the first"),
        "{said}"
    );
    assert!(said.contains("'replaced'"), "{said}");
    assert!(
        said.contains("differences between the live view and a rebuild"),
        "{said}"
    );
}

#[tokio::test]
async fn verify_refuses_a_data_dir_without_a_view_and_creates_none() {
    let app = history().await;
    let view = app.data_dir.join("view.sqlite");
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", view.display()));
    }
    let run = wkuser(&["verify", "--data-dir", &dir(&app)]).await;
    assert_exit(&run, 2);
    let said = format!(
        "no SQL view at {}: nothing to verify; start the server once to build it",
        view.display()
    );
    assert!(stderr(&run).contains(&said), "{}", stderr(&run));
    assert!(!stdout(&run).contains("matches"), "{}", stdout(&run));
    let views: Vec<_> = std::fs::read_dir(&app.data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("view.sqlite"))
        .collect();
    assert_eq!(views, Vec::<String>::new(), "verify created a view");
}

#[tokio::test]
async fn verify_and_audit_name_a_view_of_another_schema_instead_of_migrating_it() {
    let app = history().await;
    let view = app.data_dir.join("view.sqlite");
    // As a view written before this build's first migration was recorded would be.
    record_migrations(&view, &[]).await;
    let older = format!(
        "the SQL view at {} has schema version 0, older than this wkuser's 2",
        view.display()
    );
    for args in [vec!["verify"], vec!["audit", "u1"]] {
        let run = wkuser(&[&args[..], &["--data-dir", &dir(&app)]].concat()).await;
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert!(stderr(&run).contains(&older), "{args:?}: {}", stderr(&run));
        assert!(
            stderr(&run).contains("start the server once to bring it up to date"),
            "{}",
            stderr(&run)
        );
    }
    assert_eq!(
        applied_migrations(&view).await,
        Vec::<i64>::new(),
        "left as it was"
    );

    // As a view from a newer wkuser, with a migration this one does not know.
    record_migrations(&view, &[1, 99]).await;
    let run = wkuser(&["verify", "--data-dir", &dir(&app)]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let newer = format!(
        "the SQL view at {} has schema version 99, newer than this wkuser's 2",
        view.display()
    );
    assert!(stderr(&run).contains(&newer), "{}", stderr(&run));
}

async fn tamper(view: &Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE device_sessions SET reason = 'replaced'")
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;
}

#[tokio::test]
async fn replay_rebuilds_up_to_a_seq_into_a_fresh_file_only() {
    let app = history().await;
    let out_dir = tempfile::tempdir().unwrap();
    let into = out_dir.path().join("then.sqlite");
    let into_s = into.display().to_string();
    let done = wkuser(&[
        "replay",
        "--data-dir",
        &dir(&app),
        "--into",
        &into_s,
        "--until-seq",
        "3",
    ])
    .await;
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("replayed 3 events (up to seq 3)"),
        "{}",
        stderr(&done)
    );
    // Seq 1 NodeStarted, 2 and 3 the two tokens: the view of then has both tokens, no session.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{into_s}"))
        .await
        .unwrap();
    let (tokens, sessions, checkpoint): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM device_sessions), \
         (SELECT last_seq FROM projector_checkpoint)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!((tokens, sessions, checkpoint), (2, 0, 3));

    let again = wkuser(&["replay", "--data-dir", &dir(&app), "--into", &into_s]).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("exists; replay writes only into a fresh database"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn events_and_audit_read_a_stopped_data_dir() {
    let app = history().await;
    let events = wkuser(&["events", "--data-dir", &dir(&app), "--uid", "u1"]).await;
    assert_eq!(events.status.code(), Some(0), "{}", stderr(&events));
    let lines: Vec<Value> = stdout(&events)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["TokenUpdated", "Connected", "Disconnected"]);
    assert!(lines.iter().all(|e| e["data"]["uid"] == "u1"));
    assert!(
        !stdout(&events).contains("cli-secret"),
        "events carry hashes, never tokens"
    );

    let audit = wkuser(&["audit", "u1", "--data-dir", &dir(&app)]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    let table = stdout(&audit);
    assert!(table.starts_with("uid u1: offline\n"), "{table}");
    for expected in [
        "SESSION",
        "iOS",
        "web_cli",
        "slave",
        "client_closed",
        "127.0.0.1:",
    ] {
        assert!(
            table.contains(expected),
            "{expected} missing from:\n{table}"
        );
    }
}

#[tokio::test]
async fn audit_of_the_view_reports_a_session_older_than_its_page_as_online() {
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    // The oldest session stays open; two newer ones on the same flag close.
    let (_kept, answer) = app.ws_connect("u1", "t", 1, "phone").await;
    assert_connected(&answer);
    for device in ["web_a", "web_b"] {
        let (mut ws, answer) = app.ws_connect("u1", "t", 1, device).await;
        assert_connected(&answer);
        ws.close(None).await.unwrap();
        let _ = close_code(&mut ws).await;
    }
    app.view_caught_up().await;
    // Read from the view beside the running server, one session per page: the page holds
    // only closed sessions, the status still names the open one.
    let audit = wkuser(&["audit", "u1", "--data-dir", &dir(&app), "--limit", "1"]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    let table = stdout(&audit);
    assert!(
        table.starts_with("uid u1: online on iOS (flag 1)\n"),
        "{table}"
    );
    assert!(
        table.contains("web_b") && !table.contains("phone"),
        "{table}"
    );
}

/// The device names the status line of an `audit` table says the user is online on.
fn status_names(table: &str) -> std::collections::BTreeSet<String> {
    let status = table.lines().next().unwrap_or_default();
    match status.split_once(": online on ") {
        None => {
            assert!(status.ends_with(": offline"), "{table}");
            Default::default()
        }
        Some((_, flags)) => flags
            .split(", ")
            .map(|f| f.split(" (flag ").next().unwrap().to_owned())
            .collect(),
    }
}

/// The device names of the sessions an `audit` table's page shows open.
fn open_on_page(table: &str) -> std::collections::BTreeSet<String> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("SESSION"))
        .skip(1)
        .filter(|l| l.ends_with("(open)"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_beside_a_busy_server_shows_a_status_that_agrees_with_its_page() {
    use tokio::time::timeout;
    const FIVE_S: Duration = Duration::from_secs(5);
    let app = spawn_app().await;
    // Two devices connect and close in a loop, each on its own flag: the projector commits
    // all along, so a run whose reads were not one snapshot shows a session open on the page
    // that the status no longer has, or the reverse.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut churns = Vec::new();
    for (flag, token) in [(1, "t1"), (3, "t3")] {
        app.set_token("u1", token, flag, 0).await;
        let (ws_url, stop) = (app.ws.clone(), stop.clone());
        churns.push(tokio::spawn(async move {
            let mut cycles = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (mut ws, _) = timeout(FIVE_S, tokio_tungstenite::connect_async(&ws_url))
                    .await
                    .expect("the upgrade is answered within 5 s")
                    .unwrap();
                let device = format!("churn{flag}_{cycles}");
                send_text(
                    &mut ws,
                    easy_connect("u1", token, &device, flag, now_ms(), "c"),
                )
                .await;
                let answer: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
                assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
                timeout(FIVE_S, ws.close(None))
                    .await
                    .expect("the close is sent within 5 s")
                    .unwrap();
                let _ = close_code(&mut ws).await;
                cycles += 1;
            }
            cycles
        }));
    }
    // At most a session or two per device is open at once, always among the newest: a page of
    // 20 holds every open one, so in one snapshot the status and the page name the same
    // devices.
    for run in 0..150 {
        let audit = wkuser(&["audit", "u1", "--data-dir", &dir(&app), "--limit", "20"]).await;
        assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
        let table = stdout(&audit);
        assert_eq!(
            status_names(&table),
            open_on_page(&table),
            "run {run}: the status and the page disagree:\n{table}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for churn in churns {
        let cycles = timeout(Duration::from_secs(30), churn)
            .await
            .expect("each device ends its cycle within 30 s")
            .unwrap();
        assert!(cycles > 0, "the devices connected meanwhile");
    }
}

#[tokio::test]
async fn a_running_server_is_read_through_its_api() {
    let app = spawn_app_with(&["--manager-token", "m"]).await;
    app.set_token_with_manager("u9", "t9").await;
    let locked = wkuser(&["events", "--data-dir", &dir(&app)]).await;
    assert_eq!(locked.status.code(), Some(2));
    assert!(
        stderr(&locked).contains("read through its API with --api ADDR"),
        "{}",
        stderr(&locked)
    );

    let api = app.api.trim_start_matches("http://").to_owned();
    let remote = wkuser(&[
        "events",
        "--api",
        &api,
        "--manager-token",
        "m",
        "--uid",
        "u9",
    ])
    .await;
    assert_eq!(remote.status.code(), Some(0), "{}", stderr(&remote));
    let lines: Vec<Value> = stdout(&remote)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "TokenUpdated");
    let refused = wkuser(&["events", "--api", &api, "--manager-token", "wrong"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let audit = wkuser(&["audit", "u9", "--api", &api, "--manager-token", "m"]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
    assert!(
        stdout(&audit).contains("running server at"),
        "{}",
        stdout(&audit)
    );
}

impl TestApp {
    async fn set_token_with_manager(&self, uid: &str, token: &str) {
        let resp = self
            .http
            .post(self.url("/user/token"))
            .header("token", "m")
            .body(serde_json::json!({"uid": uid, "token": token, "device_flag": 1}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn replay_until_a_time_shows_the_view_as_it_was_then() {
    let app = history().await;
    let events = wkuser(&["events", "--data-dir", &dir(&app)]).await;
    let events: Vec<Value> = stdout(&events)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The time of the second token update: everything recorded up to then, nothing after.
    let at = events[2]["recorded_at"].as_i64().unwrap();
    let expected = events
        .iter()
        .filter(|e| e["recorded_at"].as_i64().unwrap() <= at)
        .map(|e| e["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let into = out_dir.path().join("then.sqlite").display().to_string();
    let time = wkuser::human::format_ms(at);
    let done = wkuser(&[
        "replay",
        "--data-dir",
        &dir(&app),
        "--into",
        &into,
        "--until-time",
        &time,
    ])
    .await;
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{into}"))
        .await
        .unwrap();
    let checkpoint: i64 = sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(checkpoint as u64, expected);
    assert!(
        expected < events.len() as u64,
        "the replay stopped before the end"
    );

    let bad = wkuser(&[
        "replay",
        "--data-dir",
        &dir(&app),
        "--into",
        &into,
        "--until-time",
        "noon",
    ])
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("is not an RFC 3339 time"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn serve_refuses_a_zero_idle_limit_instead_of_closing_every_session_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = serve_refused(dir.path(), &["--idle-timeout", "0s"]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("--idle-timeout (WK_IDLE_TIMEOUT) must be longer than zero"),
        "{}",
        stderr(&run)
    );
}

#[tokio::test]
async fn serve_refuses_a_time_limit_past_a_year_instead_of_panicking_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Before this was refused, every WebSocket connection's task panicked on its deadline.
    let run = serve_refused(
        dir.path(),
        &["--first-frame-timeout", "18000000000000000000s"],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("--first-frame-timeout (WK_FIRST_FRAME_TIMEOUT) must be at most"),
        "{}",
        stderr(&run)
    );
}
