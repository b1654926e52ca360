//! Order under concurrency (`architecture.md` 2, `protocol.md` 3.5): concurrent master connects
//! of one uid + flag leave exactly one session and record every other one's close; a thousand
//! concurrent connects of distinct uids are all online, then all offline, each with its pair of
//! events.

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use wkuser::domain::{CloseReason, Event};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_master_connects_leave_exactly_one_session() {
    const N: usize = 50;
    let app = spawn_app().await;
    app.set_token("m1", "t", 1, 1).await;
    let frames: Vec<String> = (0..N)
        .map(|i| {
            easy_connect(
                "m1",
                "t",
                &format!("web_{i:08x}_1700000000000"),
                1,
                now_ms(),
                &rpc_id(),
            )
        })
        .collect();
    let mut sockets = Vec::new();
    for frame in frames {
        let url = app.ws.clone();
        sockets.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("ws connects");
            send_text(&mut ws, frame).await;
            let answer = next_text(&mut ws).await;
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(v["result"]["reasonCode"], 1, "{answer}");
            // Then either the session stays (nothing more within a moment) or it is kicked.
            ws
        }));
    }
    let mut sockets: Vec<Ws> = futures_util::future::join_all(sockets)
        .await
        .into_iter()
        .map(|r| r.expect("connect task"))
        .collect();

    // Every kicked socket gets the notification and a close; exactly one does not.
    assert_eq!(app.server().write_path().presence().counts().1, 1);
    let mut kicked = 0;
    let mut survivors = Vec::new();
    for (i, ws) in sockets.iter_mut().enumerate() {
        // A survivor answers a ping; a kicked one's next frame is the kick.
        let id = rpc_id();
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::text(easy_ping(
                &id,
            )))
            .await;
        match next_frame(ws).await {
            Frame::Text(t) if t == empty_result(&id) => survivors.push(i),
            Frame::Text(t) => {
                assert_eq!(t, kick_text("login in other device"));
                assert_eq!(expect_close(ws).await, 1000);
                kicked += 1;
            }
            other => panic!("socket {i}: unexpected {other:?}"),
        }
    }
    assert_eq!((survivors.len(), kicked), (1, N - 1));
    // Only the survivor is still registered to receive a close order.
    assert_eq!(app.server().write_path().subscribers().live().len(), 1);
    assert_eq!(
        app.online(&["m1"]).await,
        json!([{"uid": "m1", "device_flag": 1, "online": 1}])
    );
    let connected = app.connected_events("m1");
    assert_eq!(connected.len(), N);
    let reasons = app.close_reasons("m1");
    assert_eq!(reasons, vec![CloseReason::MasterLogin; N - 1]);
    // The survivor is the last one connected.
    let last = connected.last().unwrap().device_id.as_str().to_owned();
    assert_eq!(last, format!("web_{:08x}_1700000000000", survivors[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connects_are_all_online_then_all_offline() {
    const N: usize = 1000;
    // A client and a server socket per connection, HTTP connections, the log and the view,
    // and the other tests of this binary running alongside.
    ensure_open_files(4096);
    let app = spawn_app().await;
    let uids: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();

    // Register the tokens concurrently (64 requests in flight).
    futures_util::stream::iter(uids.iter())
        .for_each_concurrent(64, |uid| {
            let app = &app;
            async move { app.set_token(uid, &format!("tok-{uid}"), 1, 0).await }
        })
        .await;

    let mut tasks = Vec::with_capacity(N);
    for uid in &uids {
        let (url, uid) = (app.ws.clone(), uid.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("ws connects");
            let id = rpc_id();
            let frame = easy_connect(
                &uid,
                &format!("tok-{uid}"),
                &web_device_id(),
                1,
                now_ms(),
                &id,
            );
            send_text(&mut ws, frame).await;
            let answer = next_text(&mut ws).await;
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(v["id"], json!(id));
            assert_eq!(v["result"]["reasonCode"], 1, "{uid}: {answer}");
            ws
        }));
    }
    let sockets: Vec<Ws> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("connect task"))
        .collect();

    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    let rows = app.online(&refs).await;
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), N);
    for (row, uid) in rows.iter().zip(&uids) {
        assert_eq!(row, &json!({"uid": uid, "device_flag": 1, "online": 1}));
    }

    // Every client closes, concurrently.
    let closes: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                ws.close(None).await.expect("close sent");
                assert!(matches!(
                    next_frame(&mut ws).await,
                    Frame::Close(_) | Frame::Gone
                ));
            })
        })
        .collect();
    for c in futures_util::future::join_all(closes).await {
        c.expect("close task");
    }
    // Client-initiated: each close is recorded after its socket's end.
    app.wait_online(&refs, json!([])).await;
    assert_eq!(
        app.server().write_path().subscribers().live().len(),
        0,
        "close orders still registered"
    );

    let mut per_uid: HashMap<String, (usize, usize)> = HashMap::new();
    for r in app.events() {
        match r.event {
            Event::Connected(c) => per_uid.entry(c.uid.as_str().to_owned()).or_default().0 += 1,
            Event::Disconnected(d) => {
                assert_eq!(d.reason, CloseReason::ClientClosed);
                per_uid.entry(d.uid.as_str().to_owned()).or_default().1 += 1
            }
            _ => {}
        }
    }
    assert_eq!(per_uid.len(), N);
    for uid in &uids {
        assert_eq!(per_uid.get(uid), Some(&(1, 1)), "{uid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_racing_a_connect_is_seen_after_the_result_or_refuses_the_connect() {
    // Each of N uids connects while its device_quit runs. Whichever is decided first, the
    // client sees either "auth fail" then 1008, or its result, then the kick, then 1000; never
    // a kick before its result, and nobody is left online.
    const N: usize = 100;
    let app = std::sync::Arc::new(spawn_app().await);
    let uids: Vec<String> = (0..N).map(|i| format!("racer{i}")).collect();
    futures_util::stream::iter(uids.iter())
        .for_each_concurrent(32, |uid| {
            let app = &app;
            async move { app.set_token(uid, "t", 1, 0).await }
        })
        .await;

    let mut tasks = Vec::new();
    for (i, uid) in uids.iter().enumerate() {
        let (app, uid) = (app.clone(), uid.clone());
        // Staggered by 0 to 3 ms so that both orders happen (the HTTP request is usually the
        // slower of the two).
        let stagger = std::time::Duration::from_millis((i % 4) as u64);
        tasks.push(tokio::spawn(async move {
            let mut ws = app.ws_open().await;
            let id = rpc_id();
            let frame = easy_connect(&uid, "t", &web_device_id(), 1, now_ms(), &id);
            let (_, first) = tokio::join!(app.device_quit(&uid, 1), async {
                tokio::time::sleep(stagger).await;
                send_text(&mut ws, frame).await;
                next_text(&mut ws).await
            });
            let outcome = if first == auth_fail_text(&id) {
                assert_eq!(expect_close(&mut ws).await, 1008, "{uid}");
                false
            } else {
                let v: Value = serde_json::from_str(&first).unwrap();
                assert_eq!(v["id"], json!(id), "{uid}: {first}");
                assert_eq!(v["result"]["reasonCode"], 1, "{uid}: {first}");
                assert_eq!(next_text(&mut ws).await, kick_text("device quit"), "{uid}");
                assert_eq!(expect_close(&mut ws).await, 1000, "{uid}");
                true
            };
            (uid, outcome)
        }));
    }
    let outcomes: Vec<(String, bool)> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("race task"))
        .collect();

    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    assert_eq!(app.online(&refs).await, json!([]));
    assert_eq!(
        app.server().write_path().subscribers().live().len(),
        0,
        "close orders still registered"
    );
    for (uid, connected) in &outcomes {
        let n = usize::from(*connected);
        assert_eq!(app.connected_events(uid).len(), n, "{uid}");
        assert_eq!(
            app.close_reasons(uid),
            vec![CloseReason::DeviceQuit; n],
            "{uid}"
        );
    }
}
