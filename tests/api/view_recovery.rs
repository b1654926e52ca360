//! The SQL view is a projection: deleted or corrupt, it is rebuilt from the log at start, and
//! the server says so in its log, wherever in the recovery the damage shows. What is not the
//! view's fault is refused instead, and the view is left where it is: an empty log beside a
//! populated view of any schema version (the log is gone, not the users), a view that cannot
//! be opened.

use serde_json::{json, Value};

use crate::helpers::{applied_migrations, record_migrations, serve_refused, start_node};

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = http.post(url).body(body.to_string()).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn populate(http: &reqwest::Client, api: &str) {
    let ok = (200, json!({"status": 200}));
    let token = json!({"uid": "keep", "token": "k1", "device_flag": 1, "device_level": 1});
    assert_eq!(post(http, format!("{api}/user/token"), token).await, ok);
    let sys = json!({"uids": ["robot"]});
    assert_eq!(
        post(http, format!("{api}/user/systemuids_add"), sys).await,
        ok
    );
}

/// A data directory the server populated ([`populate`]) and then stopped gracefully, and the
/// HTTP client for the next start.
async fn populated_and_stopped() -> (tempfile::TempDir, reqwest::Client) {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = start_node(dir.path()).await;
    populate(&http, &node.api).await;
    node.sigterm_and_wait().await;
    (dir, http)
}

async fn assert_recovered(http: &reqwest::Client, api: &str) {
    let listed: Value = http
        .get(format!("{api}/user/systemuids"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!(["robot"]));
    let resp = http
        .get(format!("{api}/user/sessions?uid=keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_deleted_view_is_rebuilt_from_the_log() {
    let (dir, http) = populated_and_stopped().await;
    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let node = start_node(dir.path()).await;
    assert_recovered(&http, &node.api).await;
    let said = node.stderr.lock().join("\n");
    assert!(
        said.contains("the SQL view is empty; rebuilding it from the log"),
        "{said}"
    );
    node.sigterm_and_wait().await;
    let log = wkuser::ops::open_stopped_log(dir.path()).await.unwrap();
    let verdict = wkuser::ops::replay::verify(&log, &dir.path().join("view.sqlite"))
        .await
        .unwrap();
    log.close().await;
    assert!(verdict.differences.is_empty(), "{:#?}", verdict.differences);
}

/// A rebuild longer than one of the projector's batches says in the server's log how far it
/// got, at each tenth of the way with a rising count, and when it is done; a start with the
/// view up to date says nothing of the kind.
#[tokio::test]
async fn a_rebuild_of_the_view_logs_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = start_node(dir.path()).await;
    // More events than three of the projector's batches (2,048 each).
    let users = 7_000;
    for chunk in (0..users).collect::<Vec<_>>().chunks(100) {
        let answers = futures_util::future::join_all(chunk.iter().map(|i| {
            let body =
                json!({"uid": format!("p{i}"), "token": "t", "device_flag": 1, "device_level": 0});
            post(&http, format!("{}/user/token", node.api), body)
        }))
        .await;
        assert!(
            answers.iter().all(|(status, _)| *status == 200),
            "{answers:?}"
        );
    }
    node.sigterm_and_wait().await;
    let node = start_node(dir.path()).await;
    let said = node.stderr.lock().join("\n");
    assert!(!said.contains("catching up"), "{said}");
    node.sigterm_and_wait().await;

    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let node = start_node(dir.path()).await;
    let lines: Vec<String> = node.stderr.lock().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the SQL view is catching up with the log")),
        "{lines:#?}"
    );
    let counts: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split("the SQL view is catching up: ").nth(1))
        .map(|rest| rest.split(" of ").next().unwrap().parse().unwrap())
        .collect();
    assert!(counts.len() >= 3, "{lines:#?}");
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the SQL view caught up with the log")),
        "{lines:#?}"
    );
    node.sigterm_and_wait().await;
}

