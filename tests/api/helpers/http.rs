//! The HTTP API as a client sees it: requests through reqwest, answers read whole, and raw
//! HTTP/1.1 written byte for byte for what reqwest cannot send.
//!
//! Owns the request helpers on [`TestApp`] and [`Answer`]. Promises: a body that is not JSON is
//! kept as a JSON string, so that a wrong answer shows in the assertion rather than as a parse
//! panic; the helpers that assert a success say what they got. Must never retry a request or
//! hide a status.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::{eventually, TestApp};

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
            body: json_or_text(text),
        }
    }

    /// The answer as `(status, body)`, for whole-answer assertions.
    pub fn pair(&self) -> (u16, Value) {
        (self.status, self.body.clone())
    }
}

/// `text` parsed as JSON, or kept as a JSON string when it is not JSON.
fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The error envelope of the contract: `{"msg":msg,"status":status}`.
pub fn envelope(status: u16, msg: &str) -> Value {
    json!({"msg": msg, "status": status})
}

impl TestApp {
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
        (status, json_or_text(text))
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
        (status, json_or_text(text))
    }

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

    /// Registers a token and asserts it was accepted.
    pub async fn set_token(&self, uid: &str, token: &str, flag: u8, level: u8) {
        let (status, body) = self
            .post(
                "/user/token",
                &json!({"uid": uid, "token": token, "device_flag": flag, "device_level": level}),
            )
            .await;
        assert_eq!((status, body), (200, json!({"status": 200})));
    }

    pub async fn device_quit(&self, uid: &str, flag: i64) {
        let (status, body) = self
            .post(
                "/user/device_quit",
                &json!({"uid": uid, "device_flag": flag}),
            )
            .await;
        assert_eq!((status, body), (200, json!({"status": 200})));
    }

    pub async fn online(&self, uids: &[&str]) -> Value {
        let (status, body) = self.post("/user/onlinestatus", &json!(uids)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `/user/onlinestatus` for `uids` answers `expected`.
    pub async fn wait_online(&self, uids: &[&str], expected: Value) {
        eventually(
            &format!("the onlinestatus of {uids:?} to be {expected}"),
            async || self.online(uids).await,
            |now| *now == expected,
        )
        .await;
    }

    /// Waits until `uid` is offline on every flag.
    pub async fn wait_offline(&self, uid: &str) {
        self.wait_online(&[uid], json!([])).await;
    }

    /// The system uids as listed by `GET /user/systemuids`.
    pub async fn system_uids(&self) -> Value {
        let (status, body) = self.get("/user/systemuids").await;
        assert_eq!(status, 200, "{body}");
        body
    }

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
            body: json_or_text(body.to_owned()),
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
