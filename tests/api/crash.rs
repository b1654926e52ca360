//! Crashes: the real binary as a child process, killed with SIGKILL at a random moment while
//! several tasks update tokens, connect and close; then started again on the same data
//! directory. Nothing acknowledged may be lost, nobody from before the crash may stay online,
//! `seq` stays dense, and the SQL view equals a rebuild of the log.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use wkuser::domain::{CloseReason, Event, Seq};
use wkuser::ops::{open_stopped_log, replay};

use crate::helpers::start_node;

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// What the server acknowledged before the crash.
#[derive(Default)]
struct Acked {
    /// (uid, device_flag, token)
    tokens: Vec<(String, u8, String)>,
    /// (uid, device_id)
    connects: Vec<(String, String)>,
}

async fn drive_tokens(
    http: reqwest::Client,
    api: String,
    uids: Vec<String>,
    acked: Arc<Mutex<Acked>>,
) {
    for k in 0.. {
        for uid in &uids {
            let token = format!("tok-{uid}-{k}");
            let body = json!({"uid": uid, "token": token, "device_flag": 1, "device_level": k % 2});
            let Ok(resp) = http
                .post(format!("{api}/user/token"))
                .body(body.to_string())
                .send()
                .await
            else {
                return;
            };
            if resp.status() != 200 {
                return;
            }
            acked.lock().tokens.push((uid.clone(), 1, token));
        }
    }
}

async fn drive_connects(ws_url: String, uids: Vec<String>, task: usize, acked: Arc<Mutex<Acked>>) {
    let mut open = Vec::new();
    for k in 0.. {
        for uid in &uids {
            let device_id = format!("dev_{task}_{k}_{uid}");
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
                return;
            };
            let frame = format!(
                r#"{{"method":"connect","params":{{"uid":"{uid}","token":"stable-{uid}","deviceId":"{device_id}","deviceFlag":2}},"id":"c{k}"}}"#
            );
            if ws.send(Message::text(frame)).await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["result"]["reasonCode"], 1, "{v}");
                    acked.lock().connects.push((uid.clone(), device_id));
                }
                _ => return,
            }
            // Close every other one; keep the rest open for the crash to find.
            if k % 2 == 0 {
                let _ = ws.close(None).await;
            } else {
                open.push(ws);
            }
        }
    }
}

