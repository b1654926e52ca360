//! The operator commands on a shared PostgreSQL database (protocol.md section 6 item 6), and a
//! single node growing up: `migrate-to-postgres` moves its log into an empty database, and
//! nodes started there find its history. The real binary throughout.

use std::process::Output;

use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{assert_exit, dir, history, stderr, stdout, wkuser, wkuser_with_env};
use crate::helpers::*;

/// One line on stderr that says `needle`, a non-zero exit, and no panic.
fn refused_in_one_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert_eq!(
        o.status.code(),
        Some(2),
        "an error exits 2, not a panic's 101: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

pub(crate) async fn connect(ws_url: &str, uid: &str, token: &str, flag: u8) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let frame = easy_connect(uid, token, "migrated-phone", flag, now_ms(), "c1");
    ws.send(Message::text(frame)).await.unwrap();
    next_json(&mut ws).await.expect("an answer to connect")
}

#[tokio::test]
async fn a_migrated_log_reads_the_same_verifies_and_admits_a_token_set_before_it() {
    let app = history().await;
    let db = TestDatabase::create().await;

    let moved = wkuser(&[
        "migrate-to-postgres",
        "--data-dir",
        &dir(&app),
        "--database-url",
        &db.url,
    ])
    .await;
    assert_eq!(moved.status.code(), Some(0), "{}", stderr(&moved));
    assert!(stderr(&moved).contains("moved "), "{}", stderr(&moved));

    // Every event as it was: bytes, seq, event_id, recorded_at and node_id.
    let before = wkuser(&["events", "--data-dir", &dir(&app)]).await;
    let after = wkuser(&["events", "--database-url", &db.url]).await;
    assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
    assert!(stdout(&before).lines().count() >= 4, "{}", stdout(&before));
    assert_eq!(stdout(&after), stdout(&before));
    // One user's events, the uid index moved too; and the URL from the environment.
    let by_env = wkuser_with_env(&["events", "--uid", "u1"], &[("WK_DATABASE_URL", &db.url)]).await;
    let u1_before = wkuser(&["events", "--uid", "u1", "--data-dir", &dir(&app)]).await;
    assert_eq!(stdout(&by_env), stdout(&u1_before), "{}", stderr(&by_env));
    assert!(!stdout(&by_env).is_empty());

    let verified = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_exit(&verified, 0);
    assert!(
        stdout(&verified).contains("the view matches a rebuild of the log"),
        "{}",
        stdout(&verified)
    );

    // The history from the shared view reads as it did from the node's own.
    let audit_before = wkuser(&["audit", "u1", "--data-dir", &dir(&app)]).await;
    let audit_after = wkuser(&["audit", "u1", "--database-url", &db.url]).await;
    assert_eq!(
        audit_after.status.code(),
        Some(0),
        "{}",
        stderr(&audit_after)
    );
    let table = |o: &Output| {
        stdout(o)
            .lines()
            .filter(|l| !l.starts_with("source:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&audit_after), table(&audit_before));
    assert!(
        stdout(&audit_after).contains("shared SQL view"),
        "{}",
        stdout(&audit_after)
    );

    // A replay of the shared log is the node's view.
    let rebuilt = tempfile::tempdir().unwrap();
    let into = rebuilt.path().join("replayed.sqlite");
    let replayed = wkuser(&[
        "replay",
        "--database-url",
        &db.url,
        "--into",
        &into.display().to_string(),
    ])
    .await;
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    assert!(into.exists());

    // A node started on the database admits the token set before the migration.
    let node_dir = tempfile::tempdir().unwrap();
    let node = start_node_with(
        node_dir.path(),
        "info",
        &["--database-url", &db.url, "--node-id", "1"],
    )
    .await;
    assert_connected(&connect(&node.ws, "u1", "cli-secret-1", 1).await);
    assert_eq!(
        connect(&node.ws, "u2", "not-its-token", 2).await["error"]["code"],
        2
    );
    // Verified while the node runs: no false difference.
    let live = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_exit(&live, 0);
    node.sigterm_and_wait().await;

    // A second migration into the now busy database is refused, and changes nothing.
    let events_now = wkuser(&["events", "--database-url", &db.url]).await;
    let again = wkuser(&[
        "migrate-to-postgres",
        "--data-dir",
        &dir(&app),
        "--database-url",
        &db.url,
    ])
    .await;
    refused_in_one_line(&again, "not empty");
    let events_later = wkuser(&["events", "--database-url", &db.url]).await;
    assert_eq!(stdout(&events_later), stdout(&events_now));

    // A tampered shared view is found out.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE tokens SET token_hash = 'tampered' WHERE uid = 'u2'")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let tampered = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_exit(&tampered, 1);
    assert!(
        stdout(&tampered).contains("tampered"),
        "{}",
        stdout(&tampered)
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn bad_databases_are_refused_in_one_line() {
    let nothing = format!("postgres://postgres@127.0.0.1:{}/test", closed_port());
    let into = tempfile::tempdir().unwrap();
    let into = into.path().join("r.sqlite").display().to_string();
    let data = history().await;
    for url in ["not a url", &nothing] {
        let needle = if url == nothing {
            "Connection refused"
        } else {
            "not a PostgreSQL URL"
        };
        for args in [
            vec!["events", "--database-url", url],
            vec!["audit", "u1", "--database-url", url],
            vec!["verify", "--database-url", url],
            vec!["replay", "--into", &into, "--database-url", url],
            vec![
                "migrate-to-postgres",
                "--data-dir",
                &dir(&data),
                "--database-url",
                url,
            ],
        ] {
            refused_in_one_line(&wkuser(&args).await, needle);
        }
    }
    // A database no node ever started on is not read as an empty log, nor given a schema.
    let empty = TestDatabase::create().await;
    for args in [
        vec!["events", "--database-url", &empty.url],
        vec!["verify", "--database-url", &empty.url],
    ] {
        refused_in_one_line(&wkuser(&args).await, "no wkuser schema");
    }
}

#[tokio::test]
async fn a_running_servers_data_dir_is_not_migrated() {
    let app = spawn_app().await;
    app.set_token("u1", "t1", 1, 0).await;
    let db = TestDatabase::create().await;
    let refused = wkuser(&[
        "migrate-to-postgres",
        "--data-dir",
        &app.data_dir.display().to_string(),
        "--database-url",
        &db.url,
    ])
    .await;
    refused_in_one_line(&refused, "stop it first");
    // The data dir is refused before the database is touched: it still holds no schema.
    let events = wkuser(&["events", "--database-url", &db.url]).await;
    refused_in_one_line(&events, "no wkuser schema");
}
