//! PostgreSQL, where several nodes keep one log and one view: connecting, and the schema.
//!
//! Owns the pool options every PostgreSQL store uses and the one migrator of
//! `migrations/postgres`, which holds the view's tables and the log's (a node applies it at
//! start; the migrations are idempotent to run from several nodes at once because sqlx takes an
//! advisory lock while it migrates). Promises: queries are runtime `sqlx::query` with binds, so
//! the build needs no database. Must never: log the database URL's password.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// The schema of the shared log and view, one migration per version.
pub static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a connection may take to be handed out before the caller is told the database is
/// unavailable.
const ACQUIRE_LIMIT: Duration = Duration::from_secs(5);

/// The options of every pool: at most `max_connections`, no maintenance task (see
/// `view::sqlite::pool_options` for why an idle timeout or a lifetime is left out).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_LIMIT)
}

/// Connects to `url` with a pool of `max_connections` and brings the schema up to date.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("wkuser");
    let pool = pool_options(max_connections).connect_with(options).await?;
    MIGRATOR.run(&pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => e,
        other => sqlx::Error::Migrate(Box::new(other)),
    })?;
    Ok(pool)
}
