//! The webhook across crashes of the real binary: kill -9 between a delivery and the save of
//! its cursor resends that very batch (a duplicate the receiver drops by its seq headers) and
//! loses nothing; the sessions a crash left open get their offline entries after the restart
//! (`server_restart`); kills at random moments under churn lose no entry either.

use std::path::Path;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wkuser::domain::{CloseReason, Event, RecordedEvent, Seq};

use crate::helpers::*;
use crate::webhook_receiver::{assert_same_entries, expected_entries, Receiver};

async fn webhook_node(dir: &Path, receiver: &Receiver) -> Node {
    let url = receiver.url();
    start_node_with(dir, "info", &["--webhook-url", &url]).await
}

/// Connects to `node`'s gateway as the EasySDK does; asserts the success.
async fn connect(node: &Node, uid: &str, flag: u8, device: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    let frame = easy_connect(uid, "t", device, flag, now_ms(), "c1");
    ws.send(Message::text(frame)).await.unwrap();
    let answer = next_json(&mut ws).await.expect("an answer to connect");
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    ws
}

async fn set_tokens(node: &Node, http: &reqwest::Client, tokens: &[(&str, u8)]) {
    for (uid, flag) in tokens {
        let body = json!({"uid": uid, "token": "t", "device_flag": flag, "device_level": 0});
        node.post_ok(http, "/user/token", body).await;
    }
}

/// Every event of a stopped data directory.
async fn log_of(dir: &Path) -> Vec<RecordedEvent> {
    let log = wkuser::ops::open_stopped_log(dir).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    log.close().await;
    events
}

#[tokio::test]
async fn kill_9_between_a_delivery_and_its_cursor_save_resends_that_batch_and_loses_nothing() {
    let receiver = Receiver::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = webhook_node(dir.path(), &receiver).await;
    set_tokens(&node, &http, &[("u1", 1), ("u2", 1), ("u2", 2)]).await;
    let _a = connect(&node, "u1", 1, "a").await;
    let _b = connect(&node, "u2", 1, "b").await;
    receiver.wait_taken(2).await;

    // The receiver takes the next batch, and the server is killed before it hears the 200.
    let held = receiver.hold_next();
    let _c = connect(&node, "u2", 2, "c").await;
    let batch = tokio::time::timeout(Duration::from_secs(10), held.arrived)
        .await
        .expect("the batch arrives")
        .unwrap();
    node.sigkill().await;
    let _ = held.release.send(());
    assert_eq!(receiver.taken().len(), 3);

    // Started again: that very batch comes again first, then the closes the crash left.
    let node = webhook_node(dir.path(), &receiver).await;
    let taken = receiver.wait_taken(6).await;
    let again: Vec<_> = receiver
        .batches()
        .into_iter()
        .filter(|b| (b.from, b.to) == (batch.from, batch.to))
        .collect();
    assert_eq!(again.len(), 2, "the batch in flight is sent again, exactly");
    assert_eq!(again[0].entries, again[1].entries);
    node.sigterm_and_wait().await;
    let events = log_of(dir.path()).await;
    assert_eq!(taken, expected_entries(&events));
    assert_eq!(
        receiver.taken(),
        taken,
        "nothing more after the graceful stop"
    );
}

/// The answer of the last batch is saved once the log has been quiet a moment (otherwise the
/// next batch's save records it): a kill -9 after that resends nothing already answered.
#[tokio::test]
async fn kill_9_once_the_log_is_quiet_resends_no_batch_already_answered() {
    let receiver = Receiver::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = webhook_node(dir.path(), &receiver).await;
    set_tokens(&node, &http, &[("u1", 1), ("u2", 1)]).await;
    let _a = connect(&node, "u1", 1, "a").await;
    let _b = connect(&node, "u2", 1, "b").await;
    receiver.wait_taken(2).await;
    // Twenty times the quiet moment the delivery waits before saving by itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.sigkill().await;

    let node = webhook_node(dir.path(), &receiver).await;
    let taken = receiver.wait_taken(4).await;
    node.sigterm_and_wait().await;
    let mut ranges: Vec<_> = receiver.batches().iter().map(|b| (b.from, b.to)).collect();
    let sent = ranges.len();
    ranges.sort();
    ranges.dedup();
    assert_eq!(ranges.len(), sent, "a batch was sent twice: {ranges:?}");
    assert_eq!(taken, expected_entries(&log_of(dir.path()).await));
}

