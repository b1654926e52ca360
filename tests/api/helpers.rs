//! Starting the real server for a test: a fresh data directory, port 0 for both listeners, a
//! real HTTP client and real WebSocket connections.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wkuser::app::Server;
use wkuser::config::Config;
use wkuser::domain::Seq;
use wkuser::log::{EncodedRecord, LogError, LogStore, SledStore};

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
    crate::watchdog::arm();
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
    /// The `Allow` header (a 405 names the path's methods in it).
    pub allow: Option<String>,
    pub body: Value,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let allow = header(reqwest::header::ALLOW);
        let text = resp.text().await.expect("body read");
        Answer {
            status,
            content_type,
            allow,
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

/// The files under `dir` whose raw bytes contain `needle`. A file removed between the listing
/// and the read (SQLite's `-wal` and `-shm` go when the last connection closes) holds nothing.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| match std::fs::read(p) {
            Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("{}: {e}", p.display()),
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
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        Answer {
            status,
            content_type: header("content-type").map(|v| v.to_ascii_lowercase()),
            allow: header("allow"),
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
// ---------------------------------------------------------------------------------------------
// A log store that fails on demand, for what the server does when its event log cannot be used.

/// A sled store that fails every operation while `failing` is set, or only its flushes while
/// `failing_flush` is set (the batch is then written but never durable).
pub struct Flaky {
    inner: SledStore,
    failing: Arc<AtomicBool>,
    failing_flush: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), LogError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(LogError::storage("disk on fire (test)"))
        } else {
            Ok(())
        }
    }
}

impl LogStore for Flaky {
    fn last_seq(&self) -> Result<Seq, LogError> {
        self.check()?;
        self.inner.last_seq()
    }
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        self.check()?;
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<(), LogError> {
        self.check()?;
        if self.failing_flush.load(Ordering::SeqCst) {
            return Err(LogError::storage("flush failed (test)"));
        }
        self.inner.flush()
    }
    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        self.check()?;
        self.inner.discard(batch)
    }
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.check()?;
        self.inner.read_after(after, limit)
    }
    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.check()?;
        self.inner.read_uid(uid, after, limit)
    }
}

/// The server over a [`Flaky`] store, with its two switches (all operations, flushes only).
pub async fn flaky_app() -> (TestApp, Arc<AtomicBool>, Arc<AtomicBool>) {
    let (app, failing, failing_flush, _) = flaky_app_and_store().await;
    (app, failing, failing_flush)
}

/// [`flaky_app`], and the store itself, to look past the log's reads (which show durable
/// events only) at what the store holds.
pub async fn flaky_app_and_store() -> (TestApp, Arc<AtomicBool>, Arc<AtomicBool>, Arc<Flaky>) {
    let failing = Arc::new(AtomicBool::new(false));
    let failing_flush = Arc::new(AtomicBool::new(false));
    let (all, flush) = (failing.clone(), failing_flush.clone());
    let opened = Arc::new(std::sync::OnceLock::new());
    let keep = opened.clone();
    let app = spawn_app_on_store(&[], move |dir| {
        let store = Arc::new(Flaky {
            inner: SledStore::open(dir).expect("sled opens"),
            failing: all,
            failing_flush: flush,
        });
        let _ = keep.set(store.clone());
        store
    })
    .await;
    let store = opened.get().expect("the server opened its store").clone();
    (app, failing, failing_flush, store)
}

// ---------------------------------------------------------------------------------------------
// Gateway helpers: frames written byte for byte as the EasySDK writes them, raw reads of the
// server's frames, the event log read in-process, and a bare client that never answers a close.

/// A request id as the EasySDK makes them (a UUID string).
pub fn rpc_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A deviceId of the shape the EasySDK web client makes: `web_<8 hex>_<ms>`.
pub fn web_device_id() -> String {
    let hex = uuid::Uuid::now_v7().simple().to_string();
    format!("web_{}_{}", &hex[24..32], now_ms())
}

