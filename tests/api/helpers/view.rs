//! The SQL view from outside the server: waiting until it has caught up with the log, and the
//! migrations it records, read and rewritten through sqlx.
//!
//! Owns no connection past a call: each helper opens its pool and closes it, so that the file is
//! left as the server or a later test expects. Must never touch a view a running server holds
//! open, except to read it.

use std::path::Path;
use std::time::Duration;

use super::TestApp;

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
