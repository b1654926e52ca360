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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn the_load_tool_runs_end_to_end_and_leaves_every_session_closed() {
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
    let server = Server::start(config).await.unwrap();
    let (api, ws) = (server.api_addr().to_string(), server.ws_addr().to_string());
    let run = loadtest(&[
        "--api",
        &api,
        "--ws",
        &ws,
        "--users",
        "40",
        "--duration",
        "1s",
        "--measure-time",
        "400ms",
        "--churn-rate",
        "20",
        "--status-clients",
        "2",
        "--concurrency",
        "8",
    ])
    .await;
    let out = stdout(&run);
    assert_eq!(run.status.code(), Some(0), "{out}{}", stderr(&run));
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
