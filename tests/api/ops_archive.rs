//! `wkuser archive` (protocol.md section 10), run as an operator runs it: the real binary on a
//! stopped data directory (or a shared database whose nodes are stopped), then a start, then
//! `events`, `replay` and `verify` with and without `--archive`; the live log shrinks on disk.
//! A run killed part-way is `ops_archive_crash`'s.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{stderr, stdout, wkuser};
use crate::helpers::*;

/// Now, as RFC 3339 with milliseconds (the `--before` of an archive).
pub(crate) fn rfc3339_now() -> String {
    wkuser::human::format_ms(now_ms())
}

pub(crate) fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
}

pub(crate) fn lines(o: &Output) -> Vec<String> {
    ok(o);
    stdout(o).lines().map(str::to_owned).collect()
}

pub(crate) fn path(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) async fn archive(dir: &Path, before: &str, out: &Path) -> Output {
    wkuser(&[
        "archive",
        "--data-dir",
        &path(dir),
        "--before",
        before,
        "--out",
        &path(out),
    ])
    .await
}

/// `events` of `dir`, with `extra` arguments.
pub(crate) async fn events(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["events", "--data-dir"];
    let d = path(dir);
    args.push(&d);
    args.extend_from_slice(extra);
    wkuser(&args).await
}

/// A data directory, with a history on both sides of a cut, left by a kill -9 while u1's
/// session was open:
/// before the cut: tokens of u1..u5, u2's closed session, a quit of u3, system uid sys1, u1's
/// session opened; after it: u6's token, u4's closed session.
async fn history_across_a_cut(data: &Path) -> String {
    let node = start_node(data).await;
    let http = reqwest::Client::new();
    for i in 1..=5 {
        let body = json!({"uid": format!("u{i}"), "token": format!("t{i}"), "device_flag": 1, "device_level": 0});
        node.post_ok(&http, "/user/token", body).await;
    }
    let (mut ws2, answer) = node_connect(&node, "u2", "t2", "dev_u2").await;
    assert_connected(&answer);
    ws2.close(None).await.unwrap();
    let _ = close_code(&mut ws2).await;
    node.post_ok(
        &http,
        "/user/device_quit",
        json!({"uid": "u3", "device_flag": 1}),
    )
    .await;
    node.post_ok(&http, "/user/systemuids_add", json!({"uids": ["sys1"]}))
        .await;
    let (ws1, answer) = node_connect(&node, "u1", "t1", "dev_u1").await;
    assert_connected(&answer);
    eventually(
        "u2's session closed in the view",
        async || sessions(&http, &node.api, "u2").await,
        |s| s.first().is_some_and(|s| s["reason"] == "client_closed"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = rfc3339_now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = json!({"uid": "u6", "token": "t6", "device_flag": 2, "device_level": 1});
    node.post_ok(&http, "/user/token", body).await;
    let (mut ws4, answer) = node_connect(&node, "u4", "t4", "dev_u4").await;
    assert_connected(&answer);
    ws4.close(None).await.unwrap();
    let _ = close_code(&mut ws4).await;
    eventually(
        "u4's session closed in the view",
        async || sessions(&http, &node.api, "u4").await,
        |s| s.first().is_some_and(|s| s["reason"] == "client_closed"),
    )
    .await;
    node.sigkill().await;
    drop(ws1);
    cut
}

async fn node_connect(node: &Node, uid: &str, token: &str, device: &str) -> (Ws, Value) {
    use futures_util::SinkExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    let frame = easy_connect(uid, token, device, 1, now_ms(), "c1");
    ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .unwrap();
    let answer = next_json(&mut ws).await.expect("an answer to connect");
    (ws, answer)
}

async fn sessions(http: &reqwest::Client, api: &str, uid: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{api}/user/sessions?uid={uid}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// u1's sessions once the view shows the one a kill left open closed by the next start.
async fn server_restart_of_u1(app: &TestApp) -> Vec<Value> {
    eventually(
        "u1's session closed as server_restart in the view",
        async || sessions(&app.http, &app.api, "u1").await,
        |s| s.first().is_some_and(|s| s["reason"] == "server_restart"),
    )
    .await
}

fn events_of_uid(all: &[String], uid: &str) -> Vec<String> {
    let quoted = format!("\"uid\":\"{uid}\"");
    all.iter()
        .filter(|l| l.contains(&quoted))
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_archived_log_starts_with_its_users_tokens_sessions_and_history() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cut = history_across_a_cut(&data).await;
    let all = lines(&events(&data, &[]).await);
    let out = tmp.path().join("2026-11.wkarchive.zst");

    let run = archive(&data, &cut, &out).await;
    ok(&run);
    assert!(
        stderr(&run).contains("archived seq 1..="),
        "{}",
        stderr(&run)
    );
    let header = wkuser::archive::file::read_header_of(&out).unwrap();
    let boundary = header.last_seq.0 as usize;
    assert!(boundary >= 10, "the events before the cut: {boundary}");
    assert_eq!(header.first_seq.0, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&all[boundary - 1]).unwrap()["seq"],
        boundary
    );

    // The live log holds the rest, and says where the others are.
    let live = events(&data, &[]).await;
    assert_eq!(lines(&live), all[boundary..]);
    assert!(stderr(&live).contains("are archived"), "{}", stderr(&live));
    let a = path(&out);
    assert_eq!(lines(&events(&data, &["--archive", &a]).await), all);
    for uid in ["u2", "u4", "u1"] {
        let with = lines(&events(&data, &["--uid", uid, "--archive", &a]).await);
        assert_eq!(with, events_of_uid(&all, uid), "{uid}");
        let without = lines(&events(&data, &["--uid", uid]).await);
        assert_eq!(without, events_of_uid(&all[boundary..], uid), "{uid}");
    }
    assert!(
        events_of_uid(&all[boundary..], "u2").is_empty(),
        "u2 is all archived"
    );

    // A start: users, tokens, system uids and history are as they were, and u1's session,
    // open at the kill, is closed by this start.
    let mut app = start_on(&data, vec![]).await;
    let u2 = sessions(&app.http, &app.api, "u2").await;
    assert_eq!(u2.len(), 1);
    assert_eq!(u2[0]["reason"], "client_closed");
    assert_eq!(u2[0]["device_id"], "dev_u2");
    // The view trails the log by a moment: the start's close is waited for.
    let u1 = server_restart_of_u1(&app).await;
    assert_eq!(u1.len(), 1);
    assert_eq!(u1[0]["device_id"], "dev_u1");
    assert_eq!(app.system_uids().await, json!(["sys1"]));
    let (_ws, answer) = app.ws_connect("u5", "t5", 1, "dev_u5").await;
    assert_connected(&answer);
    let (_ws, answer) = app.ws_connect("u3", "t3", 1, "dev_u3").await;
    assert_eq!(
        answer["error"]["code"], 2,
        "u3's token was cleared: {answer}"
    );
    app.stop().await;

    // verify and replay across the boundary with the archive; without it they say what they
    // cannot do.
    let d = path(&data);
    let verified = wkuser(&["verify", "--data-dir", &d, "--archive", &a]).await;
    ok(&verified);
    assert!(
        stdout(&verified).contains("the view matches"),
        "{}",
        stdout(&verified)
    );
    let refused = wkuser(&["verify", "--data-dir", &d]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("pass every archive with --archive"),
        "{}",
        stderr(&refused)
    );
    let whole = tmp.path().join("whole.sqlite");
    ok(&wkuser(&[
        "replay",
        "--data-dir",
        &d,
        "--archive",
        &a,
        "--into",
        &path(&whole),
    ])
    .await);
    let part = tmp.path().join("part.sqlite");
    let replayed = wkuser(&["replay", "--data-dir", &d, "--into", &path(&part)]).await;
    ok(&replayed);
    assert!(
        stderr(&replayed).contains("without the sessions that had ended by then"),
        "{}",
        stderr(&replayed)
    );
    let early = wkuser(&[
        "replay",
        "--data-dir",
        &d,
        "--until-seq",
        "3",
        "--into",
        &path(&tmp.path().join("early.sqlite")),
    ])
    .await;
    assert_eq!(early.status.code(), Some(2), "{}", stderr(&early));
    assert!(
        stderr(&early).contains("only the archives hold it"),
        "{}",
        stderr(&early)
    );
}

#[tokio::test]
async fn a_view_lost_after_an_archive_starts_from_the_boundary_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cut = history_across_a_cut(&data).await;
    let out = tmp.path().join("a.zst");
    ok(&archive(&data, &cut, &out).await);
    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", data.join("view.sqlite").display()));
    }

    let mut app = start_on(&data, vec![]).await;
    assert_eq!(app.system_uids().await, json!(["sys1"]));
    let (_ws, answer) = app.ws_connect("u2", "t2", 1, "dev_u2b").await;
    assert_connected(&answer);
    let (_ws, answer) = app.ws_connect("u3", "t3", 1, "dev_u3").await;
    assert_eq!(
        answer["error"]["code"], 2,
        "u3's token was cleared: {answer}"
    );
    // u1's session, open at the boundary, is in the snapshot: closed once by this start.
    let u1 = server_restart_of_u1(&app).await;
    assert_eq!(u1.len(), 1, "{u1:?}");
    app.stop().await;
    // The rebuilt view lacks only the history the archive holds: verify with it says so.
    let verified = wkuser(&[
        "verify",
        "--data-dir",
        &path(&data),
        "--archive",
        &path(&out),
    ])
    .await;
    assert_eq!(verified.status.code(), Some(1), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains("device_sessions: only in the second"),
        "{}",
        stdout(&verified)
    );
}

