//! The errors a newcomer met at the command line, each as they meet it: the real binary, its
//! whole stderr. A data directory a server holds, a wrong value from the environment, files
//! left beside a replay or a verify, the replay's progress, and `events` read two ways.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::cli::{dir, history, stderr, stdout, wkuser, wkuser_with_env};
use crate::helpers::*;
use crate::process::{start_node, start_node_with};

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_data_dir_a_server_holds_is_one_line_naming_it_and_what_to_do() {
    let app = spawn_app().await;
    let data = dir(&app);
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("then.sqlite").display().to_string();
    let held = format!("wkuser: data directory {data} is in use: another wkuser process holds it");
    for (args, remedy) in [
        (
            vec![
                "serve",
                "--data-dir",
                &data,
                "--api-addr",
                "127.0.0.1:0",
                "--ws-addr",
                "127.0.0.1:0",
            ],
            "stop it first",
        ),
        (
            vec!["events", "--data-dir", &data],
            "stop it first, or read through its API with --api ADDR",
        ),
        // Neither has --api: the way around the server is a copy.
        (
            vec!["replay", "--data-dir", &data, "--into", &into],
            "stop it first, or replay a copy of the data directory",
        ),
        (
            vec!["verify", "--data-dir", &data],
            "stop it first, or verify a copy of the data directory",
        ),
    ] {
        let run = wkuser(&args).await;
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert_eq!(stderr(&run), format!("{held} ({remedy})\n"), "{args:?}");
        assert_eq!(stdout(&run), "", "{args:?}");
    }
    assert_eq!(
        names_in(out.path()),
        Vec::<String>::new(),
        "replay made a file"
    );
    // `audit` reads the view, which a server lets readers share: no error at all.
    let audit = wkuser(&["audit", "u1", "--data-dir", &data]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
}

#[tokio::test]
async fn an_error_and_its_causes_are_each_said_once() {
    // A port nothing listens on: the client's error wraps reqwest's, which wraps hyper's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = closed.local_addr().unwrap().to_string();
    drop(closed);
    let run = wkuser(&["events", "--api", &api]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let said = stderr(&run);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with("wkuser: cannot reach http://"), "{said}");
    assert_eq!(
        said.matches("error sending request").count(),
        1,
        "a cause said twice: {said}"
    );
}

#[tokio::test]
async fn a_wrong_value_from_the_environment_is_named_by_its_variable() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data").display().to_string();
    for (variable, value, flag) in [
        ("WK_IDLE_TIMEOUT", "abc", "--idle-timeout"),
        ("WK_MAX_BODY_BYTES", "lots", "--max-body-bytes"),
        ("WK_API_ADDR", "nowhere", "--api-addr"),
        ("WK_NODE_ID", "-1", "--node-id"),
        ("WK_ALLOW_OPEN_API", "maybe", "--allow-open-api"),
    ] {
        let run = wkuser_with_env(&["serve", "--data-dir", &data_dir], &[(variable, value)]).await;
        assert_eq!(run.status.code(), Some(2), "{variable}: {}", stderr(&run));
        let said = stderr(&run);
        assert!(
            said.starts_with(&format!(
                "error: invalid value '{value}' for {variable} ({flag})"
            )),
            "{said}"
        );
        assert!(!said.contains(&format!("'{flag}")), "{said}");
    }
    // Given on the command line, the flag is what is named, as clap names it.
    let run = wkuser(&["serve", "--data-dir", &data_dir, "--idle-timeout", "abc"]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("error: invalid value 'abc' for '--idle-timeout <IDLE_TIMEOUT>'"),
        "{}",
        stderr(&run)
    );
    // The command line wins over the environment, and so it is not blamed on it.
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_dir, "--api-addr", "nowhere"],
        &[("WK_API_ADDR", "nowhere")],
    )
    .await;
    assert!(
        stderr(&run).starts_with("error: invalid value 'nowhere' for '--api-addr <API_ADDR>'"),
        "{}",
        stderr(&run)
    );
    // A value that parses but is refused later names the variable too.
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_dir],
        &[("WK_SLOW_READER_LIMIT", "0s")],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert_eq!(
        stderr(&run),
        "wkuser: --slow-reader-limit (WK_SLOW_READER_LIMIT) must be longer than zero\n"
    );
    assert!(
        !data.path().join("data").exists(),
        "a refused start made its data dir"
    );
}

