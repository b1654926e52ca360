//! Starting the real server for a test: a fresh data directory, port 0 for both listeners, a
//! real HTTP client and real WebSocket connections.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wkuser::app::Server;
use wkuser::config::Config;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestApp {
    /// `None` only while restarting.
    pub server: Option<Server>,
    pub api: String,
    pub ws: String,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// Extra flags the app was started with (kept across restarts).
    pub flags: Vec<String>,
    _dir: Option<TempDir>,
}

/// Starts the server on a fresh temporary data directory, with `flags` added to the defaults.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let mut app = start_on(&data_dir, flags.iter().map(|s| s.to_string()).collect()).await;
    app._dir = Some(dir);
    app
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the server on an existing data directory.
pub async fn start_on(data_dir: &Path, flags: Vec<String>) -> TestApp {
    let mut args = vec![
        "--data-dir".to_string(),
        data_dir.display().to_string(),
        "--api-addr".into(),
        "127.0.0.1:0".into(),
        "--ws-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(flags.iter().cloned());
    let config = Config::from_args(args).expect("test config parses");
    let server = Server::start(config).await.expect("server starts");
    TestApp {
        api: format!("http://{}", server.api_addr()),
        ws: format!("ws://{}", server.ws_addr()),
        server: Some(server),
        http: reqwest::Client::new(),
        data_dir: data_dir.to_path_buf(),
        flags,
        _dir: None,
    }
}

impl TestApp {
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Stops gracefully and starts again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let fresh = start_on(&self.data_dir, self.flags.clone()).await;
        self.server = fresh.server;
        self.api = fresh.api;
        self.ws = fresh.ws;
    }

    /// Stops gracefully; the data directory stays.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// POSTs a raw body; returns the status and the body parsed as JSON.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers a token and asserts it was accepted.
    pub async fn set_token(&self, uid: &str, token: &str, flag: u8, level: u8) {
        let (status, body) = self
            .post(
                "/user/token",
                &serde_json::json!({"uid": uid, "token": token, "device_flag": flag, "device_level": level}),
            )
            .await;
        assert_eq!((status, body), (200, serde_json::json!({"status": 200})));
    }

    pub async fn online(&self, uids: &[&str]) -> Value {
        let (status, body) = self
            .post("/user/onlinestatus", &serde_json::json!(uids))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Opens a WebSocket to the gateway.
    pub async fn ws_open(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(&self.ws)
            .await
            .expect("ws connects");
        ws
    }

    /// Opens a WebSocket and sends a connect frame as the EasySDK writes it; returns the socket
    /// and the server's answer.
    pub async fn ws_connect(
        &self,
        uid: &str,
        token: &str,
        flag: u8,
        device_id: &str,
    ) -> (Ws, Value) {
        let mut ws = self.ws_open().await;
        let frame = format!(
            r#"{{"method":"connect","params":{{"uid":"{uid}","token":"{token}","deviceId":"{device_id}","deviceFlag":{flag},"clientTimestamp":{}}},"id":"c-{device_id}"}}"#,
            now_ms()
        );
        ws.send(Message::text(frame)).await.expect("connect sent");
        let answer = next_json(&mut ws).await.expect("an answer to connect");
        (ws, answer)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The next text frame as JSON, within 5 s; `None` when the socket closed first.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("no frame within 5 s"),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).expect("server frames are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return None,
        }
    }
}

/// Reads until the server closes; returns the close code (None: closed without a close frame).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("socket not closed within 5 s"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// An HTTP answer: the status, the `Content-Type`, and the body parsed as JSON (a JSON string
/// holding the raw text when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Value,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("body read");
        Answer {
            status,
            content_type,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// The answer as `(status, body)`, for whole-answer assertions.
    pub fn pair(&self) -> (u16, Value) {
        (self.status, self.body.clone())
    }
}

/// The error envelope of the contract: `{"msg":msg,"status":status}`.
pub fn envelope(status: u16, msg: &str) -> Value {
    serde_json::json!({"msg": msg, "status": status})
}

impl TestApp {
    /// Sends any request to the API, bounded by 10 s; `headers` are added as given.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .request(method, self.url(path))
            .timeout(Duration::from_secs(10));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        Answer::read(req.send().await.expect("request sent")).await
    }

    /// POSTs `body` with the given `Content-Type` (none when `None`).
    pub async fn post_typed(&self, path: &str, body: &str, content_type: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("content-type", ct)])
            .unwrap_or_default();
        self.request(
            reqwest::Method::POST,
            path,
            Some(body.as_bytes().to_vec()),
            &headers,
        )
        .await
    }

    /// The system uids as listed by `GET /user/systemuids`.
    pub async fn system_uids(&self) -> Value {
        let (status, body) = self.get("/user/systemuids").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits (at most 5 s) until the SQL view has applied everything durable so far.
    pub async fn view_caught_up(&self) {
        let server = self.server();
        let last = server.service().log().last_durable();
        tokio::time::timeout(Duration::from_secs(5), server.view_caught_up(last))
            .await
            .expect("the SQL view catches up within 5 s");
    }

    /// Polls `/user/onlinestatus` for `uids` until it answers `expected` (at most 5 s).
    pub async fn wait_online(&self, uids: &[&str], expected: Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.online(uids).await;
            if now == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("onlinestatus of {uids:?} is {now}, expected {expected}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The answer a connect gets when it is accepted: `result.reasonCode` 1.
pub fn assert_connected(answer: &Value) {
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
}

/// The answer a refused connect gets (`protocol.md` 3.2), for the request id `id`.
pub fn auth_fail(id: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": 2, "message": "auth fail"}})
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("data dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files under `dir` whose raw bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).expect("file readable");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

impl TestApp {
    /// Sends `request` (a whole HTTP/1.1 request, written as is) to the API over a raw TCP
    /// socket and reads the answer until the server closes (at most 10 s); for what reqwest
    /// cannot send, such as a chunked body.
    pub async fn raw_http(&self, request: &[u8]) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.server().api_addr();
        let exchange = async {
            let mut tcp = TcpStream::connect(addr).await.expect("api connects");
            tcp.write_all(request).await.expect("request written");
            let mut raw = Vec::new();
            let _ = tcp.read_to_end(&mut raw).await;
            raw
        };
        let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("answer within 10 s");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let content_type = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        });
        Answer {
            status,
            content_type,
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        }
    }
}

/// A POST of `chunks` as a chunked body (no `Content-Length`), asking the server to close after.
pub fn chunked_post(path: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

/// Starts the server on a fresh temporary data directory over a log store the test built
/// (`make_store` gets the log directory), for tests that make storage fail on demand.
pub async fn spawn_app_on_store(
    flags: &[&str],
    make_store: impl FnOnce(&Path) -> std::sync::Arc<dyn wkuser::log::LogStore>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--api-addr".into(),
        "127.0.0.1:0".into(),
        "--ws-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    let config = Config::from_args(args).expect("test config parses");
    let store = make_store(&config.log_dir());
    let server = Server::start_with_log(config, store)
        .await
        .expect("server starts");
    TestApp {
        api: format!("http://{}", server.api_addr()),
        ws: format!("ws://{}", server.ws_addr()),
        server: Some(server),
        http: reqwest::Client::new(),
        data_dir,
        flags: flags.iter().map(|s| s.to_string()).collect(),
        _dir: Some(dir),
    }
}