/// A stopped data directory with `users` tokens set (two events each: a token, then a level-1
/// update), all recorded before the returned time.
pub(crate) async fn many_events(users: usize) -> (TestApp, String) {
    let mut app = spawn_app().await;
    let http = app.http.clone();
    let api = app.api.clone();
    futures_util::future::join_all((0..16).map(|worker| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            for i in (worker..users).step_by(16) {
                for level in [0, 1] {
                    let body = json!({"uid": format!("user{i:06}"), "token": format!("secret-{i}-{level}"), "device_flag": 1, "device_level": level});
                    let r = http.post(format!("{api}/user/token")).body(body.to_string()).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            }
        }
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = rfc3339_now();
    app.set_token("late", "late-secret", 1, 0).await;
    app.stop().await;
    (app, cut)
}

#[tokio::test]
async fn the_live_log_shrinks_on_disk() {
    let (app, cut) = many_events(3000).await;
    let log_dir = app.data_dir.join("log");
    let before = wkuser::ops::archive::bytes_on_disk(&log_dir);
    let out = app.data_dir.with_extension("archive.zst");
    let run = archive(&app.data_dir, &cut, &out).await;
    ok(&run);
    let after = wkuser::ops::archive::bytes_on_disk(&log_dir);
    let file = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "live log on disk: {before} bytes before, {after} after; archive file {file} bytes; {}",
        stderr(&run)
    );
    assert!(
        after * 2 < before,
        "the live log went from {before} to {after} bytes"
    );
    let _ = std::fs::remove_file(&out);
}

#[tokio::test]
async fn a_second_archive_continues_from_the_first_and_replay_needs_both() {
    let (first, cut1) = many_events(50).await;
    let mut app = start_on(&first.data_dir, vec![]).await;
    app.set_token("later", "later-secret", 1, 0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut2 = rfc3339_now();
    app.set_token("last", "last-secret", 1, 0).await;
    app.stop().await;
    let all = lines(&events(&app.data_dir, &[]).await);
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one.zst"), tmp.path().join("two.zst"));
    ok(&archive(&app.data_dir, &cut1, &one).await);
    ok(&archive(&app.data_dir, &cut2, &two).await);
    // The same command again finds nothing more to move; a file this log's boundary names is
    // never written over.
    let again = archive(&app.data_dir, &cut2, &two).await;
    ok(&again);
    assert!(
        stderr(&again).contains("nothing archived"),
        "{}",
        stderr(&again)
    );
    let refused = archive(&app.data_dir, &rfc3339_now(), &one).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("already holds seq 1..="),
        "{}",
        stderr(&refused)
    );

    let d = path(&app.data_dir);
    let (a1, a2) = (path(&one), path(&two));
    assert_eq!(
        lines(&events(&app.data_dir, &["--archive", &a1, "--archive", &a2]).await),
        all
    );
    ok(&wkuser(&[
        "verify",
        "--data-dir",
        &d,
        "--archive",
        &a2,
        "--archive",
        &a1,
    ])
    .await);
    let partial = wkuser(&["verify", "--data-dir", &d, "--archive", &a2]).await;
    assert_eq!(partial.status.code(), Some(2), "{}", stderr(&partial));
    assert!(
        stderr(&partial).contains("do not hold every event from seq 1"),
        "{}",
        stderr(&partial)
    );
    let other = many_events(5).await.0;
    let foreign = tmp.path().join("foreign.zst");
    ok(&archive(&other.data_dir, &rfc3339_now(), &foreign).await);
    let mixed = wkuser(&["events", "--data-dir", &d, "--archive", &path(&foreign)]).await;
    assert_eq!(mixed.status.code(), Some(2), "{}", stderr(&mixed));
    assert!(
        stderr(&mixed).contains("is not an archive of this log"),
        "{}",
        stderr(&mixed)
    );
}

#[tokio::test]
async fn several_nodes_archive_the_shared_log() {
    let db = TestDatabase::create().await;
    let tmp = tempfile::tempdir().unwrap();
    let start = |id: u64| {
        let (url, dir) = (db.url.clone(), tmp.path().join(format!("node{id}")));
        async move {
            start_node_with(
                &dir,
                "info",
                &["--database-url", &url, "--node-id", &id.to_string()],
            )
            .await
        }
    };
    let (a, b) = (start(1).await, start(2).await);
    let http = reqwest::Client::new();
    for i in 0..200 {
        let body = json!({"uid": format!("p{i}"), "token": format!("t{i}"), "device_flag": 1, "device_level": 0});
        let node = if i % 2 == 0 { &a } else { &b };
        node.post_ok(&http, "/user/token", body).await;
    }
    let (mut ws, answer) = node_connect(&b, "p1", "t1", "dev_p1").await;
    assert_connected(&answer);
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = rfc3339_now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = json!({"uid": "late", "token": "tl", "device_flag": 1, "device_level": 0});
    a.post_ok(&http, "/user/token", body).await;
    eventually(
        "p1's session closed in the shared view",
        async || sessions(&http, &a.api, "p1").await,
        |s| s.first().is_some_and(|s| s["reason"] == "client_closed"),
    )
    .await;
    let url = db.url.clone();

    // Refused while a node runs.
    let out = tmp.path().join("shared.zst");
    let args = [
        "archive",
        "--database-url",
        &url,
        "--before",
        &cut,
        "--out",
        &path(&out),
    ];
    let refused = wkuser(&args).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("stop every node first"),
        "{}",
        stderr(&refused)
    );
    a.sigterm_and_wait().await;
    b.sigterm_and_wait().await;
    let all = lines(&wkuser(&["events", "--database-url", &url]).await);

    let run = wkuser(&args).await;
    ok(&run);
    let said = stderr(&run);
    eprintln!("{said}");
    let sizes: Vec<u64> = said
        .split("went from ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .take(2)
        .collect();
    assert!(
        sizes[1] < sizes[0],
        "the shared log's tables shrank: {sizes:?}"
    );
    let a_ = path(&out);
    let boundary = wkuser::archive::file::read_header_of(&out)
        .unwrap()
        .last_seq
        .0 as usize;
    assert_eq!(
        lines(&wkuser(&["events", "--database-url", &url]).await),
        all[boundary..]
    );
    assert_eq!(
        lines(&wkuser(&["events", "--database-url", &url, "--archive", &a_]).await),
        all
    );
    assert_eq!(
        lines(
            &wkuser(&[
                "events",
                "--database-url",
                &url,
                "--uid",
                "p1",
                "--archive",
                &a_
            ])
            .await
        ),
        events_of_uid(&all, "p1")
    );
    ok(&wkuser(&["verify", "--database-url", &url, "--archive", &a_]).await);
    let without = wkuser(&["verify", "--database-url", &url]).await;
    assert_eq!(without.status.code(), Some(2), "{}", stderr(&without));

    // A node starts on the archived log: tokens from before the cut admit, history is there.
    let c = start(3).await;
    let (_ws, answer) = node_connect(&c, "p3", "t3", "dev_p3").await;
    assert_connected(&answer);
    assert_eq!(sessions(&http, &c.api, "p1").await.len(), 1);
    c.sigterm_and_wait().await;
    ok(&wkuser(&["verify", "--database-url", &url, "--archive", &a_]).await);
}

#[tokio::test]
async fn bad_input_and_a_running_server_are_refused_and_change_nothing() {
    let (first, cut) = many_events(3).await;
    let dir = first.data_dir.clone();
    let all = lines(&events(&dir, &[]).await);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a.zst");

    let bad_time = archive(&dir, "last tuesday", &out).await;
    assert_eq!(bad_time.status.code(), Some(2), "{}", stderr(&bad_time));
    assert!(
        stderr(&bad_time).contains("is not an RFC 3339 time"),
        "{}",
        stderr(&bad_time)
    );

    let precious = tmp.path().join("notes.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let clobber = archive(&dir, &cut, &precious).await;
    assert_eq!(clobber.status.code(), Some(2), "{}", stderr(&clobber));
    assert!(
        stderr(&clobber).contains("choose another --out"),
        "{}",
        stderr(&clobber)
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");

    let mut app = start_on(&dir, vec![]).await;
    let busy = archive(&dir, &cut, &out).await;
    assert_eq!(busy.status.code(), Some(2), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("stop it first"), "{}", stderr(&busy));
    app.stop().await;

    assert!(!out.exists());
    let now = lines(&events(&dir, &[]).await);
    assert_eq!(now[..all.len()], all[..], "nothing was archived");
}