#[tokio::test]
async fn sessions_a_crash_left_open_get_their_offline_entries_after_the_restart() {
    let receiver = Receiver::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = webhook_node(dir.path(), &receiver).await;
    set_tokens(&node, &http, &[("u", 1), ("u", 2), ("v", 1)]).await;
    // Two devices of u on flag 1, one on flag 2, one of v.
    let _s = [
        connect(&node, "u", 1, "a").await,
        connect(&node, "u", 1, "b").await,
        connect(&node, "u", 2, "c").await,
        connect(&node, "v", 1, "d").await,
    ];
    receiver.wait_taken(4).await;
    node.sigkill().await;

    let node = webhook_node(dir.path(), &receiver).await;
    let taken = receiver.wait_taken(8).await;
    node.sigterm_and_wait().await;
    let events = log_of(dir.path()).await;
    assert_eq!(taken, expected_entries(&events));
    let restart_closes: Vec<u64> = events
        .iter()
        .filter(|r| matches!(&r.event, Event::Disconnected(d) if d.reason == CloseReason::ServerRestart))
        .map(|r| r.seq.0)
        .collect();
    assert_eq!(restart_closes.len(), 4);
    // The four offline entries, counts going down to nothing for each user.
    let offline = &taken[4..];
    assert!(
        offline.iter().all(|e| e.rsplit('-').nth(3) == Some("0")),
        "{offline:?}"
    );
    let last_of = |uid: &str| {
        offline
            .iter()
            .rfind(|e| e.starts_with(&format!("{uid}-")))
            .unwrap()
            .clone()
    };
    assert!(last_of("u").ends_with("-0-0") && last_of("v").ends_with("-0-0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_random_moments_under_churn_lose_no_entry() {
    let receiver = Receiver::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut logs = Vec::new();
    for round in 0..3u64 {
        let node = webhook_node(dir.path(), &receiver).await;
        logs.push(node.stderr.clone());
        let uids: Vec<String> = (0..6).map(|i| format!("r{round}u{i}")).collect();
        for uid in &uids {
            set_tokens(&node, &http, &[(uid.as_str(), 1)]).await;
        }
        let mut churn = tokio::task::JoinSet::new();
        for (i, uid) in uids.iter().enumerate() {
            let (ws_url, uid) = (node.ws.clone(), uid.clone());
            churn.spawn(async move {
                let mut kept = Vec::new();
                for k in 0.. {
                    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
                        return;
                    };
                    let frame = easy_connect(&uid, "t", &format!("d{i}-{k}"), 1, now_ms(), "c");
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                    if k % 3 == 0 {
                        kept.push(ws);
                    } else {
                        let _ = ws.close(None).await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        tokio::time::sleep(Duration::from_millis(300 + nanos % 700)).await;
        node.sigkill().await;
        churn.abort_all();
        while churn.join_next().await.is_some() {}
    }
    // A last lifetime closes what the last crash left, and stops cleanly.
    let node = webhook_node(dir.path(), &receiver).await;
    logs.push(node.stderr.clone());
    node.sigterm_and_wait().await;
    for (i, log) in logs.iter().enumerate() {
        for line in log.lock().iter().filter(|l| l.contains("webhook")) {
            eprintln!("lifetime {i}: {line}");
        }
    }
    let events = log_of(dir.path()).await;
    let expected = expected_entries(&events);
    assert!(
        expected.len() > 30,
        "the churn ran: {} entries",
        expected.len()
    );
    // The graceful stop delivered everything before it exited.
    assert_same_entries(&receiver.taken(), &expected);
}
