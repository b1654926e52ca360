//! A WebSocket client written on a bare TCP stream, for what a client library will not do:
//! never answer a close frame, never pong, stop reading, send frames that break RFC 6455.
//!
//! Owns [`RawWs`], its frame codec, and the clients built on it (one that floods the server and
//! never reads). Promises: every read is bounded, and a frame the server sends masked or
//! fragmented fails the test, as only unmasked whole frames are allowed from a server. Must
//! never send a byte the test did not ask for.

use std::time::Duration;

use tokio::net::TcpStream;

use super::{easy_connect, easy_ping, now_ms, TestApp};

impl TestApp {
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
