//! The online-status webhook (protocol.md section 7) against a real HTTP receiver: the body,
//! the counts, the order, the headers and the signature; a receiver that is down or answers
//! errors gets every entry once it is back; a graceful stop's offline entries arrive.

use std::time::{Duration, Instant};

use serde_json::Value;
use wkuser::domain::{Event, Seq};

use crate::helpers::*;
use crate::webhook_receiver::{expected_entries, Receiver};

async fn stats(app: &TestApp) -> Value {
    let (status, body) = app.get("/stats").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The seqs of the `Connected` events of `uid`, in log order.
fn connected_seqs(app: &TestApp, uid: &str) -> Vec<u64> {
    app.events()
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Connected(c) if c.uid.as_str() == uid => Some(r.seq.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_start_and_end_arrives_in_log_order_counted_per_flag_and_in_total_and_signed() {
    let receiver = Receiver::start(Some("s3cret")).await;
    let url = receiver.url();
    let app = spawn_app_with(&["--webhook-url", &url, "--webhook-secret", "s3cret"]).await;
    app.set_token("u1", "t1", 1, 0).await;
    app.set_token("u1", "t2", 2, 0).await;
    app.set_token("u-2", "t3", 1, 0).await;

    // Two devices of u1 on flag 1, one on flag 2, and another user: each waited for, so that
    // the order of the entries is the order of these steps.
    let (mut a, _) = app.ws_connect("u1", "t1", 1, "phone-a").await;
    receiver.wait_taken(1).await;
    let (mut b, _) = app.ws_connect("u1", "t1", 1, "phone-b").await;
    receiver.wait_taken(2).await;
    let (_c, _) = app.ws_connect("u1", "t2", 2, "pad").await;
    receiver.wait_taken(3).await;
    let (_d, _) = app.ws_connect("u-2", "t3", 1, "x").await;
    receiver.wait_taken(4).await;
    a.close(None).await.unwrap();
    receiver.wait_taken(5).await;
    app.device_quit("u1", 2).await;
    receiver.wait_taken(6).await;
    b.close(None).await.unwrap();
    let taken = receiver.wait_taken(7).await;

    let u1 = connected_seqs(&app, "u1");
    let u2 = connected_seqs(&app, "u-2");
    let (sa, sb, sc, sd) = (u1[0], u1[1], u1[2], u2[0]);
    assert_eq!(
        taken,
        [
            format!("u1-1-1-{sa}-1-1"),
            format!("u1-1-1-{sb}-2-2"),
            format!("u1-2-1-{sc}-1-3"),
            format!("u-2-1-1-{sd}-1-1"),
            format!("u1-1-0-{sa}-1-2"),
            format!("u1-2-0-{sc}-0-1"),
            format!("u1-1-0-{sb}-0-0"),
        ]
    );
    assert_eq!(taken, expected_entries(&app.events()));
    for batch in receiver.batches() {
        assert_eq!(batch.query.as_deref(), Some("event=user.onlinestatus"));
        assert_eq!(batch.content_type.as_deref(), Some("application/json"));
        assert_eq!(batch.signature_ok, Some(true), "{batch:?}");
        assert_eq!(batch.answered, 200);
        assert!(batch.from <= batch.to && batch.entries.len() <= 512);
    }
    // Each batch covers the seqs of its entries: an online entry's connId is in its range.
    for batch in receiver.batches() {
        for e in &batch.entries {
            let f: Vec<&str> = e.rsplitn(6, '-').collect();
            if f[3] == "1" {
                let conn: u64 = f[2].parse().unwrap();
                assert!((batch.from..=batch.to).contains(&conn), "{e} in {batch:?}");
            }
        }
    }
    let last_seq = app.server().write_path().subscribers().last_published().0;
    let seen = eventually(
        "the webhook's cursor at the log's end",
        async || stats(&app).await,
        |s| s["webhook_cursor"] == last_seq && s["webhook_pending"] == 0,
    )
    .await;
    assert_eq!(seen["webhook_last_error"], Value::Null);
    // The metrics read the same figures.
    let scrape = crate::metrics::scrape(&app.api).await;
    let gauge = |name| crate::metrics::value(&scrape, name, &[]);
    assert_eq!(gauge("wkuser_webhook_enabled"), Some(1.0));
    assert_eq!(gauge("wkuser_webhook_cursor"), Some(last_seq as f64));
    assert_eq!(gauge("wkuser_webhook_pending"), Some(0.0));
    assert_eq!(gauge("wkuser_webhook_failing"), Some(0.0));
}

#[tokio::test]
async fn a_receiver_that_checks_the_signature_with_another_key_finds_it_wrong() {
    let receiver = Receiver::start(Some("not-the-key")).await;
    let url = receiver.url();
    let app = spawn_app_with(&["--webhook-url", &url, "--webhook-secret", "the-key"]).await;
    app.set_token("u", "t", 1, 0).await;
    let _ws = app.ws_connect("u", "t", 1, "d").await;
    receiver.wait_taken(1).await;
    assert_eq!(receiver.batches()[0].signature_ok, Some(false));
    // And without a secret, no signature is sent at all.
    let plain = Receiver::start(Some("any")).await;
    let url = plain.url();
    let app = spawn_app_with(&["--webhook-url", &url]).await;
    app.set_token("u", "t", 1, 0).await;
    let _ws = app.ws_connect("u", "t", 1, "d").await;
    plain.wait_taken(1).await;
    assert_eq!(plain.batches()[0].signature_ok, Some(false));
}

#[tokio::test]
async fn a_receiver_down_for_10_s_then_back_gets_every_entry_in_order() {
    let receiver = Receiver::start(None).await;
    let url = receiver.url();
    let app = spawn_app_with(&["--webhook-url", &url]).await;
    for i in 0..6 {
        app.set_token(&format!("u{i}"), "t", (i % 3) as u8, 0).await;
    }
    receiver.down().await;
    let down_since = Instant::now();
    // Sessions come and go while nobody is there.
    let mut open = Vec::new();
    for round in 0..3 {
        for i in 0..6 {
            let (ws, answer) = app
                .ws_connect(&format!("u{i}"), "t", (i % 3) as u8, &format!("d{round}"))
                .await;
            assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
            open.push(ws);
        }
        for mut ws in open.drain(..4) {
            ws.close(None).await.unwrap();
        }
    }
    let seen = eventually(
        "entries waiting and the failure shown",
        async || stats(&app).await,
        |s| s["webhook_pending"].as_u64() > Some(20) && s["webhook_last_error"].is_string(),
    )
    .await;
    assert!(
        seen["webhook_last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the receiver"),
        "{seen}"
    );
    assert!(receiver.batches().is_empty());
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_since.elapsed())).await;
    receiver.up().await;

    // Every entry of the log, in its order, once.
    let events_now = app.events();
    let expected = expected_entries(&events_now);
    assert_eq!(expected.len(), 18 + 12);
    let taken = receiver.wait_taken(expected.len()).await;
    assert_eq!(taken, expected);
    eventually(
        "nothing pending",
        async || stats(&app).await,
        |s| s["webhook_pending"] == 0,
    )
    .await;
    drop(open);
}

#[tokio::test]
async fn answers_of_500_are_retried_with_the_same_batch_until_a_200_and_nothing_is_dropped() {
    let receiver = Receiver::start(None).await;
    let url = receiver.url();
    let app = spawn_app_with(&["--webhook-url", &url]).await;
    app.set_token("u", "t", 1, 0).await;
    receiver.fail_next(&[500, 500, 503]);
    let mut sockets = Vec::new();
    for i in 0..4 {
        sockets.push(app.ws_connect("u", "t", 1, &format!("d{i}")).await.0);
    }
    for mut ws in sockets {
        ws.close(None).await.unwrap();
    }
    app.wait_offline("u").await;
    let expected = expected_entries(&app.events());
    assert_eq!(expected.len(), 8);
    let taken = receiver.wait_taken(8).await;
    assert_eq!(taken, expected);
    let batches = receiver.batches();
    let answers: Vec<u16> = batches.iter().take(4).map(|b| b.answered).collect();
    assert_eq!(answers, [500, 500, 503, 200]);
    // Each retry carried the very batch that failed.
    for b in &batches[1..4] {
        assert_eq!(
            (b.from, b.to, &b.entries),
            (batches[0].from, batches[0].to, &batches[0].entries)
        );
    }
    let s = stats(&app).await;
    assert!(
        s["webhook_last_error"]
            .as_str()
            .is_some_and(|e| e.ends_with("the receiver answered 503")),
        "{s}"
    );
    let scrape = crate::metrics::scrape(&app.api).await;
    let failed_at =
        crate::metrics::value(&scrape, "wkuser_webhook_last_error_timestamp_seconds", &[]);
    assert!(failed_at.is_some_and(|t| t > 1.7e9), "{failed_at:?}");
}

#[tokio::test]
async fn a_graceful_stop_delivers_its_sessions_offline_entries_before_it_exits() {
    let receiver = Receiver::start(None).await;
    let url = receiver.url();
    let mut app = spawn_app_with(&["--webhook-url", &url]).await;
    app.set_token("u", "t", 1, 0).await;
    app.set_token("u", "t", 2, 0).await;
    let _a = app.ws_connect("u", "t", 1, "a").await;
    let _b = app.ws_connect("u", "t", 1, "b").await;
    let _c = app.ws_connect("u", "t", 2, "c").await;
    receiver.wait_taken(3).await;
    let data_dir = app.data_dir.clone();
    app.stop().await;
    // Already there when the stop returns: no wait.
    let taken = receiver.taken();
    let log = wkuser::ops::open_stopped_log(&data_dir).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    log.close().await;
    assert_eq!(taken, expected_entries(&events));
    assert_eq!(taken.len(), 6);
    assert!(
        taken[3..].iter().all(|e| e.split('-').nth(2) == Some("0")),
        "{taken:?}"
    );
    assert!(taken[5].ends_with("-0-0"), "{taken:?}");
    let closes = events
        .iter()
        .filter(|r| matches!(&r.event, Event::Disconnected(d) if d.reason == wkuser::domain::CloseReason::ServerShutdown))
        .count();
    assert_eq!(closes, 3);

    // A restart sends none of it again (the stop saved its cursor), and goes on.
    let batches_before = receiver.batches().len();
    app.restart().await;
    let _d = app.ws_connect("u", "t", 2, "d").await;
    let taken = receiver.wait_taken(7).await;
    assert_eq!(taken.len(), 7);
    assert_eq!(receiver.batches().len(), batches_before + 1);
    assert!(taken[6].starts_with("u-2-1-"), "{taken:?}");
}
