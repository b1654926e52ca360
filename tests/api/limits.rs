//! The limits against hostile clients, each at its edge over real sockets (`protocol.md` 3.1 and
//! section 5): sockets not yet authenticated, per peer address and in total; open connections
//! in total; the first-frame limit and the message size before connect; uids per HTTP request;
//! the API connections' own limits are in `limits_api.rs`.
//!
//! The gateway runs here with small limits and a long first-frame limit (30 s, unless a test is
//! about it), so that a socket closed within a test's 5 s wait was dropped by a limit, not by the
//! clock. Sockets come from several loopback addresses (127.0.0.N) to tell the per-address cap
//! from the total one. "Admitted" means the server answered the WebSocket upgrade; "dropped"
//! means it closed the socket instead.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wkuser::domain::Event;

use crate::helpers::*;

const PER_IP: usize = 4;
const PENDING: usize = 8;
const CONNECTIONS: usize = 20;

/// The small limits of this module.
const LIMITS: &[&str] = &[
    "--max-pending",
    "8",
    "--max-pending-per-ip",
    "4",
    "--max-connections",
    "20",
    "--first-frame-timeout",
    "30s",
];

async fn limited_app() -> TestApp {
    spawn_app_with(LIMITS).await
}

/// `n` sockets from `from`, opened one after the other, each of which must be admitted.
async fn admitted(app: &TestApp, from: u8, n: usize) -> Vec<Ws> {
    let mut out = Vec::new();
    for i in 0..n {
        match app.try_ws_from(loopback(from)).await {
            Ok(ws) => out.push(ws),
            Err(e) => panic!("socket {i} from 127.0.0.{from} dropped: {e}"),
        }
    }
    out
}

async fn assert_dropped(app: &TestApp, from: u8, why: &str) {
    if app.try_ws_from(loopback(from)).await.is_ok() {
        panic!("a socket from 127.0.0.{from} was admitted over {why}");
    }
}

fn dev(i: usize) -> String {
    format!("web_0000000{}_1700000000000", i % 10)
}

#[tokio::test]
async fn pending_sockets_over_the_per_address_cap_are_dropped_and_the_rest_are_unharmed() {
    let app = limited_app().await;
    for i in 0..8 {
        app.set_token(&format!("p{i}"), "t", 1, 0).await;
    }

    // Exactly the cap from one address, then every further one is dropped at once.
    let mut first = admitted(&app, 1, PER_IP).await;
    for _ in 0..3 {
        assert_dropped(&app, 1, "the per-address cap").await;
    }
    // Another address has its own count (and the total, 4 of 8, has room).
    let mut other = admitted(&app, 2, 1).await;

    // The sockets under the cap were not hurt: each authenticates and answers pings.
    for (i, ws) in first.iter_mut().enumerate() {
        authenticate(ws, &format!("p{i}"), "t", 1, &dev(i)).await;
        assert_pings(ws).await;
    }
    // Authenticated, they no longer count as pending: the address gets its whole cap back
    // (a connect's answer is sent after its pending slot is released), and no more.
    let mut again = admitted(&app, 1, PER_IP).await;
    assert_dropped(
        &app,
        1,
        "the per-address cap, after the first ones authenticated",
    )
    .await;
    for (i, ws) in again.iter_mut().enumerate() {
        authenticate(ws, &format!("p{}", 4 + i), "t", 1, &dev(i)).await;
    }
    authenticate(&mut other[0], "p0", "t", 1, "web_other000_1700000000000").await;
    for ws in first.iter_mut().chain(again.iter_mut()) {
        assert_pings(ws).await;
    }
    let online = app
        .online(&["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"])
        .await;
    assert_eq!(online.as_array().unwrap().len(), 8, "{online}");
}