/// The EasySDK's connect frame, field for field in its order.
pub fn easy_connect(
    uid: &str,
    token: &str,
    device_id: &str,
    flag: u8,
    ts: i64,
    id: &str,
) -> String {
    format!(
        r#"{{"method":"connect","params":{{"uid":"{uid}","token":"{token}","deviceId":"{device_id}","deviceFlag":{flag},"clientTimestamp":{ts}}},"id":"{id}"}}"#
    )
}

/// The EasySDK's ping request.
pub fn easy_ping(id: &str) -> String {
    format!(r#"{{"method":"ping","id":"{id}"}}"#)
}

/// The server's empty result for `id`, as exact text.
pub fn empty_result(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","result":{{}}}}"#)
}

/// The auth failure for `id`, as exact text.
pub fn auth_fail_text(id: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":"{id}","error":{{"code":2,"message":"auth fail"}}}}"#)
}

/// The kick notification with `reason`, as exact text.
pub fn kick_text(reason: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"disconnect","params":{{"reasonCode":12,"reason":"{reason}"}}}}"#
    )
}

pub async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    tokio::time::timeout(Duration::from_secs(5), ws.send(Message::text(text.into())))
        .await
        .expect("frame sent within 5 s")
        .expect("frame sent");
}

/// What the server sent next, ignoring WebSocket pings and pongs.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Binary,
    /// A close frame and its code (`None`: a close frame without a code).
    Close(Option<u16>),
    /// The socket ended without a close frame.
    Gone,
}

/// The next frame, within 5 s.
pub async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("no frame within 5 s"),
            Ok(Some(Ok(Message::Text(t)))) => return Frame::Text(t.as_str().to_owned()),
            Ok(Some(Ok(Message::Binary(_)))) => return Frame::Binary,
            Ok(Some(Ok(Message::Close(f)))) => return Frame::Close(f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Frame::Gone,
        }
    }
}

/// The next frame, which must be a text frame; returns its exact text.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws).await {
        Frame::Text(t) => t,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next frame, which must be a close frame; returns its code.
pub async fn expect_close(ws: &mut Ws) -> u16 {
    match next_frame(ws).await {
        Frame::Close(Some(code)) => code,
        other => panic!("expected a close frame with a code, got {other:?}"),
    }
}

/// Sends `frame` as the first frame of a fresh socket; returns the socket and the exact text of
/// the answer.
pub async fn first_frame(app: &TestApp, frame: &str) -> (Ws, String) {
    let mut ws = app.ws_open().await;
    send_text(&mut ws, frame).await;
    let answer = next_text(&mut ws).await;
    (ws, answer)
}

/// Connects as the EasySDK does and asserts success; returns the socket.
pub async fn connected(app: &TestApp, uid: &str, token: &str, flag: u8, device_id: &str) -> Ws {
    let id = rpc_id();
    let frame = easy_connect(uid, token, device_id, flag, now_ms(), &id);
    let (ws, answer) = first_frame(app, &frame).await;
    let v: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(v["id"], Value::String(id), "{answer}");
    assert_eq!(
        v["result"]["reasonCode"], 1,
        "connect of {uid} failed: {answer}"
    );
    ws
}

/// Sends a ping and asserts its exact answer (the session is alive and answering).
pub async fn assert_pings(ws: &mut Ws) {
    let id = rpc_id();
    send_text(ws, easy_ping(&id)).await;
    assert_eq!(next_text(ws).await, empty_result(&id));
}

impl TestApp {
    /// Every event in the log, read in-process.
    pub fn events(&self) -> Vec<wkuser::domain::RecordedEvent> {
        self.server()
            .service()
            .log()
            .read_after(wkuser::domain::Seq(0), 100_000)
            .expect("log readable")
    }