#[tokio::test]
async fn a_corrupt_view_is_set_aside_and_rebuilt() {
    let (dir, http) = populated_and_stopped().await;
    for name in ["view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::fs::write(dir.path().join("view.sqlite"), vec![0x5a; 64 * 1024]).unwrap();
    let node = start_node(dir.path()).await;
    assert_recovered(&http, &node.api).await;
    let said = node.stderr.lock().join("\n");
    assert!(said.contains("is unreadable; moved it to"), "{said}");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("view.sqlite.corrupt-")
        });
    assert!(aside, "the corrupt view is kept aside for inspection");
    node.sigterm_and_wait().await;
}

/// Entries of `dir` named like a view that was set aside (its WAL files left out).
fn set_aside_views(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("view.sqlite.corrupt-"))
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect()
}

/// The bytes of the view and of its write-ahead log, when it has one.
fn view_bytes(dir: &std::path::Path) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        std::fs::read(dir.join("view.sqlite")).unwrap(),
        std::fs::read(dir.join("view.sqlite-wal")).ok(),
    )
}

#[tokio::test]
async fn an_empty_log_beside_a_populated_view_is_refused_and_the_view_kept() {
    let (dir, _) = populated_and_stopped().await;
    let before = view_bytes(dir.path());
    // The log deleted (or a volume not mounted): sled would open a new, empty one.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();

    assert_refused_as_an_empty_log_beside_a_view(dir.path()).await;
    assert_view_untouched(dir.path(), &before);
}

/// Starts the server on `dir`, whose log is gone and whose view holds events, and asserts
/// that the start is refused with the message that says so and what to do.
async fn assert_refused_as_an_empty_log_beside_a_view(dir: &std::path::Path) {
    let (log, view) = (dir.join("log"), dir.join("view.sqlite"));
    let run = serve_refused(dir, &[]).await;
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{said}");
    for expected in [
        format!("the event log {} is empty", log.display()),
        format!(
            "the SQL view {} has applied events up to seq",
            view.display()
        ),
        format!("Restore the log to {}", log.display()),
        format!("move {} away", view.display()),
    ] {
        assert!(said.contains(&expected), "no {expected:?} in:\n{said}");
    }
}

/// Asserts that the view in `dir` is as [`view_bytes`] found it (`before`), and in place.
fn assert_view_untouched(dir: &std::path::Path, before: &(Vec<u8>, Option<Vec<u8>>)) {
    let (file, wal) = view_bytes(dir);
    assert!(file == before.0, "the view file is untouched");
    // A WAL with frames keeps them; one that was not there may appear, empty (a reader's).
    match (&before.1, wal) {
        (Some(old), Some(new)) => assert!(*old == new, "the view's WAL is untouched"),
        (Some(_), None) => panic!("the view's WAL was folded in or removed"),
        (None, new) => assert!(
            new.unwrap_or_default().is_empty(),
            "nothing written to a WAL"
        ),
    }
    assert_eq!(set_aside_views(dir), Vec::<String>::new());
}

#[tokio::test]
async fn an_empty_log_beside_a_populated_view_of_an_older_schema_is_refused_and_the_view_kept() {
    let (dir, _) = populated_and_stopped().await;
    let view = dir.path().join("view.sqlite");
    // As a view an earlier wkuser left would be: it records fewer migrations than this build
    // knows (this build has one, so none), and the full start would migrate it. The refusal
    // must come before that, and say what is wrong: the log, not the schema.
    record_migrations(&view, &[]).await;
    let before = view_bytes(dir.path());
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();

    assert_refused_as_an_empty_log_beside_a_view(dir.path()).await;
    assert_view_untouched(dir.path(), &before);
    assert_eq!(applied_migrations(&view).await, Vec::<i64>::new());
}

