//! `GET /stats`: the counters move with the state (a user, a session, the log), RSS is reported
//! on Linux, and the route is behind the manager token like the rest of the API.

use serde_json::Value;

use crate::helpers::*;

fn count(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count: {stats}"))
}

#[tokio::test]
async fn counts_follow_users_sessions_and_the_log() {
    let app = spawn_app().await;
    let (status, before) = app.get("/stats").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(count(&before, "open_connections"), 0);
    assert_eq!(count(&before, "online_sessions"), 0);
    assert_eq!(count(&before, "known_users"), 0);
    if cfg!(target_os = "linux") {
        assert!(count(&before, "rss_bytes") > 0, "{before}");
    } else {
        assert!(before["rss_bytes"].is_null() || before["rss_bytes"].is_u64());
    }
    let seq_before = count(&before, "last_seq");

    app.set_token("u1", "t1", 1, 0).await;
    let (mut ws, answer) = app.ws_connect("u1", "t1", 1, "web_stats_1").await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    let (_, during) = app.get("/stats").await;
    assert_eq!(count(&during, "open_connections"), 1, "{during}");
    assert_eq!(count(&during, "online_sessions"), 1, "{during}");
    assert_eq!(count(&during, "known_users"), 1, "{during}");
    // TokenSet and Connected, at least.
    assert!(count(&during, "last_seq") >= seq_before + 2, "{during}");

    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    let (_, after) = eventually(
        "the closed session to leave the counts",
        async || app.get("/stats").await,
        |(_, after)| count(after, "online_sessions") == 0 && count(after, "open_connections") == 0,
    )
    .await;
    assert_eq!(count(&after, "known_users"), 1, "{after}");
}

#[tokio::test]
async fn needs_the_manager_token() {
    let app = spawn_app_with(&["--manager-token", "m1"]).await;
    let (status, body) = app.get("/stats").await;
    assert_eq!(status, 401, "{body}");
    let resp = app
        .http
        .get(app.url("/stats"))
        .header("token", "m1")
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert!(body["last_seq"].is_u64(), "{body}");
}