    /// The `Connected` events of `uid`, in log order.
    pub fn connected_events(&self, uid: &str) -> Vec<wkuser::domain::event::Connected> {
        self.events()
            .into_iter()
            .filter_map(|r| match r.event {
                wkuser::domain::Event::Connected(c) if c.uid.as_str() == uid => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The reasons of the `Disconnected` events of `uid`, in log order.
    pub fn close_reasons(&self, uid: &str) -> Vec<wkuser::domain::CloseReason> {
        self.events()
            .into_iter()
            .filter_map(|r| match r.event {
                wkuser::domain::Event::Disconnected(d) if d.uid.as_str() == uid => Some(d.reason),
                _ => None,
            })
            .collect()
    }

    /// Polls `/user/onlinestatus` (at most 5 s) until `uid` is offline.
    pub async fn wait_offline(&self, uid: &str) {
        for _ in 0..250 {
            if self.online(&[uid]).await == serde_json::json!([]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{uid} still online after 5 s");
    }

    pub async fn device_quit(&self, uid: &str, flag: i64) {
        let (status, body) = self
            .post(
                "/user/device_quit",
                &serde_json::json!({"uid": uid, "device_flag": flag}),
            )
            .await;
        assert_eq!((status, body), (200, serde_json::json!({"status": 200})));
    }

    /// A bare WebSocket client (see [`RawWs`]) that has completed the upgrade.
    pub async fn raw_ws(&self) -> RawWs {
        RawWs::open(&self.ws).await
    }
}

/// A WebSocket client written on a bare TCP stream: it sends only what the test asks for, so it
/// never answers a close frame, never pongs, and reads only when the test reads.
pub struct RawWs {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

/// A frame as read by [`RawWs`]: opcode and payload.
#[derive(Debug, PartialEq)]
pub struct RawFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn text(&self) -> &str {
        assert_eq!(self.opcode, 1, "not a text frame: {self:?}");
        std::str::from_utf8(&self.payload).expect("UTF-8 text")
    }

    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }

    /// The reason text of a close frame (after its code).
    pub fn close_reason(&self) -> &str {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        std::str::from_utf8(&self.payload[2..]).expect("UTF-8 reason")
    }
}

impl RawWs {
    pub async fn open(url: &str) -> RawWs {
        let host = url.trim_start_matches("ws://");
        let tcp = TcpStream::connect(host).await.expect("tcp connects");
        Self::upgrade(tcp, host).await
    }

    /// Sends the EasySDK's connect frame (id `c`) and asserts that it succeeded.
    pub async fn connect_as(&mut self, uid: &str, token: &str, flag: u8, device_id: &str) {
        self.send_text(&easy_connect(uid, token, device_id, flag, now_ms(), "c"))
            .await;
        let answer = self.read_frame().await.expect("connect answered");
        assert!(
            answer.text().contains(r#""reasonCode":1"#),
            "{}",
            answer.text()
        );
    }

    pub async fn open_with_recv_buffer(url: &str, bytes: u32) -> RawWs {
        let host = url.trim_start_matches("ws://");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let tcp = socket
            .connect(host.parse().expect("ws address"))
            .await
            .expect("tcp connects");
        Self::upgrade(tcp, host).await
    }

    /// Sends the upgrade request on `tcp` and reads the server's 101.
    pub async fn upgrade(mut tcp: TcpStream, host: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("upgrade sent");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
                .await
                .expect("upgrade answered within 5 s")
                .expect("upgrade read");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        RawWs { tcp, buf }
    }

    /// Sends one masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt;
        let frame = Self::masked_text(text);
        self.tcp.write_all(&frame).await.expect("frame sent");
    }

    /// Sends one text message split into fragments (a text frame, then continuations).
    pub async fn send_fragments(&mut self, parts: &[&str]) {
        use tokio::io::AsyncWriteExt;
        let mut bytes = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let opcode = if i == 0 { 0x1 } else { 0x0 };
            let fin = i + 1 == parts.len();
            bytes.extend(Self::masked(opcode, fin, part.as_bytes()));
        }
        self.tcp.write_all(&bytes).await.expect("fragments sent");
    }

    /// The bytes of one masked text frame, as a client sends it.
    pub fn masked_text(text: &str) -> Vec<u8> {
        Self::masked(0x1, true, text.as_bytes())
    }

    /// The bytes of one masked frame.
    pub fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = Self::head(opcode, fin, true, payload.len());
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// A frame's header up to its length (the mask key, when there is one, follows).
    fn head(opcode: u8, fin: bool, masked: bool, len: usize) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut head = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            n if n < 126 => head.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                head.push(mask_bit | 126);
                head.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                head.push(mask_bit | 127);
                head.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        head
    }

    /// The bytes of one text frame sent unmasked, as only a server may send it (RFC 6455 5.1).
    pub fn unmasked_text(text: &str) -> Vec<u8> {
        let mut frame = Self::head(0x1, true, false, text.len());
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    /// The next frame (unmasked, unfragmented, as this server sends them), or `None` at the end
    /// of the stream. Panics after 5 s.
    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = Self::parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "stream ended inside a frame");
                return None;
            }
        }
    }

    /// The server's last word: a close frame, then the end of the stream. Panics (naming
    /// `case`) if the socket was dropped without one, or if anything follows it.
    pub async fn read_final_close(&mut self, case: &str) -> RawFrame {
        let close = self
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("{case}: dropped without a close frame"));
        assert_eq!(
            self.read_frame().await,
            None,
            "{case}: nothing after the close"
        );
        close
    }

    /// Reads more bytes; `false` at the end of the stream (or a reset).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), self.tcp.read(&mut chunk)).await {
            Err(_) => panic!("nothing read within 5 s"),
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The first whole frame in `buf` and the bytes it took, or `None` when it is not all there.
    pub fn parse(buf: &[u8]) -> Option<(RawFrame, usize)> {
        if buf.len() < 2 {
            return None;
        }
        assert_eq!(buf[0] & 0x80, 0x80, "fragmented frame");
        assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
        let (len, head) = match buf[1] & 0x7f {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if buf.len() < head + len {
            return None;
        }
        let frame = RawFrame {
            opcode: buf[0] & 0x0f,
            payload: buf[head..head + len].to_vec(),
        };
        Some((frame, head + len))
    }
}

