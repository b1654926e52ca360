//! The load tool run as an operator runs it: the real `wkuser-loadtest` binary (which starts its
//! own ceiling process) against the real server, started here on port 0 over real sockets.

use std::process::Output;
use std::time::Duration;

use wkuser::app::Server;
use wkuser::config::Config;

/// Runs the tool to its end, within a minute: past that, the test fails (and the tool, with its
/// ceiling child, is killed).
async fn loadtest(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wkuser-loadtest"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`wkuser-loadtest {}` did not end within 60 s",
                args.join(" ")
            )
        })
        .expect("the binary's output is read")
}

/// A short run of the tool against `api` and `ws` (comma-separated lists for several nodes):
/// small phases, a slow churn and few clients, so that a test takes seconds; `extra` adds the
/// test's own options. Returns its stdout, once it has exited 0.
async fn small_run(api: &str, ws: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--api",
        api,
        "--ws",
        ws,
        "--measure-time",
        "400ms",
        "--churn-rate",
        "20",
        "--status-clients",
        "2",
        "--concurrency",
        "8",
    ];
    args.extend_from_slice(extra);
    let run = loadtest(&args).await;
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(0), "{out}{}", stderr(&run));
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_load_tool_runs_end_to_end_and_leaves_every_session_closed() {
    let (server, _dir) = start_server().await;
    let (api, ws) = (server.api_addr().to_string(), server.ws_addr().to_string());
    let out = small_run(&api, &ws, &["--users", "40", "--duration", "1s"]).await;
    for figure in [
        "durable connects/s (opening 40 at once)",
        "onlinestatus/s (100 uids, no churn)",
        "  against the better ceiling run instead",
        "the ceiling in the slices between",
        "server RSS per idle connection",
        "leaving: 40 sessions dropped at once; the server had recorded every close",
    ] {
        assert!(out.contains(figure), "no {figure:?} in:\n{out}");
    }
    assert!(!out.contains("errors, "), "{out}");
    // Its users are the server's now: 40 who connected, 100 who only got a token.
    let stats: serde_json::Value = reqwest::get(format!("http://{api}/stats"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["online_sessions"], 0, "{stats}");
    assert_eq!(stats["known_users"], 140, "{stats}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_load_tool_refuses_a_phase_longer_than_a_day_before_it_starts() {
    for flag in ["--duration", "--measure-time", "--phase-limit"] {
        let run = loadtest(&[flag, "18000000000000000000s"]).await;
        assert_eq!(run.status.code(), Some(2), "{flag}: {}", stderr(&run));
        let said = format!("{flag} must be at most a day");
        assert!(stderr(&run).contains(&said), "{}", stderr(&run));
    }
}

/// A server of its own on a fresh data directory (kept in the returned `TempDir`).
async fn start_server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let config = Config::from_args([
        "--data-dir",
        data.as_str(),
        "--api-addr",
        "127.0.0.1:0",
        "--ws-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    (Server::start(config).await.unwrap(), dir)
}

async fn stats(api: &str) -> serde_json::Value {
    reqwest::get(format!("http://{api}/stats"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn known_users_and_their_sessions_are_seeded_and_a_rerun_sends_only_the_missing_ones() {
    let (server, dir) = start_server().await;
    let (api, ws) = (server.api_addr().to_string(), server.ws_addr().to_string());
    // A run stopped midway, as the seeder's own uids: users 0 to 299 but 100.
    let client = reqwest::Client::new();
    let sent = futures_util::future::join_all((0..300).filter(|&i| i != 100).map(|i| {
        client
            .post(format!("http://{api}/user/token"))
            .body(format!(
                r#"{{"uid":"load_{i:06}","token":"kt-{i}","device_flag":1}}"#
            ))
            .send()
    }))
    .await;
    assert!(sent.into_iter().all(|r| r.unwrap().status() == 200));
    let before = stats(&api).await;
    assert_eq!(before["known_users"], 299, "{before}");
    let data = dir.path().display().to_string();
    let seed = |n: &'static str, sessions: &'static str| {
        let (api, ws, data) = (api.clone(), ws.clone(), data.clone());
        async move {
            loadtest(&[
                "--api",
                &api,
                "--ws",
                &ws,
                "--known-users",
                n,
                "--seed-only",
                "--seed-connections",
                "4",
                "--seed-pipeline",
                "3",
                "--seed-sessions",
                sessions,
                "--data-dir",
                &data,
            ])
            .await
        }
    };
    let run = seed("400", "0").await;
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(0), "{out}{}", stderr(&run));
    for line in [
        "known users: 299 of 400 already there",
        "seeding 101, 4 connections x 3 pipelined",
        "seeded 101 in",
        ", 0 errors",
        "with 400 known users and 0 sessions open: ",
        " B per known user (",
        " B per user above the ",
        "disk: log ",
        " B per event; view ",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    // Exactly the hole and the users after the last one there were sent: one event each.
    let after = stats(&api).await;
    assert_eq!(after["known_users"], 400, "{after}");
    let last_seq = |s: &serde_json::Value| s["last_seq"].as_u64().unwrap();
    assert_eq!(last_seq(&after) - last_seq(&before), 101, "{after}");
    // Once more: nothing left to send.
    let again = seed("400", "0").await;
    let out = stdout(&again);
    assert_eq!(again.status.code(), Some(0), "{out}{}", stderr(&again));
    assert!(
        out.contains("known users: 400 of 400 already there"),
        "{out}"
    );
    assert_eq!(last_seq(&stats(&api).await), last_seq(&after));
    // Sessions of theirs, opened and closed: a Connected and a Disconnected each.
    let with_sessions = seed("400", "50").await;
    let out = stdout(&with_sessions);
    assert_eq!(
        with_sessions.status.code(),
        Some(0),
        "{out}{}",
        stderr(&with_sessions)
    );
    assert!(out.contains("sessions:   opened and closed 50 in"), "{out}");
    assert!(out.contains(", 0 errors"), "{out}");
    let now = stats(&api).await;
    assert_eq!(last_seq(&now) - last_seq(&after), 100, "{now}");
    assert_eq!(now["online_sessions"], 0, "{now}");
    // A rerun finds their events in the log and opens none.
    let rerun = seed("400", "50").await;
    let out = stdout(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "{out}{}", stderr(&rerun));
    assert!(out.contains("none opened"), "{out}");
    assert_eq!(last_seq(&stats(&api).await), last_seq(&now));
    server.shutdown().await;
}

#[tokio::test]
async fn a_short_soak_prints_every_window_and_its_verdicts() {
    let (server, dir) = start_server().await;
    let (api, ws) = (server.api_addr().to_string(), server.ws_addr().to_string());
    let data = dir.path().display().to_string();
    let out = small_run(
        &api,
        &ws,
        &[
            "--users",
            "30",
            "--known-users",
            "200",
            "--soak",
            "4s",
            "--soak-window",
            "2s",
            "--data-dir",
            &data,
        ],
    )
    .await;
    // Each window once as it ends, once in the closing table.
    for window in ["window   1 (", "window   2 ("] {
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(window)).collect();
        assert_eq!(lines.len(), 2, "{window:?} in:\n{out}");
        for line in lines {
            for field in [
                " s): RSS ",
                " MiB | connect ",
                "/s p99 ",
                " p999 ",
                " | close ",
                " | onlinestatus ",
                "x p99 ",
                " errors / ",
                " skipped | CPUs ",
                // when the window's slowest operations were sent, to look up in the server's
                // log: both churned, so neither is "-"
                "% | slowest connect ",
                " ms at 20",
                "Z, close ",
            ] {
                assert!(line.contains(field), "no {field:?} in {line}");
            }
        }
    }
    assert!(!out.contains("window   3 ("), "{out}");
    for line in [
        "== wkuser-loadtest soak: 30 sessions held, churn 20/s, 2 windows of 2s",
        "ceiling under the same churn: onlinestatus ",
        "onlinestatus/s against the ceiling under the same churn: ",
        "RSS grows <= 10% after the first 5 minutes: cannot judge (2 windows",
        "connect and close p999 <= 20 ms in every window: ",
        "the last window no worse than the second: cannot judge (2 windows, fewer than 3)",
        "after closing all 30 sessions (the server recorded every close after ",
        "with 200 known users and 0 sessions open",
        "compare with a restarted server on the same data",
        "disk: log ",
        "churn: ",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(!out.contains("errors, "), "{out}");
    // The soak's users were the known ones: none added, none left online.
    let after = stats(&api).await;
    assert_eq!(after["known_users"], 200, "{after}");
    assert_eq!(after["online_sessions"], 0, "{after}");
    server.shutdown().await;
}

/// A fresh database on the machine's PostgreSQL (`WK_TEST_POSTGRES` names another server),
/// dropped at the end of the test.
struct Database {
    server: String,
    name: String,
}

impl Database {
    async fn create() -> Database {
        use sqlx::Connection;
        let server = std::env::var("WK_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("wk_loadtest_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("the machine's PostgreSQL at 127.0.0.1:5432 (WK_TEST_POSTGRES names another)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("a database of the test's own");
        admin.close().await.ok();
        Database { server, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    async fn drop_it(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.server))
            .await
            .expect("the server, again");
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await
            .expect("the test's database dropped");
        admin.close().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_two_nodes_the_tool_reports_the_tail_lag_and_the_cross_node_kick() {
    let db = Database::create().await;
    let url = db.url();
    let mut nodes = Vec::new();
    for id in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let config = Config::from_args([
            "--database-url",
            url.as_str(),
            "--node-id",
            id,
            "--data-dir",
            data.as_str(),
            "--api-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
        ])
        .unwrap();
        nodes.push((Server::start(config).await.unwrap(), dir));
    }
    let list = |addr: fn(&Server) -> std::net::SocketAddr| {
        nodes
            .iter()
            .map(|(n, _)| addr(n).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (api, ws) = (list(Server::api_addr), list(Server::ws_addr));
    let extra = [
        "--users",
        "40",
        "--duration",
        "2s",
        "--tail-probes",
        "10",
        "--kick-probes",
        "5",
    ];
    let out = small_run(&api, &ws, &extra).await;
    for figure in [
        "across 2 nodes",
        "tail lag: connect acked on B -> online on A",
        "kick: device_quit answered on A -> close on B",
        "20 tail probes (0 skipped",
        "10 kick probes (0 skipped",
        // Too few probes to judge a p99 on.
        "cannot judge (20 probes",
    ] {
        assert!(out.contains(figure), "no {figure:?} in:\n{out}");
    }
    assert!(!out.contains("errors, "), "{out}");
    // The probe users are known to both nodes; none is online after the run, and the kicked
    // ones' tokens are cleared.
    for (node, _) in &nodes {
        let stats: serde_json::Value = reqwest::get(format!("http://{}/stats", node.api_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["known_users"], 140 + 20 + 10, "{stats}");
        assert_eq!(stats["online_sessions"], 0, "{stats}");
    }
    for (node, dir) in nodes {
        node.shutdown().await;
        drop(dir);
    }
    db.drop_it().await;
}
