//! The SQL view from outside the server: waiting until it has caught up with the log, and the
//! migrations it records, read and rewritten through sqlx.
//!
//! Owns no connection past a call: each helper opens its pool and closes it, so that the file is
//! left as the server or a later test expects. Must never touch a view a running server holds
//! open, except to read it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wkuser::domain::Uid;
use wkuser::view::{HistorySnapshot, PostgresView, SqliteView, ViewStore};

use super::{TestApp, TestDatabase};

impl TestApp {
    /// Waits (at most 5 s) until the SQL view has applied everything durable so far.
    pub async fn view_caught_up(&self) {
        let server = self.server();
        let last = server.write_path().log().last_durable();
        tokio::time::timeout(Duration::from_secs(5), server.view_caught_up(last))
            .await
            .expect("the SQL view catches up within 5 s");
    }
}

/// Sets the migrations the view records as applied to `versions`.
pub async fn record_migrations(view: &Path, versions: &[i64]) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&pool)
        .await
        .unwrap();
    for v in versions {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?1, 'test', TRUE, x'00', 0)",
        )
        .bind(v)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
}

pub async fn applied_migrations(view: &Path) -> Vec<i64> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", view.display()))
        .await
        .unwrap();
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    versions
}

/// An engine the view runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A view of either engine, with what only the concrete engines offer.
pub enum TestView {
    Sqlite(SqliteView),
    Postgres(PostgresView),
}

impl std::ops::Deref for TestView {
    type Target = dyn ViewStore;

    fn deref(&self) -> &Self::Target {
        match self {
            TestView::Sqlite(v) => v,
            TestView::Postgres(v) => v,
        }
    }
}

impl TestView {
    pub async fn history_snapshot(&self, uid: &Uid, limit: u32) -> HistorySnapshot {
        match self {
            TestView::Sqlite(v) => v.history_snapshot(uid, limit).await,
            TestView::Postgres(v) => v.history_snapshot(uid, limit).await,
        }
        .unwrap()
    }
}

/// Where a test makes fresh, empty, migrated views of one engine, as many as it wants: a file
/// each in a temp dir, or a schema each in a database of the test's own (a schema costs far
/// less than a database, so that a property can make two views per case).
pub struct ViewFactory {
    engine: Engine,
    dir: tempfile::TempDir,
    database: Option<TestDatabase>,
    made: AtomicUsize,
}

impl ViewFactory {
    pub async fn new(engine: Engine) -> ViewFactory {
        let database = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(TestDatabase::create().await),
        };
        ViewFactory {
            engine,
            dir: tempfile::tempdir().unwrap(),
            database,
            made: AtomicUsize::new(0),
        }
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A new view, empty and migrated.
    pub async fn fresh(&self) -> TestView {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        match &self.database {
            None => TestView::Sqlite(
                SqliteView::open(&self.dir.path().join(format!("view{n}.sqlite")))
                    .await
                    .unwrap(),
            ),
            Some(db) => TestView::Postgres(
                PostgresView::connect(&create_schema(db, &format!("view{n}")).await, 2)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The URL of a new, empty schema in the test's database, for a test that opens several
    /// views onto one (as several nodes would). PostgreSQL only.
    pub async fn fresh_url(&self) -> String {
        let db = self
            .database
            .as_ref()
            .expect("only PostgreSQL views are shared");
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        create_schema(db, &format!("view{n}")).await
    }
}

/// Creates `name` in the test's database and returns a URL whose connections use it.
async fn create_schema(db: &TestDatabase, name: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.ok();
    schema_url(db, name)
}

fn schema_url(db: &TestDatabase, name: &str) -> String {
    format!("{}?options[search_path]={name}", db.url)
}