#[tokio::test]
async fn pending_sockets_over_the_total_cap_are_dropped_whatever_their_address() {
    let app = limited_app().await;
    app.set_token("user", "t", 1, 0).await;
    app.set_token("late", "t", 2, 0).await;
    // A user connected before the flood.
    let mut user = connected(&app, "user", "t", 1, "web_user0000_1700000000000").await;

    let mut from_1 = admitted(&app, 1, PER_IP).await;
    let mut from_2 = admitted(&app, 2, PER_IP).await;
    // 8 of 8 pending: a third address, with nothing pending yet, is dropped at once.
    for _ in 0..3 {
        assert_dropped(&app, 3, "the total pending cap").await;
    }
    // Meanwhile the authenticated user keeps working, and so does the HTTP API.
    assert_pings(&mut user).await;
    assert_eq!(
        app.online(&["user"]).await,
        json!([{"uid": "user", "device_flag": 1, "online": 1}])
    );

    // One pending socket authenticates: exactly one slot comes back.
    authenticate(&mut from_2[0], "late", "t", 2, "web_late0000_1700000000000").await;
    let _third = admitted(&app, 3, 1).await;
    assert_dropped(&app, 3, "the total pending cap, refilled").await;

    // One pending socket leaves: its slot comes back once the server has seen it go.
    drop(from_1.pop());
    let _fourth = app.ws_from_within(loopback(3)).await;
    assert_dropped(&app, 3, "the total pending cap, refilled again").await;

    // The rest were unharmed all along.
    assert_pings(&mut user).await;
    assert_pings(&mut from_2[0]).await;
    authenticate(&mut from_1[0], "user", "t", 1, "web_user0001_1700000000000").await;
    assert_pings(&mut from_1[0]).await;
    assert_eq!(
        app.online(&["user", "late"]).await,
        json!([
            {"uid": "user", "device_flag": 1, "online": 1},
            {"uid": "late", "device_flag": 2, "online": 1}
        ])
    );
}

#[tokio::test]
async fn pending_sockets_that_time_out_give_their_slots_back() {
    let app = spawn_app_with(&[
        "--max-pending",
        "8",
        "--max-pending-per-ip",
        "4",
        "--first-frame-timeout",
        "1s",
    ])
    .await;
    let mut first = admitted(&app, 1, PER_IP).await;
    assert_dropped(&app, 1, "the per-address cap").await;
    // The first-frame limit closes them (1008)...
    for ws in first.iter_mut() {
        assert_eq!(expect_close(ws).await, 1008);
    }
    drop(first);
    // ...and their slots come back, all of them and no more.
    let _again: Vec<Ws> = join_all((0..PER_IP).map(|_| app.ws_from_within(loopback(1)))).await;
    assert_dropped(&app, 1, "the per-address cap, after the time-outs").await;
}

#[tokio::test]
async fn a_flood_of_bare_tcp_connects_is_capped_per_address_and_in_total() {
    let app = limited_app().await;
    app.set_token("user", "t", 1, 0).await;
    let mut user = connected(&app, "user", "t", 1, "web_user0000_1700000000000").await;

    // 30 connects at once from one address, sending nothing: the server keeps exactly the cap.
    // Which ones it kept shows when each then asks for the upgrade.
    let flood = join_all((0..30).map(|_| app.tcp_from(loopback(1)))).await;
    let answers = join_all(flood.into_iter().map(|tcp| app.try_upgrade(tcp))).await;
    let mut kept: Vec<Ws> = answers.into_iter().filter_map(Result::ok).collect();
    assert_eq!(kept.len(), PER_IP, "sockets kept from one address");
    assert_pings(&mut user).await;
    // Meanwhile a user connects from another address.
    let mut newcomer = admitted(&app, 2, 1).await.pop().unwrap();
    authenticate(&mut newcomer, "user", "t", 1, "web_newcomer_1700000000000").await;

    // 30 more at once from 30 other addresses, one each: the total cap (8, of which 4 are
    // taken) keeps exactly 4 more.
    let flood = join_all((10..40).map(|n| app.tcp_from(loopback(n)))).await;
    let answers = join_all(flood.into_iter().map(|tcp| app.try_upgrade(tcp))).await;
    let kept_too: Vec<Ws> = answers.into_iter().filter_map(Result::ok).collect();
    assert_eq!(kept_too.len(), PENDING - PER_IP, "sockets kept in total");

    // The authenticated users were not hurt, nor the HTTP API; the kept sockets work.
    assert_pings(&mut user).await;
    assert_pings(&mut newcomer).await;
    assert_eq!(app.online(&["user"]).await.as_array().unwrap().len(), 1);
    for (i, ws) in kept.iter_mut().enumerate() {
        authenticate(ws, "user", "t", 1, &dev(i + 1)).await;
        assert_pings(ws).await;
    }
    // Those authenticated: the first address has room again, exactly its cap.
    let _more = admitted(&app, 1, PER_IP).await;
    assert_dropped(&app, 1, "the per-address cap after the flood").await;
}