#[tokio::test]
async fn a_view_ahead_of_a_non_empty_log_is_set_aside_and_rebuilt() {
    let http = reqwest::Client::new();
    // Two data directories: `short` has a log of two events, `long` more; `long`'s view beside
    // `short`'s log belongs to another log, and what is missing is that view's history.
    let short = tempfile::tempdir().unwrap();
    start_node(short.path()).await.sigterm_and_wait().await;
    let long = tempfile::tempdir().unwrap();
    let node = start_node(long.path()).await;
    populate(&http, &node.api).await;
    node.sigterm_and_wait().await;
    // With its write-ahead log, when the stop left one (the newest rows may be only there),
    // and without `short`'s own, whose pages would land on `long`'s file.
    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(short.path().join(name));
        if name != "view.sqlite-shm" && long.path().join(name).exists() {
            std::fs::copy(long.path().join(name), short.path().join(name)).unwrap();
        }
    }

    let node = start_node(short.path()).await;
    let said = node.stderr.lock().join("\n");
    assert!(said.contains("is past the end of the log (2)"), "{said}");
    assert!(said.contains("is unreadable; moved it to"), "{said}");
    assert_eq!(set_aside_views(short.path()).len(), 1);
    let listed: Value = http
        .get(format!("{}/user/systemuids", node.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed,
        json!([]),
        "rebuilt from this log, not the other view"
    );
    node.sigterm_and_wait().await;
}

/// Stops nothing: lowers the view's checkpoint to `to` (so the next start has a tail to apply)
/// and folds its WAL into the file, so that the file alone is the view.
async fn rewind_checkpoint(view: &std::path::Path, to: i64) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE projector_checkpoint SET last_seq = ?1")
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Overwrites the first page of every table and index of the view but the checkpoint's and
/// the migrations': the view opens and tells its checkpoint, and the first write of an event
/// finds a page that is not a B-tree page (SQLITE_CORRUPT).
async fn corrupt_all_but_the_checkpoint(view: &std::path::Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&pool)
        .await
        .unwrap();
    let roots: Vec<i64> = sqlx::query_scalar(
        "SELECT rootpage FROM sqlite_master WHERE rootpage > 0 \
         AND tbl_name NOT IN ('projector_checkpoint', '_sqlx_migrations')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", view.display()));
    }
    assert!(roots.len() >= 5, "{roots:?}");
    let mut bytes = std::fs::read(view).unwrap();
    for root in roots {
        let at = ((root - 1) * page_size) as usize;
        bytes[at..at + page_size as usize].fill(0x5a);
    }
    std::fs::write(view, bytes).unwrap();
}

#[tokio::test]
async fn a_view_found_corrupt_while_catching_up_is_set_aside_and_rebuilt() {
    let (dir, http) = populated_and_stopped().await;
    let view = dir.path().join("view.sqlite");
    // The open, the checkpoint and the migrations' table are fine: the damage shows only when
    // the tail after seq 1 is written.
    rewind_checkpoint(&view, 1).await;
    corrupt_all_but_the_checkpoint(&view).await;

    let node = start_node(dir.path()).await;
    assert_recovered(&http, &node.api).await;
    let said = node.stderr.lock().join("\n");
    assert!(said.contains("is unreadable; moved it to"), "{said}");
    assert!(said.contains("malformed"), "SQLite's own words: {said}");
    assert_eq!(set_aside_views(dir.path()).len(), 1);
    node.sigterm_and_wait().await;
}

#[tokio::test]
async fn a_view_that_cannot_be_opened_is_left_in_place_and_the_start_refused() {
    let (dir, _) = populated_and_stopped().await;
    // Not damage a rebuild would cure (as a lock held past the busy timeout, a permission
    // refused or a full disk are not): SQLite cannot open a directory (SQLITE_CANTOPEN).
    // Tests run as root here, which file permissions would not stop.
    let view = dir.path().join("view.sqlite");
    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::fs::create_dir(&view).unwrap();
    std::fs::write(view.join("kept"), b"mine").unwrap();

    let run = serve_refused(dir.path(), &[]).await;
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{said}");
    for expected in [
        format!("the SQL view {} cannot be used", view.display()),
        "unable to open database file".to_owned(),
        "left in place".to_owned(),
    ] {
        assert!(said.contains(&expected), "no {expected:?} in:\n{said}");
    }
    assert_eq!(std::fs::read(view.join("kept")).unwrap(), b"mine");
    assert_eq!(set_aside_views(dir.path()), Vec::<String>::new());
}
