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
