//! A minimal HTTP/1.1 client: one keep-alive connection, one request at a time, bodies framed
//! by `Content-Length`.
//!
//! The load tool shares two cores with the server it measures, so its client must cost little
//! per request and must cost the same against the real server and against the constant-body
//! ceiling; a general client (reqwest: a pool, header maps, streamed bodies) does more work per
//! request than this loop needs. Promises: a response is read completely before the next
//! request; a request that finds its idle connection closed by the server (before any byte of
//! an answer) is sent once more on a new connection; after any other error the connection is
//! dropped and the next request opens a new one. Only [`HttpConn::pipeline`] sends several
//! requests before their answers (HTTP/1.1 pipelining, which the server's hyper answers in
//! order), for the seeding of known users when asked. Must never: accept a response it
//! cannot frame (chunked bodies are refused as an error).

use std::io::{self, Write};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct HttpConn {
    addr: SocketAddr,
    token: Option<String>,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` that belong to the previous response.
    consumed: usize,
}

impl HttpConn {
    /// A connection to `addr`, opened at the first request; `token` goes in the `token` header.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        HttpConn {
            addr,
            token,
            stream: None,
            out: Vec::with_capacity(1024),
            buf: Vec::with_capacity(16 * 1024),
            consumed: 0,
        }
    }

    pub async fn post(&mut self, path: &str, body: &[u8]) -> io::Result<(u16, &[u8])> {
        self.request("POST", path, body).await
    }

    pub async fn get(&mut self, path: &str) -> io::Result<(u16, &[u8])> {
        self.request("GET", path, &[]).await
    }

    /// Sends every request of `batch` (method, path, body) at once and reads their answers in
    /// order: each answer's status and body. An answer that closes the connection before the
    /// last one is an error for the whole batch (its requests may or may not have been served).
    pub async fn pipeline(
        &mut self,
        batch: &[(&str, &str, &[u8])],
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.start_batch();
        for (method, path, body) in batch {
            self.push_request(method, path, body)?;
        }
        match self.exchange(batch.len()).await {
            Ok(answers) if answers.len() < batch.len() => {
                self.drop_connection();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the server closed the connection in the middle of a pipeline",
                ))
            }
            Ok(answers) => {
                let out = answers
                    .iter()
                    .map(|a| (a.status, self.buf[a.body.clone()].to_vec()))
                    .collect();
                let Some(last) = answers.last() else {
                    return Ok(out);
                };
                self.consumed = last.body.end;
                if last.close {
                    self.stream = None;
                }
                Ok(out)
            }
            Err(e) => {
                self.drop_connection();
                Err(e)
            }
        }
    }

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, &[u8])> {
        self.start_batch();
        self.push_request(method, path, body)?;
        match self.exchange(1).await {
            Ok(answers) => {
                let a = &answers[0];
                self.consumed = a.body.end;
                if a.close {
                    self.stream = None;
                }
                Ok((a.status, &self.buf[a.body.clone()]))
            }
            Err(e) => {
                self.drop_connection();
                Err(e)
            }
        }
    }

    /// Forgets the previous answers and the previous requests.
    fn start_batch(&mut self) {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.out.clear();
    }

    fn push_request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.addr,
            body.len()
        )?;
        if let Some(t) = &self.token {
            write!(self.out, "token: {t}\r\n")?;
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        Ok(())
    }

    fn drop_connection(&mut self) {
        self.stream = None;
        self.buf.clear();
        self.consumed = 0;
    }

    /// Sends `out`, reads `count` answers.
    async fn exchange(&mut self, count: usize) -> io::Result<Vec<Answer>> {
        let reused = self.stream.is_some();
        match self.exchange_once(count).await {
            // The server closed the connection while it sat idle (the API cuts a keep-alive
            // connection after `--header-read-timeout`): no byte of an answer came, so no
            // request was served; they go again on a new connection.
            Err(e) if reused && self.buf.is_empty() && closed_by_peer(&e) => {
                self.stream = None;
                self.exchange_once(count).await
            }
            answered => answered,
        }
    }

    async fn exchange_once(&mut self, count: usize) -> io::Result<Vec<Answer>> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.out).await?;
        let mut answers = Vec::with_capacity(count);
        let mut at = 0;
        while answers.len() < count {
            let head_end = loop {
                if let Some(i) = self.buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + i + 4;
                }
                read_more(stream, &mut self.buf).await?;
            };
            let head = parse_head(&self.buf[at..head_end])?;
            let end = head_end + head.content_length;
            while self.buf.len() < end {
                read_more(stream, &mut self.buf).await?;
            }
            answers.push(Answer {
                status: head.status,
                body: head_end..end,
                close: head.close,
            });
            if head.close {
                break;
            }
            at = end;
        }
        Ok(answers)
    }
}

/// Where one answer lies in the buffer.
struct Answer {
    status: u16,
    body: std::ops::Range<usize>,
    /// The server closes the connection after it.
    close: bool,
}

fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection mid-response",
        ));
    }
    Ok(())
}

struct Head {
    status: u16,
    content_length: usize,
    close: bool,
}

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status line"))?;
    let mut content_length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked responses are not supported by the load tool"));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Head {
        status,
        content_length: content_length.ok_or_else(|| bad("response without content-length"))?,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_response_head() {
        let h = parse_head(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 37\r\n\r\n").unwrap();
        assert_eq!((h.status, h.content_length, h.close), (401, 37, false));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        assert!(h.close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    /// A server of its own on a fresh data directory, with `extra` flags.
    async fn server(extra: &[&str]) -> (wkuser::app::Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let mut args = vec![
            "--data-dir",
            data.as_str(),
            "--api-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let config = wkuser::config::Config::from_args(args).unwrap();
        (wkuser::app::Server::start(config).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
        let (server, _dir) = server(&["--header-read-timeout", "300ms"]).await;
        let mut conn = HttpConn::new(server.api_addr(), None);
        assert_eq!(conn.get("/healthz").await.unwrap().0, 200);
        // Idle past the server's limit: it closes the connection.
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
        let (status, body) = conn.get("/healthz").await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_and_the_connection_goes_on() {
        let (server, _dir) = server(&[]).await;
        let mut conn = HttpConn::new(server.api_addr(), None);
        let good: &[u8] = br#"{"uid":"p1","token":"t","device_flag":1}"#;
        let bad: &[u8] = br#"{"uid":"p2","token":"t","device_flag":300}"#;
        let answers = conn
            .pipeline(&[
                ("POST", "/user/token", good),
                ("POST", "/user/token", bad),
                ("GET", "/events?uid=p1&limit=1", &[]),
                ("GET", "/events?uid=p2&limit=1", &[]),
            ])
            .await
            .unwrap();
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [200, 400, 200, 200]);
        let text = |i: usize| String::from_utf8_lossy(&answers[i].1).into_owned();
        assert!(text(1).contains("device_flag"), "{}", text(1));
        assert!(text(2).contains("TokenUpdated"), "{}", text(2));
        assert!(text(3).starts_with(r#"{"events":[]"#), "{}", text(3));
        // The same connection serves a single request after the batch.
        let (status, body) = conn.get("/stats").await.unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(body).contains(r#""known_users":1"#));
        server.shutdown().await;
    }
}
