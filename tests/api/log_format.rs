//! `--log-format json` (`WK_LOG_FORMAT`, `protocol.md` section 9): the real binary writes one
//! JSON object per line, the fields an operator filters on (uid, session_id, device_flag,
//! reason, node_id, seq) as keys of their own, not inside the message; `text` stays the default.
//! A device flag is written by the name a person reads (`protocol.md` section 1: 2 is Android).

use std::process::Stdio;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// The binary on `data_dir` with `args` and `env`, its stderr read line by line.
struct Logged {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    seen: Vec<String>,
}

impl Logged {
    fn start(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Logged {
        crate::watchdog::arm();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wkuser"));
        command
            .args([
                "serve",
                "--api-addr",
                "127.0.0.1:0",
                "--ws-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            // Debug for the server's own lines (a connect, a session's end); info for the rest.
            .env("RUST_LOG", "info,wkuser=debug")
            .env_remove("WK_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the wkuser binary starts");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Logged {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one holds `text`; returns it.
    async fn until(&mut self, text: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.expect("stderr readable") {
                self.seen.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
            panic!("stderr ended before {text:?}: {:?}", self.seen);
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {text:?} within 20 s: {:?}", self.seen))
    }

    /// SIGTERM, then every line until the process exits.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.seen.push(line);
            }
            assert!(self.child.wait().await.unwrap().success());
        })
        .await
        .expect("stops within 20 s");
        self.seen
    }
}

/// `api=HOST:PORT ws=HOST:PORT` of the listening message.
fn addresses(message: &str) -> (String, String) {
    let rest = message.split("listening api=").nth(1).expect("listening");
    let (api, ws) = rest.split_once(" ws=").unwrap();
    (format!("http://{api}"), format!("ws://{ws}"))
}

/// Every line as a JSON object with the envelope every line has.
fn objects(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v.get(key).is_some(), "no {key} in {line}");
            }
            v
        })
        .collect()
}

fn line_saying<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["message"] == message)
        .unwrap_or_else(|| panic!("no line saying {message:?} in {lines:#?}"))
}

#[tokio::test]
async fn json_lines_carry_the_fields_operators_filter_on() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Logged::start(data.path(), &["--log-format", "json"], &[]);
    let listening: Value = serde_json::from_str(&server.until("listening api=").await).unwrap();
    let (api, ws) = addresses(listening["message"].as_str().unwrap());
    assert_eq!(listening["node_id"], 1);

    let http = reqwest::Client::new();
    let set = json!({"uid": "u1", "token": "t", "device_flag": 2});
    let resp = http
        .post(format!("{api}/user/token"))
        .body(set.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let connect = async |token: &str| {
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
        let frame = easy_connect("u1", token, "d1", 2, now_ms(), "c1");
        socket.send(Message::text(frame)).await.unwrap();
        let answer = next_json(&mut socket).await.unwrap();
        (socket, answer)
    };
    let (_refused, answer) = connect("wrong").await;
    assert_eq!(answer["error"]["code"], 2);
    let (mut socket, answer) = connect("t").await;
    assert_eq!(answer["result"]["reasonCode"], 1);
    socket.send(Message::Close(None)).await.unwrap();
    server.until("session closed").await;
    let lines = objects(&server.stop().await);

    let recovered = line_saying(&lines, "recovered the event log and the view");
    assert_eq!(recovered["seq"], 0);
    assert_eq!(recovered["node_id"], 1);

    let refused = line_saying(&lines, "connect refused");
    assert_eq!(refused["uid"], "u1");
    assert_eq!(refused["device_flag"], "Android");
    assert_eq!(refused["node_id"], 1);

    let connected = line_saying(&lines, "connected");
    assert_eq!(connected["uid"], "u1");
    assert_eq!(connected["device_flag"], "Android");
    assert_eq!(connected["node_id"], 1);
    // NodeStarted is 1, the token 2, the connect 3.
    assert_eq!(connected["seq"], 3);
    let session_id = connected["session_id"].as_str().expect("session_id");
    assert_eq!(session_id.len(), 36, "a UUID: {session_id}");

    let closed = line_saying(&lines, "session closed");
    assert_eq!(closed["session_id"], session_id);
    assert_eq!(closed["reason"], "client_closed");
    assert_eq!(closed["uid"], "u1");
    assert_eq!(closed["device_flag"], "Android");
    let recorded = line_saying(&lines, "session end recorded");
    assert_eq!(recorded["session_id"], session_id);
    assert_eq!(recorded["seq"], 4);

    // The fields are the line's own keys; the message holds none of them.
    for line in &lines {
        let message = line["message"].as_str().unwrap();
        assert!(!message.contains("u1"), "{line}");
        assert!(!message.contains(session_id), "{line}");
    }
    // Nothing secret either.
    assert!(lines.iter().all(|l| !l.to_string().contains("\"t\"")));
}

#[tokio::test]
async fn the_environment_chooses_json_and_text_stays_the_default() {
    let data = tempfile::tempdir().unwrap();
    let mut by_env = Logged::start(data.path(), &[], &[("WK_LOG_FORMAT", "json")]);
    by_env.until("listening api=").await;
    let lines = by_env.stop().await;
    objects(&lines);
    assert!(lines.len() >= 4, "{lines:?}");

    let mut default = Logged::start(data.path(), &[], &[]);
    let listening = default.until("listening api=").await;
    assert!(
        serde_json::from_str::<Value>(&listening).is_err(),
        "text by default: {listening}"
    );
    assert!(listening.contains("node_id=1"), "{listening}");
    default.stop().await;
}