#[tokio::test]
async fn exactly_max_connections_stay_open_and_one_more_is_dropped_at_once() {
    let app = limited_app().await;
    let authenticated = CONNECTIONS - PER_IP;
    let uids: Vec<String> = (0..authenticated).map(|i| format!("c{i}")).collect();
    for uid in &uids {
        app.set_token(uid, "t", 1, 0).await;
    }
    app.set_token("spare", "t", 1, 0).await;
    // 16 authenticated sessions and 4 pending sockets: 20 open, the cap.
    let mut sessions = Vec::new();
    for uid in &uids {
        sessions.push(connected(&app, uid, "t", 1, "web_00000000_1700000000000").await);
    }
    let mut pending = admitted(&app, 2, PER_IP).await;

    // One more is dropped at once, though neither pending cap is reached (4 of 8 pending,
    // none from this address), and so is a would-be user's socket.
    assert_dropped(&app, 3, "the open-connections cap").await;
    assert_dropped(&app, 1, "the open-connections cap").await;

    // All 20 keep working.
    for ws in sessions.iter_mut() {
        assert_pings(ws).await;
    }
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    assert_eq!(
        app.online(&refs).await.as_array().unwrap().len(),
        authenticated
    );
    authenticate(
        &mut pending[0],
        "spare",
        "t",
        1,
        "web_spare000_1700000000000",
    )
    .await;
    assert_pings(&mut pending[0]).await;
    // Authenticating frees a pending slot, not an open one.
    assert_dropped(
        &app,
        3,
        "the open-connections cap, authenticated ones counted",
    )
    .await;

    // One session leaves: its place comes back once it is closed, exactly one.
    let mut leaving = sessions.pop().unwrap();
    let id = rpc_id();
    send_text(
        &mut leaving,
        format!(r#"{{"method":"disconnect","id":"{id}"}}"#),
    )
    .await;
    assert_eq!(next_text(&mut leaving).await, empty_result(&id));
    assert_eq!(expect_close(&mut leaving).await, 1000);
    drop(leaving);
    let _replacement = app.ws_from_within(loopback(3)).await;
    assert_dropped(&app, 3, "the open-connections cap, refilled").await;
    for ws in sessions.iter_mut() {
        assert_pings(ws).await;
    }
}

/// What a raw socket sees until the server closes it: `true` when it got an HTTP 101.
async fn upgraded(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closed the socket within 10 s");
    seen.starts_with(b"HTTP/1.1 101")
}

#[tokio::test]
async fn hostile_upgrades_are_closed_without_an_upgrade_and_give_their_slots_back() {
    let app = limited_app().await;
    let host = app.server().ws_addr();
    let requests: Vec<Vec<u8>> = vec![
        // Not an upgrade at all.
        format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
        // A POST with a body.
        format!("POST /user/token HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}")
            .into_bytes(),
        // An upgrade without its key.
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes(),
        // Not HTTP.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 binary, as a TLS hello would be\r\n\r\n"
            .to_vec(),
        // A header block over 64 KiB, in one piece.
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\n",
            "a".repeat(70_000)
        )
        .into_bytes(),
        // 200 headers.
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
            "X-A: b\r\n".repeat(200)
        )
        .into_bytes(),
    ];
    // Twice the per-address cap of them, one after the other from one address.
    for request in requests.iter().chain(requests.iter()) {
        let mut tcp = app.tcp_from(loopback(1)).await;
        // The server may close before reading it all; a failed write is fine.
        let _ = tcp.write_all(request).await;
        let what = String::from_utf8_lossy(&request[..40.min(request.len())]).to_string();
        assert!(!upgraded(&mut tcp).await, "upgraded: {what:?}");
    }
    // None holds a slot: the whole cap is there, and no more.
    let _kept: Vec<Ws> = join_all((0..PER_IP).map(|_| app.ws_from_within(loopback(1)))).await;
    assert_dropped(&app, 1, "the per-address cap after hostile upgrades").await;
}

