//! A minimal HTTP/1.1 client: one keep-alive connection, one request at a time, bodies framed
//! by `Content-Length`.
//!
//! The load tool shares two cores with the server it measures, so its client must cost little
//! per request and must cost the same against the real server and against the constant-body
//! ceiling; a general client (reqwest: a pool, header maps, streamed bodies) does more work per
//! request than this loop needs. Promises: a response is read completely before the next
//! request; a request that finds its idle connection closed by the server (before any byte of
//! an answer) is sent once more on a new connection; after any other error the connection is
//! dropped and the next request opens a new one. Must never: pipeline, or accept a response
//! it cannot frame (chunked bodies are refused as an error).

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

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, &[u8])> {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.out.clear();
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
        match self.exchange().await {
            Ok((status, start, end, close)) => {
                self.consumed = end;
                if close {
                    self.stream = None;
                }
                Ok((status, &self.buf[start..end]))
            }
            Err(e) => {
                self.stream = None;
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Sends `out`, reads one response: (status, body start, body end, server closes).
    async fn exchange(&mut self) -> io::Result<(u16, usize, usize, bool)> {
        let reused = self.stream.is_some();
        match self.exchange_once().await {
            // The server closed the connection while it sat idle (the API cuts a keep-alive
            // connection after `--header-read-timeout`): no byte of an answer came, so the
            // request was not served; it goes again on a new connection.
            Err(e) if reused && self.buf.is_empty() && closed_by_peer(&e) => {
                self.stream = None;
                self.exchange_once().await
            }
            answered => answered,
        }
    }

    async fn exchange_once(&mut self) -> io::Result<(u16, usize, usize, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.out).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        let end = head_end + head.content_length;
        while self.buf.len() < end {
            read_more(stream, &mut self.buf).await?;
        }
        Ok((head.status, head_end, end, head.close))
    }
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

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let config = wkuser::config::Config::from_args([
            "--data-dir",
            data.as_str(),
            "--api-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--header-read-timeout",
            "300ms",
        ])
        .unwrap();
        let server = wkuser::app::Server::start(config).await.unwrap();
        let mut conn = HttpConn::new(server.api_addr(), None);
        assert_eq!(conn.get("/healthz").await.unwrap().0, 200);
        // Idle past the server's limit: it closes the connection.
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
        let (status, body) = conn.get("/healthz").await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
        server.shutdown().await;
    }
}
