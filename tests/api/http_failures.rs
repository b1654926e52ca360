//! When the event log fails: a mutation answers 500 in the contract's envelope with no
//! internals and changes nothing, and so does a read served from the log (`/events`); reads
//! answered from memory keep working; once the log recovers, writing resumes with no gap in
//! `seq` (`protocol.md` section 2: an internal failure is a 500).

use std::sync::atomic::Ordering;

use serde_json::json;
use wkuser::domain::Seq;
use wkuser::log::LogStore;

use crate::helpers::*;

#[tokio::test]
async fn a_failing_log_answers_500_and_changes_nothing() {
    let (mut app, failing, _) = flaky_app().await;
    app.set_token("u1", "old", 1, 0).await;
    let (_ws, answer) = app.ws_connect("u1", "old", 1, "d1").await;
    assert_connected(&answer);
    assert_eq!(
        app.post("/user/systemuids_add", &json!({"uids": ["s1"]}))
            .await,
        (200, json!({"status": 200}))
    );
    let last = app.server().write_path().log().last_durable();

    failing.store(true, Ordering::SeqCst);
    let internal = (
        500,
        envelope(
            500,
            "the event log cannot be used right now; nothing was changed, retry later",
        ),
    );
    for (path, body) in [
        (
            "/user/token",
            json!({"uid": "u1", "token": "new", "device_flag": 1}),
        ),
        (
            "/user/token",
            json!({"uid": "u2", "token": "t2", "device_flag": 2}),
        ),
        ("/user/device_quit", json!({"uid": "u1", "device_flag": -1})),
        ("/user/systemuids_add", json!({"uids": ["s2"]})),
        ("/user/systemuids_remove", json!({"uids": ["s1"]})),
    ] {
        assert_eq!(app.post(path, &body).await, internal, "{path} {body}");
    }
    // Reads served from the log fail alike, and the message is as true for them.
    for path in ["/events", "/events?uid=u1"] {
        assert_eq!(app.get(path).await, internal, "{path}");
    }
    // A connect cannot be recorded either: the client gets a system error (not an auth
    // failure: its credentials are right) and a 1011 close, and is not online.
    let (mut ws, answer) = app.ws_connect("u1", "old", 1, "dx").await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": "c-dx", "error": {"code": 15, "message": "system error"}})
    );
    assert_eq!(close_code(&mut ws).await, Some(1011));

    // Reads are answered from memory, so they still work; the state is as before.
    assert_eq!(
        app.online(&["u1", "u2"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );
    assert_eq!(app.system_uids().await, json!(["s1"]));
    assert_eq!(app.get("/healthz").await, (200, json!({"status": 200})));
    assert_eq!(app.server().write_path().log().last_durable(), last);

    // Recovered: the old token still admits, the refused ones never took effect, and the
    // next events follow the last acknowledged one.
    failing.store(false, Ordering::SeqCst);
    let (_ws2, answer) = app.ws_connect("u1", "old", 1, "d2").await;
    assert_connected(&answer);
    let (_ws3, answer) = app.ws_connect("u1", "new", 1, "d3").await;
    assert_eq!(answer, auth_fail("c-d3"));
    let (_ws4, answer) = app.ws_connect("u2", "t2", 2, "d4").await;
    assert_eq!(answer, auth_fail("c-d4"));
    assert_eq!(
        app.server().write_path().log().last_durable(),
        Seq(last.0 + 1)
    );
    app.set_token("u2", "t2", 2, 0).await;
    let events = app.events();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (1..=last.0 + 2).collect::<Vec<_>>());
    app.stop().await;
}

#[tokio::test]
async fn a_batch_that_fails_to_flush_is_taken_back_and_never_comes_back() {
    let (mut app, _, failing_flush, store) = flaky_app_and_store().await;
    app.set_token("u1", "old", 1, 0).await;
    let last = app.server().write_path().log().last_durable();

    failing_flush.store(true, Ordering::SeqCst);
    for token in ["refused-1", "refused-2", "refused-3"] {
        let (status, _) = app
            .post(
                "/user/token",
                &json!({"uid": "u1", "token": token, "device_flag": 1}),
            )
            .await;
        assert_eq!(status, 500, "an unflushed append is not acknowledged");
    }
    assert_eq!(app.server().write_path().log().last_durable(), last);
    // In the store itself, not only behind the log's durable-only reads: taken back.
    assert!(
        store.read_after(last, 100).unwrap().is_empty(),
        "nothing of the failed batches is left in the store"
    );
    drop(store);
    failing_flush.store(false, Ordering::SeqCst);

    // The disk recovered: appends are acknowledged again without a restart, right after the
    // last acknowledged one.
    assert_eq!(
        app.post(
            "/user/token",
            &json!({"uid": "u2", "token": "resumed", "device_flag": 2}),
        )
        .await,
        (200, json!({"status": 200}))
    );
    assert_eq!(
        app.server().write_path().log().last_durable(),
        Seq(last.0 + 1)
    );

    // After a restart (the store reopened without fault injection: plain sled), the refused
    // tokens admit nobody and the old one still works.
    app.stop().await;
    let app = crate::helpers::start_on(&app.data_dir, app.flags.clone()).await;
    let (_ws, answer) = app.ws_connect("u1", "refused-3", 1, "d1").await;
    assert_eq!(answer, auth_fail("c-d1"));
    let (_ws, answer) = app.ws_connect("u1", "old", 1, "d2").await;
    assert_connected(&answer);
    let (_ws, answer) = app.ws_connect("u2", "resumed", 2, "d3").await;
    assert_connected(&answer);
    let events = app.events();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, Seq(i as u64 + 1), "seq stays dense");
    }
}