/// Makes the view stand alone, its `-wal` folded in and removed with its `-shm`: this
/// connection is the only one to it, and SQLite removes them when the last one closes.
async fn fold_the_view(view: &Path) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(view)
        .connect()
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn replay_leaves_its_file_alone_and_verify_leaves_nothing() {
    // A server of its own process, stopped: no connection to its view is left in this one.
    let data = tempfile::tempdir().unwrap();
    let node = start_node(data.path()).await;
    let http = reqwest::Client::new();
    for (uid, flag) in [("u1", 1), ("u2", 2)] {
        let token = json!({"uid": uid, "token": "t", "device_flag": flag});
        node.post_ok(&http, "/user/token", token).await;
    }
    node.sigterm_and_wait().await;
    fold_the_view(&data.path().join("view.sqlite")).await;
    assert_eq!(names_in(data.path()), ["log", "view.sqlite"]);
    let data_dir = data.path().display().to_string();

    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("then.sqlite");
    let into_s = into.display().to_string();
    let done = wkuser(&["replay", "--data-dir", &data_dir, "--into", &into_s]).await;
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(names_in(out.path()), ["then.sqlite"]);
    // Read as any reader would, read-only too: it still stands alone, with the whole view.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{into_s}?mode=ro"))
        .await
        .unwrap();
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(tokens, 2);
    assert_eq!(names_in(out.path()), ["then.sqlite"]);

    // Its scratch database in a temporary directory of its own, to see that it goes too.
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().display().to_string();
    let run = wkuser_with_env(&["verify", "--data-dir", &data_dir], &[("TMPDIR", &tmp)]).await;
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("the view matches"),
        "{}",
        stdout(&run)
    );
    assert_eq!(names_in(data.path()), ["log", "view.sqlite"]);
    assert_eq!(names_in(scratch.path()), Vec::<String>::new());
}

