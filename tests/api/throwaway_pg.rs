//! The throwaway PostgreSQL harness itself, before tests of several nodes lean on it: a kill -9
//! is a crash that loses no committed row, a restart serves again on the same port, servers
//! run side by side, and a dropped server leaves no process and no file behind.
//!
//! These tests start their own servers; they never touch the machine's server at 5432.

use sqlx::{Connection, PgConnection};

use crate::helpers::*;

async fn connect(server: &ThrowawayPostgres) -> PgConnection {
    PgConnection::connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()))
}

async fn count(connection: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(connection)
        .await
        .expect("count the rows")
}

#[tokio::test]
async fn committed_rows_survive_a_kill_9_and_the_restart_serves_new_connections() {
    let mut server = ThrowawayPostgres::start().await;
    let mut writer = connect(&server).await;
    sqlx::query("CREATE TABLE acked (n int PRIMARY KEY)")
        .execute(&mut writer)
        .await
        .unwrap();
    let mut committed = writer.begin().await.unwrap();
    sqlx::query("INSERT INTO acked SELECT generate_series(1, 100)")
        .execute(&mut *committed)
        .await
        .unwrap();
    committed.commit().await.unwrap();
    // A transaction open at the crash: its rows must not come back.
    let mut open = connect(&server).await;
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    sqlx::query("INSERT INTO acked SELECT generate_series(101, 200)")
        .execute(&mut open)
        .await
        .unwrap();
    let port = server.port();

    server.kill9().await;

    assert_eq!(server.processes(), Vec::<u32>::new(), "no process survives");
    let refused = PgConnection::connect(&server.url()).await;
    assert!(
        refused.is_err(),
        "a new connection to a killed server fails"
    );
    let broken = sqlx::query("SELECT 1").execute(&mut writer).await;
    assert!(
        broken.is_err(),
        "a connection opened before the kill is broken"
    );

    server.restart().await;

    assert_eq!(server.port(), port, "the restart keeps the port");
    let mut reader = connect(&server).await;
    assert_eq!(count(&mut reader, "acked").await, 100);
    let max: i32 = sqlx::query_scalar("SELECT max(n) FROM acked")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(max, 100, "the rows of the open transaction are gone");
    sqlx::query("INSERT INTO acked VALUES (101)")
        .execute(&mut reader)
        .await
        .expect("the restarted server takes writes");
    assert_eq!(count(&mut reader, "acked").await, 101);
}

#[tokio::test]
async fn two_servers_run_at_once_each_on_its_own_port_and_data() {
    let (mut first, second) = tokio::join!(ThrowawayPostgres::start(), ThrowawayPostgres::start());
    assert_ne!(first.port(), second.port());
    assert_ne!(first.port(), 5432, "never the machine's server");
    let mut on_first = connect(&first).await;
    sqlx::query("CREATE TABLE only_on_first (n int)")
        .execute(&mut on_first)
        .await
        .unwrap();
    sqlx::query("INSERT INTO only_on_first VALUES (1)")
        .execute(&mut on_first)
        .await
        .unwrap();
    let mut on_second = connect(&second).await;
    let missing = sqlx::query("SELECT * FROM only_on_first")
        .execute(&mut on_second)
        .await;
    assert!(missing.is_err(), "the second server has its own data");

    // A fast shutdown of one leaves the other serving, and the first starts again.
    on_first.close().await.ok();
    first.stop().await;
    assert!(PgConnection::connect(&first.url()).await.is_err());
    assert_eq!(first.processes(), Vec::<u32>::new());
    sqlx::query("SELECT 1")
        .execute(&mut on_second)
        .await
        .expect("the second server still serves");
    first.restart().await;
    assert_eq!(count(&mut connect(&first).await, "only_on_first").await, 1);
}

#[tokio::test]
async fn a_dropped_server_leaves_no_process_and_no_files_behind() {
    let server = ThrowawayPostgres::start().await;
    // A connection, so that a backend is among the processes to end.
    let connection = connect(&server).await;
    let processes = server.processes();
    let postmaster = server.postmaster_pid().expect("a running postmaster");
    assert!(processes.contains(&postmaster), "{processes:?}");
    assert!(
        processes.len() > 2,
        "the postmaster and its children: {processes:?}"
    );
    let name = server
        .dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = server.dir().to_path_buf();

    drop(server);

    for pid in &processes {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} of the dropped server is still there (not even a zombie may stay)"
        );
    }
    assert_eq!(processes_naming(&name), Vec::<u32>::new());
    assert!(!dir.exists(), "{} removed", dir.display());
    drop(connection);
}

#[tokio::test]
#[should_panic(expected = "Address already in use")]
async fn a_restart_that_fails_shows_the_servers_log() {
    let mut server = ThrowawayPostgres::start().await;
    server.stop().await;
    let _taken = std::net::TcpListener::bind(("127.0.0.1", server.port())).unwrap();
    server.restart().await;
}

#[test]
fn a_missing_pg_config_fails_naming_the_command_that_installs_the_server() {
    let missing = server_binaries("wk-no-such-pg_config").unwrap_err();
    assert!(
        missing.contains("`wk-no-such-pg_config` could not run"),
        "{missing}"
    );
    assert!(missing.contains(SETUP_COMMAND), "{missing}");
}

#[test]
fn a_bindir_without_initdb_fails_naming_the_command_that_installs_the_server() {
    let empty = tempfile::tempdir().unwrap();
    let missing = server_programs_in(empty.path(), "pg_config").unwrap_err();
    assert!(missing.contains("which has no `initdb`"), "{missing}");
    assert!(missing.contains(SETUP_COMMAND), "{missing}");
}
