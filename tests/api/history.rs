//! Session history for operators (`protocol.md` section 4): `/user/sessions` pages a user's
//! sessions newest first from the SQL view, with names, times and reasons; `/events` answers
//! the raw events of the log.

use serde_json::{json, Value};

use crate::helpers::*;

fn is_rfc3339_ms(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    // 2026-11-28T02:44:15.123Z
    s.len() == 24
        && s.ends_with('Z')
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[19] == b'.'
        && wkuser::human::parse_rfc3339_ms(s).is_some()
}

/// Opens sessions of u1 in order: flag 1 "a" (closed by the client), flag 3 "b" (replaced by
/// "b" again), flag 3 "b" (left open). Returns the open socket.
async fn three_sessions(app: &TestApp) -> Ws {
    app.set_token("u1", "t1", 1, 0).await;
    app.set_token("u1", "t3", 3, 0).await;
    let (mut a, answer) = app.ws_connect("u1", "t1", 1, "a").await;
    assert_connected(&answer);
    a.close(None).await.unwrap();
    let _ = close_code(&mut a).await;
    app.wait_offline_on("u1", 1).await;
    let (mut b1, answer) = app.ws_connect("u1", "t3", 3, "b").await;
    assert_connected(&answer);
    let (b2, answer) = app.ws_connect("u1", "t3", 3, "b").await;
    assert_connected(&answer);
    let _ = close_code(&mut b1).await;
    app.view_caught_up().await;
    b2
}

impl TestApp {
    /// Waits until `uid` is not online on `flag`.
    async fn wait_offline_on(&self, uid: &str, flag: u8) {
        eventually(
            &format!("{uid} offline on flag {flag}"),
            async || self.online(&[uid]).await,
            |rows| {
                !rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["device_flag"] == flag)
            },
        )
        .await;
    }
}

#[tokio::test]
async fn sessions_are_paged_newest_first_with_names_times_and_reasons() {
    let app = spawn_app_with(&["--node-id", "3"]).await;
    let _open = three_sessions(&app).await;

    let (status, page) = app.get("/user/sessions?uid=u1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["uid"], "u1");
    assert_eq!(
        page["online"],
        json!([{"device_flag": 3, "device_name": "Web"}])
    );
    assert!(page.get("next").is_none(), "one page holds all: no next");
    let sessions = page["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    let ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
    let (open, replaced, closed) = (&sessions[0], &sessions[1], &sessions[2]);
    assert_eq!(open["disconnected_at"], Value::Null);
    assert_eq!(open["reason"], Value::Null);
    assert_eq!(
        (open["device_flag"].clone(), open["device_name"].clone()),
        (json!(3), json!("Web"))
    );
    assert_eq!(replaced["reason"], "replaced");
    assert_eq!(closed["reason"], "client_closed");
    assert_eq!(
        (closed["device_flag"].clone(), closed["device_name"].clone()),
        (json!(1), json!("iOS"))
    );
    for s in sessions {
        assert_eq!(s["node_id"], 3);
        assert_eq!(s["device_level"], 0);
        assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{s}");
        assert!(is_rfc3339_ms(&s["connected_at"]), "{s}");
        if s["reason"] != Value::Null {
            assert!(is_rfc3339_ms(&s["disconnected_at"]), "{s}");
        }
    }
    assert_eq!(closed["device_id"], "a");

    // Pages of two: the second starts strictly before the first's last, and is the last page.
    let (_, first) = app.get("/user/sessions?uid=u1&limit=2").await;
    assert_eq!(first["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], sessions[1]["session_id"]);
    let next = first["next"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/user/sessions?uid=u1&limit=2&before={next}"))
        .await;
    assert_eq!(second["sessions"], json!([sessions[2].clone()]));
    assert!(second.get("next").is_none());

    // A user with no history.
    let (status, empty) = app.get("/user/sessions?uid=nobody").await;
    assert_eq!(
        (status, empty),
        (
            200,
            json!({"uid": "nobody", "online": [], "last_seen": [], "sessions": []})
        )
    );
}

#[tokio::test]
async fn bad_history_queries_get_the_envelope() {
    let app = spawn_app().await;
    for (query, msg) in [
        ("/user/sessions", "uid is required"),
        (
            "/user/sessions?uid=a%40b",
            "uid is not a valid uid: it must not contain '@', '#' or '&'",
        ),
        (
            "/user/sessions?uid=u&limit=0",
            "limit must be an integer from 1 to 1000",
        ),
        (
            "/user/sessions?uid=u&limit=1001",
            "limit must be an integer from 1 to 1000",
        ),
        (
            "/user/sessions?uid=u&limit=ten",
            "limit must be an integer from 1 to 1000",
        ),
        (
            "/user/sessions?uid=u&before=yesterday",
            "before must be a session id",
        ),
        (
            "/events?after=-1",
            "after must be an integer from 0 to 9223372036854775807",
        ),
        (
            "/events?limit=1001",
            "limit must be an integer from 1 to 1000",
        ),
        (
            "/events?uid=",
            "uid is not a valid uid: it must be 1 to 255 bytes",
        ),
    ] {
        assert_eq!(app.get(query).await, (400, envelope(400, msg)), "{query}");
    }
}

#[tokio::test]
async fn history_routes_need_the_manager_token() {
    let app = spawn_app_with(&["--manager-token", "m-secret"]).await;
    for path in ["/user/sessions?uid=u1", "/events"] {
        assert_eq!(
            app.get(path).await,
            (401, envelope(401, crate::http_errors::UNAUTHORIZED)),
            "{path}"
        );
        let resp = app
            .http
            .get(app.url(path))
            .header("token", "m-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn events_are_the_log_in_order_with_token_hashes_only() {
    let app = spawn_app().await;
    app.set_token("u1", "raw-token-1", 1, 1).await;
    app.set_token("u2", "raw-token-2", 1, 0).await;
    let (mut ws, answer) = app.ws_connect("u1", "raw-token-1", 1, "d").await;
    assert_connected(&answer);
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    app.wait_offline_on("u1", 1).await;

    let (status, all) = app.get("/events").await;
    assert_eq!(status, 200);
    let events = all["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(all["last_seq"], json!(seqs.len()));
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "NodeStarted",
            "TokenUpdated",
            "TokenUpdated",
            "Connected",
            "Disconnected"
        ]
    );
    let text = all.to_string();
    assert!(!text.contains("raw-token"), "no raw token in events");
    assert_eq!(events[1]["data"]["token_hash"].as_str().unwrap().len(), 64);

    let (_, mine) = app.get("/events?uid=u1").await;
    let mine = mine["events"].as_array().unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|e| e["data"]["uid"] == "u1"));
    let (_, page) = app
        .get(&format!("/events?uid=u1&after={}&limit=1", mine[0]["seq"]))
        .await;
    assert_eq!(page["events"], json!([mine[1].clone()]));
}