/// Sends a header that never ends, a byte every 10 ms, until the server stops taking them or
/// 10 s have passed (a limit under test must end it well before).
pub(crate) async fn trickle_a_header(tcp: &mut tokio::net::TcpStream) {
    let trickle = async {
        for b in b"X-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'z'))
            .take(1000)
        {
            if tcp.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
}

#[tokio::test]
async fn a_slowloris_upgrade_is_cut_by_the_first_frame_limit_at_the_latest() {
    let app = spawn_app_with(&["--max-pending-per-ip", "1", "--first-frame-timeout", "1s"]).await;
    let host = app.server().ws_addr();
    let mut tcp = app.tcp_from(loopback(1)).await;
    tcp.set_nodelay(true).unwrap();
    // The upgrade's start, then one more header byte every 10 ms, never finishing: bounded
    // here to 10 s, which the server must not wait out.
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n");
    let _ = tcp.write_all(head.as_bytes()).await;
    trickle_a_header(&mut tcp).await;
    assert!(!upgraded(&mut tcp).await);
    drop(tcp);
    // Its slot (the only one of its address) comes back.
    let _next = app.ws_from_within(loopback(1)).await;
}

#[tokio::test]
async fn the_first_frame_limit_counts_from_the_upgrade() {
    let app = spawn_app_with(&["--first-frame-timeout", "2s"]).await;
    app.set_token("u1", "t", 1, 0).await;
    let host = app.server().ws_addr().to_string();
    // The upgrade 1.2 s after connecting, the connect 1.2 s after the upgrade: 2.4 s from the
    // accept, within the limit from the upgrade (`protocol.md` 3.2).
    let tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("tcp connects");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut ws = RawWs::upgrade(tcp, &host).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.connect_as("u1", "t", 1, "d1").await;
    // A client that upgrades and then says nothing is still closed at the limit, counted from
    // the upgrade.
    let mut silent = app.raw_ws().await;
    let began = std::time::Instant::now();
    let close = silent.read_frame().await.expect("a close frame");
    assert_eq!(close.close_code(), 1008);
    let waited = began.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[tokio::test]
async fn control_frames_and_an_unfinished_message_do_not_hold_off_the_first_frame_limit() {
    let app = spawn_app_with(&["--first-frame-timeout", "1s"]).await;
    // A ping every 100 ms, each answered with a pong, until the limit closes it anyway.
    let mut pinger = app.raw_ws().await;
    let mut pongs = 0;
    let close = loop {
        assert!(pongs < 100, "still open after 100 pings");
        pinger
            .tcp
            .write_all(&RawWs::masked(0x9, true, b"hi"))
            .await
            .expect("ping sent");
        let frame = pinger.read_frame().await.expect("a pong or a close");
        if frame.opcode != 0xA {
            break frame.close_code();
        }
        pongs += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(close, 1008);
    assert!(pongs >= 2, "{pongs} pongs");

    // The first fragment of a connect, never finished.
    let mut unfinished = app.raw_ws().await;
    let frame = RawWs::masked(0x1, false, br#"{"method":"connect","id":"c","#);
    unfinished.tcp.write_all(&frame).await.unwrap();
    assert_eq!(
        unfinished
            .read_frame()
            .await
            .expect("a close frame")
            .close_code(),
        1008
    );
    assert!(app
        .events()
        .iter()
        .all(|r| !matches!(r.event, Event::Connected(_))));
}

#[tokio::test]
async fn the_message_size_limit_holds_for_the_first_frame_at_its_edge() {
    let app = spawn_app_with(&["--max-message-bytes", "1024"]).await;
    app.set_token("u1", "t", 1, 0).await;
    // A connect padded (an ignored field) to exactly the limit: accepted.
    let frame = |len: usize| {
        let head = r#"{"method":"connect","id":"c","params":{"uid":"u1","token":"t","deviceFlag":1,"header":""#;
        let pad = "x".repeat(len - head.len() - 3);
        let text = format!("{head}{pad}\"}}}}");
        assert_eq!(text.len(), len);
        text
    };
    let mut raw = app.raw_ws().await;
    raw.send_text(&frame(1024)).await;
    let answer: Value =
        serde_json::from_str(raw.read_frame().await.expect("an answer").text()).unwrap();
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");

    // One byte more: closed 1009, nothing recorded.
    let mut raw = app.raw_ws().await;
    raw.send_text(&frame(1025)).await;
    assert_eq!(raw.read_frame().await.expect("a close").close_code(), 1009);

    // A frame header announcing 2^62 bytes: closed 1009 on the header, nothing more read.
    let mut raw = app.raw_ws().await;
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.tcp.write_all(&header).await.unwrap();
    assert_eq!(raw.read_frame().await.expect("a close").close_code(), 1009);

    assert_eq!(app.connected_events("u1").len(), 1);
}

#[tokio::test]
async fn max_uids_per_request_holds_at_its_edge_on_every_route_that_takes_uids() {
    let app = spawn_app_with(&["--max-uids-per-request", "3"]).await;
    let three = json!(["a", "b", "c"]);
    let four = json!(["a", "b", "c", "d"]);
    assert_eq!(
        app.post("/user/onlinestatus", &three).await,
        (200, json!([]))
    );
    assert_eq!(
        app.post("/user/onlinestatus", &four).await,
        (
            400,
            envelope(400, "4 uids requested; at most 3 are allowed per request")
        )
    );
    let add = "/user/systemuids_add";
    let remove = "/user/systemuids_remove";
    let too_many = (
        400,
        envelope(400, "uids holds 4 uids; at most 3 are allowed"),
    );
    assert_eq!(
        app.post(add, &json!({ "uids": three })).await,
        (200, json!({"status": 200}))
    );
    assert_eq!(app.post(add, &json!({ "uids": four })).await, too_many);
    // The refused add changed nothing, nor does the refused remove.
    assert_eq!(app.system_uids().await, json!(["a", "b", "c"]));
    assert_eq!(app.post(remove, &json!({ "uids": four })).await, too_many);
    assert_eq!(app.system_uids().await, json!(["a", "b", "c"]));
    assert_eq!(
        app.post(remove, &json!({ "uids": three })).await,
        (200, json!({"status": 200}))
    );
    assert_eq!(app.system_uids().await, json!([]));
}

#[tokio::test]
async fn a_message_trickled_in_fragments_does_not_hold_off_the_idle_limit() {
    let app = spawn_app_with(&["--idle-timeout", "1s"]).await;
    app.set_token("u1", "t", 1, 0).await;
    let mut raw = app.raw_ws().await;
    raw.connect_as("u1", "t", 1, "web_1a2b3c4d_1700000000000")
        .await;
    // A ping request begun, then one small fragment every 100 ms, never finished, until the
    // server sends something (at most 50): only whole messages count as activity.
    let mut bytes = RawWs::masked(0x1, false, br#"{"method":"ping","id":""#);
    for _ in 0..50 {
        raw.tcp.write_all(&bytes).await.expect("fragment sent");
        bytes = RawWs::masked(0x0, false, b"x");
        tokio::select! {
            _ = raw.tcp.readable() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    assert_eq!(raw.read_frame().await.expect("a close").close_code(), 1000);
    assert_eq!(
        app.close_reasons("u1"),
        vec![wkuser::domain::CloseReason::IdleTimeout]
    );
}