#[tokio::test]
async fn events_through_the_api_print_the_lines_the_data_dir_prints() {
    let mut app = spawn_app().await;
    app.set_token("u1", "t1", 1, 0).await;
    app.set_token("u2", "t2", 2, 1).await;
    let (mut ws, answer) = app.ws_connect("u1", "t1", 1, "web_events").await;
    assert_connected(&answer);
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    app.wait_offline("u1").await;
    app.device_quit("u2", -1).await;

    let api = app.api.trim_start_matches("http://").to_owned();
    let through_api = wkuser(&["events", "--api", &api]).await;
    assert_eq!(
        through_api.status.code(),
        Some(0),
        "{}",
        stderr(&through_api)
    );
    let of_u1_api = wkuser(&["events", "--api", &api, "--uid", "u1"]).await;
    app.stop().await;
    let from_dir = wkuser(&["events", "--data-dir", &dir(&app)]).await;
    assert_eq!(from_dir.status.code(), Some(0), "{}", stderr(&from_dir));
    let of_u1_dir = wkuser(&["events", "--data-dir", &dir(&app), "--uid", "u1"]).await;

    let api_lines: Vec<String> = stdout(&through_api).lines().map(str::to_owned).collect();
    let dir_lines: Vec<String> = stdout(&from_dir).lines().map(str::to_owned).collect();
    // The stop recorded more after the API was read: what the API printed is where the
    // data dir's lines begin, to the byte.
    assert!(api_lines.len() >= 6, "{api_lines:?}");
    assert_eq!(dir_lines[..api_lines.len()], api_lines[..]);
    assert!(
        api_lines.iter().all(|l| l.starts_with(r#"{"seq":"#)),
        "{api_lines:?}"
    );
    assert_eq!(stdout(&of_u1_api), stdout(&of_u1_dir));
    assert_eq!(stdout(&of_u1_api).lines().count(), 3);
}

/// Runs the binary with its stderr on a terminal (a pseudo-terminal of 120 columns), as an
/// operator runs it; returns its exit code and what it wrote there.
async fn on_a_terminal(args: &[&str]) -> (Option<i32>, String) {
    crate::watchdog::arm();
    let (mut leader, mut follower) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the out-pointers are valid, no name buffer is asked for, and the sizes live
    // through the call.
    let made = unsafe {
        libc::openpty(
            &mut leader,
            &mut follower,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned these two descriptors, and nothing else owns them.
    let (leader, follower) =
        unsafe { (OwnedFd::from_raw_fd(leader), OwnedFd::from_raw_fd(follower)) };
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wkuser"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(follower))
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the binary runs");
    // The command keeps its copy of the terminal's far end: dropped, the child's is the
    // last, and the read below ends when the child does.
    drop(command);
    let read = tokio::task::spawn_blocking(move || {
        let mut said = Vec::new();
        let mut leader = std::fs::File::from(leader);
        let mut chunk = [0u8; 4096];
        loop {
            match leader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => said.extend_from_slice(&chunk[..n]),
                // Linux's answer once every far end is closed.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
                Err(e) => panic!("reading the terminal: {e}"),
            }
        }
        String::from_utf8_lossy(&said).into_owned()
    });
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap_or_else(|_| panic!("`wkuser {}` did not end within 60 s", args.join(" ")))
        .unwrap();
    (status.code(), read.await.unwrap())
}

/// Whether `text` holds a number with four or more decimals.
fn has_four_decimals(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes
        .windows(6)
        .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2..].iter().all(u8::is_ascii_digit))
}

#[tokio::test]
async fn replay_shows_its_progress_in_events_and_whole_percents() {
    assert!(has_four_decimals("1,234.5678/s") && !has_four_decimals("12 events (24%)"));
    let app = history().await;
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("then.sqlite").display().to_string();
    let events = wkuser(&["events", "--data-dir", &dir(&app)]).await;
    let total = stdout(&events).lines().count();
    let (code, said) = on_a_terminal(&["replay", "--data-dir", &dir(&app), "--into", &into]).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!("{total}/{total} events (100%)")),
        "no progress in: {said:?}"
    );
    assert!(!has_four_decimals(&said), "{said:?}");
}

/// A port another process holds is found before anything is opened: the start is refused in
/// one line naming the address, and the data directory it would have created is not there.
#[tokio::test]
async fn a_taken_port_is_refused_before_the_data_dir_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let data_arg = data.display().to_string();
    for (api, ws) in [
        (port.as_str(), "127.0.0.1:0"),
        ("127.0.0.1:0", port.as_str()),
    ] {
        let run = wkuser(&[
            "serve",
            "--data-dir",
            &data_arg,
            "--api-addr",
            api,
            "--ws-addr",
            ws,
        ])
        .await;
        let err = stderr(&run);
        assert!(!run.status.success(), "{err}");
        assert!(
            err.contains(&format!("cannot bind {port}")),
            "names the taken address: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!data.exists(), "no data directory was made: {err}");
    }
}