/// A pseudo-random number in `0..n` from the clock (enough to vary the kill moment).
fn jitter(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_a_random_moment_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut all_acked = Acked::default();
    for round in 0..3 {
        let node = start_node(dir.path()).await;
        let uids: Vec<String> = (0..8).map(|i| format!("crash_r{round}_u{i}")).collect();
        for uid in &uids {
            let body = json!({"uid": uid, "token": format!("stable-{uid}"), "device_flag": 2});
            node.post_ok(&http, "/user/token", body).await;
        }
        let acked = Arc::new(Mutex::new(Acked::default()));
        let mut load = tokio::task::JoinSet::new();
        for t in 0..2 {
            let mine: Vec<String> = uids.iter().skip(t).step_by(2).cloned().collect();
            load.spawn(drive_tokens(
                http.clone(),
                node.api.clone(),
                mine.clone(),
                acked.clone(),
            ));
            load.spawn(drive_connects(node.ws.clone(), mine, t, acked.clone()));
        }
        tokio::time::sleep(Duration::from_millis(150 + jitter(600))).await;
        node.sigkill().await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while load.join_next().await.is_some() {}
        })
        .await
        .expect("the load tasks end once the server is gone");
        let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner();
        assert!(
            !acked.tokens.is_empty() && !acked.connects.is_empty(),
            "the load ran before the kill"
        );

        // Started again: nobody from before the crash is online.
        let node = start_node(dir.path()).await;
        let resp = http
            .post(format!("{}/user/onlinestatus", node.api))
            .body(json!(uids).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
        node.sigterm_and_wait().await;
        all_acked.tokens.extend(acked.tokens);
        all_acked.connects.extend(acked.connects);
    }

    // The log: dense, complete for what was acknowledged, every session closed.
    let log = open_stopped_log(dir.path()).await.unwrap();
    let events = log.read_after(Seq(0), usize::MAX).unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, Seq(i as u64 + 1), "seq is dense");
    }
    let mut token_events = std::collections::HashMap::new();
    let mut connected = std::collections::HashMap::new();
    let mut closed = std::collections::HashSet::new();
    for e in &events {
        match &e.event {
            Event::TokenUpdated(t) => {
                token_events.insert(
                    (t.uid.to_string(), t.device_flag.0, t.token_hash.to_hex()),
                    e.seq,
                );
            }
            Event::Connected(c) => {
                connected.insert(
                    c.session_id,
                    (c.uid.to_string(), c.device_id.as_str().to_owned()),
                );
            }
            Event::Disconnected(d) => {
                assert!(closed.insert(d.session_id), "a session closes at most once");
            }
            _ => {}
        }
    }
    for (uid, flag, token) in &all_acked.tokens {
        assert!(
            token_events.contains_key(&(uid.clone(), *flag, sha256_hex(token))),
            "acknowledged token update of {uid} lost"
        );
    }
    let connected_devices: std::collections::HashSet<_> = connected.values().cloned().collect();
    for c in &all_acked.connects {
        assert!(
            connected_devices.contains(c),
            "acknowledged connect {c:?} lost"
        );
    }
    for session in connected.keys() {
        assert!(closed.contains(session), "session {session} never closed");
    }
    assert!(
        matches!(events.last().map(|e| &e.event), Some(Event::NodeStopped(_))),
        "a graceful stop ends with NodeStopped"
    );
    // Each start closes what the lifetime before it left open, as `server_restart`, before
    // it records `NodeStarted`; and the kills did find sessions open.
    let mut open = std::collections::HashSet::new();
    let mut restart_closes_pending = 0;
    let mut restart_closes = 0;
    for e in &events {
        match &e.event {
            Event::Connected(c) => {
                assert_eq!(
                    restart_closes_pending, 0,
                    "server_restart closes only at a start"
                );
                open.insert(c.session_id);
            }
            Event::Disconnected(d) => {
                open.remove(&d.session_id);
                if d.reason == CloseReason::ServerRestart {
                    restart_closes_pending += 1;
                }
            }
            Event::NodeStarted(_) => {
                assert!(open.is_empty(), "{} sessions open at a start", open.len());
                restart_closes += restart_closes_pending;
                restart_closes_pending = 0;
            }
            _ => {}
        }
    }
    assert_eq!(
        restart_closes_pending, 0,
        "server_restart closes only at a start"
    );
    assert!(restart_closes > 0, "the kills found no session open");

    // The view: it holds what was acknowledged and equals a rebuild of the log.
    let verdict = replay::verify(&log, &dir.path().join("view.sqlite"))
        .await
        .unwrap();
    assert_eq!(
        verdict.behind, 0,
        "a graceful stop lets the projector finish"
    );
    assert!(verdict.differences.is_empty(), "{:#?}", verdict.differences);
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("view.sqlite"));
    let pool = wkuser::view::sqlite::pool_options(1)
        .connect_with(options)
        .await
        .unwrap();
    for (uid, device_id) in &all_acked.connects {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT reason FROM device_sessions WHERE uid = ?1 AND device_id = ?2")
                .bind(uid)
                .bind(device_id)
                .fetch_optional(&pool)
                .await
                .unwrap();
        let reason = row
            .unwrap_or_else(|| panic!("acknowledged connect {uid}/{device_id} not in the view"))
            .0;
        assert!(reason.is_some(), "{uid}/{device_id} still open in the view");
    }
    for (uid, flag, token) in &all_acked.tokens {
        // The view applied this update, or a later one of the same uid + flag.
        let seq = token_events[&(uid.clone(), *flag, sha256_hex(token))];
        let updated: i64 = sqlx::query_scalar(
            "SELECT updated_seq FROM tokens WHERE uid = ?1 AND device_flag = ?2",
        )
        .bind(uid)
        .bind(i64::from(*flag))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            updated as u64 >= seq.0,
            "token update {seq} of {uid} missing from the view"
        );
    }
    pool.close().await;
    log.close().await;
}
