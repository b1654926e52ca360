//! The HTTP API's connections against slow and idle clients (`protocol.md` section 5): the time
//! a connection has to send a request's head, a slow body that is still served, and how the stop
//! ends API connections (idle ones at once, a request in hand answered and what it acknowledged
//! kept, the rest after the grace). Over raw TCP sockets, so that the bytes and their timing are
//! the test's own.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::limits::trickle_a_header;

/// Reads until the server closes the connection, for at most `within`; what arrived, or
/// `None` if the connection was still open then.
async fn read_to_close(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.is_ok().then_some(got)
}

/// The head of a `POST /user/onlinestatus` whose body is `length` bytes.
fn onlinestatus_head(api: std::net::SocketAddr, length: usize) -> String {
    format!(
        "POST /user/onlinestatus HTTP/1.1\r\nhost: {api}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// A whole `POST /user/onlinestatus` asking for no uid (answered `[]`).
fn empty_onlinestatus_request(api: std::net::SocketAddr) -> String {
    onlinestatus_head(api, 2) + "[]"
}

#[tokio::test]
async fn an_api_client_that_trickles_its_head_or_sits_idle_is_cut_by_the_header_limit() {
    let app = spawn_app_with(&["--header-read-timeout", "1s"]).await;
    let api = app.server().api_addr();
    // A head that never ends: a byte every 10 ms, bounded here to 10 s, which the server must
    // not wait out.
    let mut trickling = tokio::net::TcpStream::connect(api).await.unwrap();
    trickling.set_nodelay(true).unwrap();
    let head = format!("POST /user/onlinestatus HTTP/1.1\r\nhost: {api}\r\n");
    trickling.write_all(head.as_bytes()).await.unwrap();
    trickle_a_header(&mut trickling).await;
    let answer = read_to_close(&mut trickling, Duration::from_secs(5)).await;
    let answer = answer.expect("the trickling connection was closed");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "it was not served");
    // A keep-alive connection: answered, then cut once it has sent nothing for the limit.
    let mut idle = tokio::net::TcpStream::connect(api).await.unwrap();
    let request = empty_onlinestatus_request(api);
    idle.write_all(request.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut idle, Duration::from_secs(5)).await;
    let answer = String::from_utf8(answer.expect("the idle connection was closed")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n[]"), "{answer}");
    // The API serves on.
    let (status, body) = app.post("/user/onlinestatus", &json!([])).await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn a_silent_api_connection_is_kept_for_the_whole_header_limit_then_cut() {
    let app = spawn_app_with(&["--header-read-timeout", "4s"]).await;
    let mut silent = tokio::net::TcpStream::connect(app.server().api_addr())
        .await
        .unwrap();
    // Still open at 85% of the limit (a cut three quarters in would show here; a loaded
    // machine can only make the server's cut later).
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(3400), silent.read(&mut byte)).await;
    assert!(early.is_err(), "closed before the limit: {early:?}");
    // Cut by the limit plus a quarter (5 s), with room for a slow machine.
    let rest = read_to_close(&mut silent, Duration::from_secs(6)).await;
    assert_eq!(rest.as_deref(), Some(&[][..]), "cut without a word");
}

#[tokio::test]
async fn a_body_slower_than_the_header_limit_is_served_and_its_connection_kept() {
    let app = spawn_app_with(&["--header-read-timeout", "2s"]).await;
    let api = app.server().api_addr();
    let uids = (0..10).map(|i| format!("\"slow-{i}\"")).collect::<Vec<_>>();
    let body = format!("[{}]", uids.join(","));
    let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let head = onlinestatus_head(api, body.len());
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The body over 5 s, two and a half limits: a request in hand is not the head limit's to
    // cut.
    for piece in body.as_bytes().chunks(body.len().div_ceil(10)) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tcp.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n[]") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert!(n > 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    // Idle for half the limit, the connection still takes a request.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let request = empty_onlinestatus_request(api);
    tcp.write_all(request.as_bytes()).await.unwrap();
    let again = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    let again = String::from_utf8(again.expect("answered, then cut once idle")).unwrap();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

#[tokio::test]
async fn the_stop_closes_api_connections_idle_at_once_and_busy_ones_after_its_grace() {
    // Heads may take ten minutes here: only the stop's own bound can end these connections.
    let mut app = spawn_app_with(&["--header-read-timeout", "600s"]).await;
    let api = app.server().api_addr();
    let mut idle = tokio::net::TcpStream::connect(api).await.unwrap();
    let request = empty_onlinestatus_request(api);
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Half a head: a request in hand that never completes.
    let mut busy = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!("POST /user/token HTTP/1.1\r\nhost: {api}\r\n");
    busy.write_all(head.as_bytes()).await.unwrap();
    // The stop is bounded by its grace (5 s) plus the gateway's; 60 s here only guards
    // against a hang.
    tokio::time::timeout(Duration::from_secs(60), app.stop())
        .await
        .expect("the stop ended");
    for (what, tcp) in [("idle", &mut idle), ("busy", &mut busy)] {
        let rest = read_to_close(tcp, Duration::from_secs(1)).await;
        assert!(rest.is_some(), "the {what} connection was closed");
    }
}

#[tokio::test]
async fn a_request_in_hand_at_the_stop_is_answered_and_what_it_acknowledged_survives() {
    let mut app = spawn_app().await;
    let api = app.server().api_addr();
    // A token set whose body is half sent when the stop begins.
    let body = br#"{"uid":"late","token":"late-token","device_flag":1,"device_level":1}"#;
    let (first, rest) = body.split_at(20);
    let mut tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let head = format!(
        "POST /user/token HTTP/1.1\r\nhost: {api}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(first).await.unwrap();
    let stopping = tokio::spawn(app.server.take().unwrap().shutdown());
    // The API has stopped once it accepts nothing more.
    eventually(
        "the API to refuse new connections",
        async || tokio::net::TcpStream::connect(api).await.is_ok(),
        |accepted| !accepted,
    )
    .await;
    tcp.write_all(rest).await.unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(30)).await;
    let answer = String::from_utf8(answer.expect("answered, then closed")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":200}"#), "{answer}");
    stopping.await.unwrap();
    // Acknowledged, so durable: the next lifetime knows the token.
    app.restart().await;
    let (_ws, connected) = app.ws_connect("late", "late-token", 1, "late-1").await;
    assert_connected(&connected);
}