/// `--log-cache-mb` (`WK_LOG_CACHE_MB`) bounds the log's page cache. A size sled cannot take
/// (it panics below 256 bytes) or that overflows is one line naming both ways to set it,
/// before the data directory is made; a value that is no number is clap's error, naming the
/// variable it came from. The smallest cache it takes serves: the events of users written
/// well past 1 MiB of log are read back through the API, the first of them long evicted.
#[tokio::test]
async fn a_log_cache_out_of_bounds_is_one_line_and_the_smallest_serves() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let data_arg = data.display().to_string();
    let bound = "must be between 1 and 1048576 MiB";
    for value in ["0", "1048577"] {
        let run = wkuser(&["serve", "--data-dir", &data_arg, "--log-cache-mb", value]).await;
        assert_eq!(run.status.code(), Some(2), "{value}: {}", stderr(&run));
        assert_eq!(
            stderr(&run),
            format!("wkuser: --log-cache-mb (WK_LOG_CACHE_MB) {bound} (it is {value})\n")
        );
    }
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_arg],
        &[("WK_LOG_CACHE_MB", "0")],
    )
    .await;
    assert_eq!(
        stderr(&run),
        format!("wkuser: --log-cache-mb (WK_LOG_CACHE_MB) {bound} (it is 0)\n")
    );
    for value in ["-1", "64MB", ""] {
        let run = wkuser_with_env(
            &["serve", "--data-dir", &data_arg],
            &[("WK_LOG_CACHE_MB", value)],
        )
        .await;
        assert_eq!(run.status.code(), Some(2), "{value:?}: {}", stderr(&run));
        assert!(
            stderr(&run).starts_with(&format!(
                "error: invalid value '{value}' for WK_LOG_CACHE_MB (--log-cache-mb)"
            )),
            "{value:?}: {}",
            stderr(&run)
        );
    }
    assert!(!data.exists(), "a refused start made its data dir");

    let node = start_node_with(&data, "info", &["--log-cache-mb", "1"]).await;
    let http = reqwest::Client::new();
    // Each token event takes a few hundred bytes of log: 4,000 of them are well past 1 MiB.
    let users = 4_000;
    for chunk in (0..users).collect::<Vec<_>>().chunks(50) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let body = json!({"uid": format!("cache_{i:05}"), "token": format!("t{i}"),
                "device_flag": 1, "device_level": 1});
            node.post_ok(&http, "/user/token", body)
        }))
        .await;
    }
    let api = node.api.trim_start_matches("http://").to_owned();
    for uid in ["cache_00000", "cache_01999", "cache_03999"] {
        let run = wkuser(&["events", "--api", &api, "--uid", uid]).await;
        assert_eq!(run.status.code(), Some(0), "{uid}: {}", stderr(&run));
        let lines: Vec<String> = stdout(&run).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 1, "{uid}: {lines:?}");
        assert!(lines[0].contains(uid), "{uid}: {lines:?}");
    }
    node.sigterm_and_wait().await;
    let log_bytes = dir_size(&data.join("log"));
    assert!(log_bytes > 1 << 20, "the log holds only {log_bytes} bytes");
}

/// The bytes of the files under `dir`, recursively.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// `--view-cache-mb` (`WK_VIEW_CACHE_MB`) bounds the SQL view's page cache: zero, or more than
/// SQLite can take, is one line naming both ways to set it, before the data directory is made;
/// the smallest serves the view's reads.
#[tokio::test]
async fn a_view_cache_out_of_bounds_is_one_line_and_the_smallest_serves() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let data_arg = data.display().to_string();
    let bound = "must be between 1 and 65536 MiB";
    for value in ["0", "65537"] {
        let run = wkuser(&["serve", "--data-dir", &data_arg, "--view-cache-mb", value]).await;
        assert_eq!(run.status.code(), Some(2), "{value}: {}", stderr(&run));
        assert_eq!(
            stderr(&run),
            format!("wkuser: --view-cache-mb (WK_VIEW_CACHE_MB) {bound} (it is {value})\n")
        );
    }
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_arg],
        &[("WK_VIEW_CACHE_MB", "0")],
    )
    .await;
    assert_eq!(
        stderr(&run),
        format!("wkuser: --view-cache-mb (WK_VIEW_CACHE_MB) {bound} (it is 0)\n")
    );
    assert!(!data.exists(), "a refused start made its data dir");

    let node = start_node_with(&data, "info", &["--view-cache-mb", "1"]).await;
    let http = reqwest::Client::new();
    let body = json!({"uid": "small", "token": "t", "device_flag": 1, "device_level": 1});
    node.post_ok(&http, "/user/token", body).await;
    let resp = http
        .get(format!("{}/user/sessions?uid=small", node.api))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    node.sigterm_and_wait().await;
}
