//! `migrate-to-postgres` when things go wrong: a move killed half-way is finished by running it
//! again, another node's log is never merged into it, and a database a newer build migrated is
//! refused by the operator commands and by `serve`.

use std::process::Output;

use futures_util::FutureExt;
use wkuser::ops::migrate::{self, Stage};

use crate::cli::{assert_exit, dir, history, stderr, stdout, wkuser};
use crate::helpers::*;

/// Moves `app`'s log one event per transaction and stops, as a kill would, once `batches`
/// transactions have committed.
async fn move_and_stop_after(app: &TestApp, url: &str, batches: usize) {
    let mut done = 0;
    let moving = migrate::migrate(
        &app.data_dir,
        url,
        1,
        |_, _| {},
        |stage, _| {
            if stage == Stage::Moving {
                done += 1;
                assert!(done < batches, "stopped after {batches} transactions");
            }
        },
    );
    let stopped = std::panic::AssertUnwindSafe(moving).catch_unwind().await;
    assert!(stopped.is_err(), "the move was to stop half-way");
}

/// `wkuser migrate-to-postgres` of `app`'s data directory into `url`.
async fn migrate_cmd(app: &TestApp, url: &str) -> Output {
    wkuser(&[
        "migrate-to-postgres",
        "--data-dir",
        &dir(app),
        "--database-url",
        url,
    ])
    .await
}

fn events_of(o: &Output) -> Vec<String> {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    stdout(o).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_move_stopped_half_way_is_finished_by_running_it_again() {
    let app = history().await;
    let db = TestDatabase::create().await;
    let all = events_of(&wkuser(&["events", "--data-dir", &dir(&app)]).await);
    assert!(all.len() >= 4, "{all:?}");

    move_and_stop_after(&app, &db.url, 2).await;
    let partial = events_of(&wkuser(&["events", "--database-url", &db.url]).await);
    assert_eq!(
        partial,
        all[..2],
        "the two committed transactions, nothing else"
    );

    // Another node's log is refused, and changes nothing.
    let other = history().await;
    let refused = migrate_cmd(&other, &db.url).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("events of another log"),
        "{}",
        stderr(&refused)
    );
    let still = events_of(&wkuser(&["events", "--database-url", &db.url]).await);
    assert_eq!(still, partial);

    // The same log again: it goes on from seq 2 and ends with the whole log, each event once.
    let finished = migrate_cmd(&app, &db.url).await;
    assert_eq!(finished.status.code(), Some(0), "{}", stderr(&finished));
    assert!(
        stderr(&finished).contains("stopped at seq 2"),
        "{}",
        stderr(&finished)
    );
    let moved = events_of(&wkuser(&["events", "--database-url", &db.url]).await);
    assert_eq!(moved, all);
    let verified = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_exit(&verified, 0);
}

#[tokio::test]
async fn a_move_stopped_once_the_view_has_begun_is_finished_too() {
    let app = history().await;
    let db = TestDatabase::create().await;
    let all = events_of(&wkuser(&["events", "--data-dir", &dir(&app)]).await);
    let moving = migrate::migrate(
        &app.data_dir,
        &db.url,
        1,
        |_, _| {},
        |stage, seq| {
            assert_ne!(stage, Stage::Projecting, "stopped at view seq {seq}");
        },
    );
    let stopped = std::panic::AssertUnwindSafe(moving).catch_unwind().await;
    assert!(stopped.is_err(), "the view's first batch was reported");

    let finished = migrate_cmd(&app, &db.url).await;
    assert_eq!(finished.status.code(), Some(0), "{}", stderr(&finished));
    let moved = events_of(&wkuser(&["events", "--database-url", &db.url]).await);
    assert_eq!(moved, all);
    let verified = wkuser(&["verify", "--database-url", &db.url]).await;
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let app = history().await;
    let db = TestDatabase::create().await;
    let moved = migrate_cmd(&app, &db.url).await;
    assert_eq!(moved.status.code(), Some(0), "{}", stderr(&moved));
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations \
             (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from a newer build', true, '\\x00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    for args in [
        vec!["events", "--database-url", &db.url],
        vec!["verify", "--database-url", &db.url],
        vec!["audit", "u1", "--database-url", &db.url],
    ] {
        let o = wkuser(&args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("this build does not know"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let node_dir = tempfile::tempdir().unwrap();
    let serve = wkuser(&[
        "serve",
        "--database-url",
        &db.url,
        "--node-id",
        "1",
        "--data-dir",
        &node_dir.path().display().to_string(),
        "--api-addr",
        "127.0.0.1:0",
        "--ws-addr",
        "127.0.0.1:0",
    ])
    .await;
    assert_eq!(serve.status.code(), Some(2), "{}", stderr(&serve));
    assert!(
        stderr(&serve).contains("99990101000000"),
        "the refusal names the unknown migration: {}",
        stderr(&serve)
    );
}
