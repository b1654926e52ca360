//! The real `wkuser` binary as a child process, for tests whose point is the process: a
//! crash (SIGKILL), a graceful stop (SIGTERM), a start that must be refused, what it logs.
//!
//! Owns [`Node`] and the children it starts. Promises: every wait on a child is bounded, and
//! its stderr is drained all along, so that it never blocks on a full pipe. Must never leave a
//! child running past its handle (each is killed when dropped).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Set (to anything), every line a node writes to stderr is also printed by the test, named by
/// the node's addresses: for reading what several nodes did around a failure
/// (`WK_TEST_NODE_LOG=1 cargo test --test api NAME -- --nocapture`).
pub const ECHO_NODE_LOG: &str = "WK_TEST_NODE_LOG";

/// The binary running on a data directory, killed when dropped.
pub struct Node {
    child: Child,
    pub api: String,
    pub ws: String,
    /// Every line the server wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub async fn start_node(data_dir: &Path) -> Node {
    start_node_logging(data_dir, "info").await
}

/// Starts the binary with `RUST_LOG` set to `log_level`.
pub async fn start_node_logging(data_dir: &Path, log_level: &str) -> Node {
    start_node_with(data_dir, log_level, &[]).await
}

/// Starts the binary with `RUST_LOG` set to `log_level` and the `extra` flags (a shared
/// database, a node id).
pub async fn start_node_with(data_dir: &Path, log_level: &str, extra: &[&str]) -> Node {
    crate::watchdog::arm();
    let mut child = serve_command(data_dir)
        .args(extra)
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the wkuser binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let seen = stderr.clone();
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            seen.lock().push(line.clone());
            if let Some(rest) = line.split("listening api=").nth(1) {
                return rest.to_owned();
            }
        }
        panic!("wkuser exited before listening: {:?}", seen.lock());
    })
    .await
    .expect("wkuser listens within 20 s");
    // Keep draining stderr so the child never blocks on a full pipe.
    let seen = stderr.clone();
    let echo = std::env::var_os(ECHO_NODE_LOG).is_some();
    let name = listening.clone();
    if echo {
        for line in seen.lock().iter() {
            eprintln!("[{name}] {line}");
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("[{name}] {line}");
            }
            seen.lock().push(line);
        }
    });
    let mut parts = listening.split_whitespace();
    let api = parts.next().unwrap().to_owned();
    let ws = parts.next().unwrap().trim_start_matches("ws=").to_owned();
    Node {
        child,
        api: format!("http://{api}"),
        ws: format!("ws://{ws}"),
        stderr,
    }
}

/// How many of a node's last stderr lines a failed test shows.
const FAILURE_LOG_LINES: usize = 60;

impl Drop for Node {
    /// A test that fails while the node runs shows the end of what the node logged, named by
    /// its addresses: with several nodes, what each did around the failure.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let lines = self.stderr.lock();
        let tail = &lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..];
        eprintln!(
            "the node at {} / {} (the test failed); its stderr ends with:\n{}",
            self.api,
            self.ws,
            tail.join("\n")
        );
    }
}

impl Node {
    /// POSTs `body` to the child's API at `path` (`/user/token`, ...) and asserts the 200.
    pub async fn post_ok(&self, http: &reqwest::Client, path: &str, body: serde_json::Value) {
        let resp = http
            .post(format!("{}{path}", self.api))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{body}");
    }

    pub async fn sigterm_and_wait(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("stops within 20 s after SIGTERM")
            .unwrap();
        assert!(status.success(), "graceful stop exits 0, got {status}");
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the child.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    pub async fn sigkill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// Runs `wkuser serve` on `data_dir`, with `extra` flags, for a start that must be refused:
/// returns its output once it exits. Panics when it is still running after 30 s (it started
/// instead).
pub async fn serve_refused(data_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut serve = serve_command(data_dir);
    serve
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(30), serve.output())
        .await
        .expect("the start is refused, not served")
        .expect("the wkuser binary runs")
}

/// `wkuser serve` on `data_dir`, both listeners on a free loopback port, killed when dropped.
fn serve_command(data_dir: &Path) -> Command {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_wkuser"));
    serve
        .args(["serve", "--api-addr", "127.0.0.1:0"])
        .args(["--ws-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .kill_on_drop(true);
    serve
}