/// A connected client that stops reading: a small receive buffer, then pings with 60 KB ids
/// (so long answers) written without end from a task that stops at the first write error (the
/// server dropped the socket). Returns the unread half and the writing task.
pub async fn flooding_client(
    app: &TestApp,
    uid: &str,
    token: &str,
    flag: u8,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let mut raw = RawWs::open_with_recv_buffer(&app.ws, 4096).await;
    raw.connect_as(uid, token, flag, "web_f100d000_1700000000000")
        .await;
    let ping = RawWs::masked_text(&easy_ping(&"x".repeat(60_000)));
    let (read_half, mut write_half) = raw.tcp.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Bounded only so that a broken server cannot make this loop forever (~600 MB).
        for _ in 0..10_000 {
            if write_half.write_all(&ping).await.is_err() {
                return;
            }
        }
    });
    (read_half, writer)
}

/// Sets the receive buffer of the socket under `half` to `bytes` (the kernel doubles it): a
/// client made slow with a small one reads fast again.
pub fn set_recv_buffer(half: &tokio::net::tcp::OwnedReadHalf, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    let fd = half.as_ref().as_raw_fd();
    // SAFETY: `fd` is an open socket for the whole call, and the option value is a c_int of the
    // size given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt(SO_RCVBUF) failed");
}

/// Reads the server's frames from `half` until its close frame, within `limit` (panics after):
/// the last text frame before it, and the close code (`None`: the stream ended, or was reset,
/// without a close frame).
pub async fn read_until_close(
    half: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> (Option<String>, Option<u16>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut last_text = None;
    let read = async {
        loop {
            while let Some((frame, used)) = RawWs::parse(&buf) {
                buf.drain(..used);
                match frame.opcode {
                    1 => last_text = Some(frame.text().to_owned()),
                    8 => return Some(frame.close_code()),
                    _ => {}
                }
            }
            match half.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    };
    let code = tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("no close frame nor end of stream within {limit:?}"));
    (last_text, code)
}

/// Reads and discards until the end of the stream (or a reset), within `limit`; panics after.
pub async fn read_to_end_within(half: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(limit, async {
        while matches!(half.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
    .unwrap_or_else(|_| panic!("the socket was not closed within {limit:?}"));
}

/// Makes sure this process may open at least `wanted` files (sockets), raising the soft limit
/// toward the hard one when it is lower (a common default soft limit is 1,024). Panics with an
/// explanation when the hard limit is too low.
pub fn ensure_open_files(wanted: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(got, 0, "getrlimit(RLIMIT_NOFILE) failed");
    if lim.rlim_cur >= wanted {
        return;
    }
    assert!(
        lim.rlim_max >= wanted,
        "this test needs {wanted} open files; the hard limit is {}",
        lim.rlim_max
    );
    lim.rlim_cur = wanted;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(set, 0, "setrlimit(RLIMIT_NOFILE) failed");
}

/// The loopback address 127.0.0.`n`. Linux routes all of 127.0.0.0/8 to `lo`, so a test can
/// open sockets from several peer addresses to exercise the per-address limits.
pub fn loopback(n: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, 0, n)
}

impl TestApp {
    /// A TCP connection to the gateway from `from` (bound before connecting). The kernel
    /// completes it whether or not the server then keeps it.
    pub async fn tcp_from(&self, from: std::net::Ipv4Addr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((from, 0)))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(5),
            socket.connect(self.server().ws_addr()),
        )
        .await
        .expect("tcp connects within 5 s")
        .expect("tcp connects")
    }

    /// Completes a WebSocket upgrade over `tcp`: `Ok` once the server answered 101, `Err` (what
    /// the client saw) when the server closed the socket instead. Panics after 5 s of neither.
    pub async fn try_upgrade(&self, tcp: TcpStream) -> Result<Ws, String> {
        let upgrade = tokio_tungstenite::client_async(&self.ws, MaybeTlsStream::Plain(tcp));
        match tokio::time::timeout(Duration::from_secs(5), upgrade).await {
            Err(_) => panic!("the upgrade was neither answered nor refused within 5 s"),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
        }
    }

    /// A WebSocket from `from`: `Ok` when the server admitted it (answered the upgrade), `Err`
    /// when it dropped it. See [`TestApp::try_upgrade`].
    pub async fn try_ws_from(&self, from: std::net::Ipv4Addr) -> Result<Ws, String> {
        let tcp = self.tcp_from(from).await;
        self.try_upgrade(tcp).await
    }

    /// A WebSocket from `from`, retried every 20 ms until the server admits one (at most 5 s):
    /// for a slot that a socket closing on its own frees a moment later.
    pub async fn ws_from_within(&self, from: std::net::Ipv4Addr) -> Ws {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.try_ws_from(from).await {
                Ok(ws) => return ws,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("no socket from {from} admitted within 5 s; last: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Authenticates an open (not yet connected) socket as the EasySDK does and asserts success.
pub async fn authenticate(ws: &mut Ws, uid: &str, token: &str, flag: u8, device_id: &str) {
    let id = rpc_id();
    send_text(ws, easy_connect(uid, token, device_id, flag, now_ms(), &id)).await;
    let answer = next_text(ws).await;
    let v: Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(v["id"], Value::String(id), "{answer}");
    assert_eq!(
        v["result"]["reasonCode"], 1,
        "connect of {uid} failed: {answer}"
    );
}

/// Sets the migrations the view records as applied to `versions`.
pub async fn record_migrations(view: &Path, versions: &[i64]) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&pool)
        .await
        .unwrap();
    for v in versions {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, 'test', TRUE, x'00', 0)",
        )
        .bind(v)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

pub async fn applied_migrations(view: &Path) -> Vec<i64> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    versions
}
