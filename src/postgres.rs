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
    let pool = connect_only(url, max_connections).await?;
    MIGRATOR.run(&pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => e,
        other => sqlx::Error::Migrate(Box::new(other)),
    })?;
    Ok(pool)
}

/// Connects to `url` and checks, without changing anything, that the database holds this
/// build's whole schema and no migration of a newer build (whose tables this build would
/// misread): for the operator commands, which only read a shared database and must
/// not create or migrate one (a mistyped database name would otherwise be given empty tables
/// and read as an empty log).
pub async fn connect_existing(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    probe(url).await?;
    let pool = connect_only(url, max_connections).await?;
    let applied: Result<Vec<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await;
    let applied = match applied {
        Ok(v) => v,
        // 42P01: undefined table, a database no wkuser node ever started on.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => {
            pool.close().await;
            return Err(e);
        }
    };
    let missing = MIGRATOR
        .iter()
        .find(|m| !applied.contains(&m.version))
        .map(|m| m.version);
    let unknown = applied
        .iter()
        .find(|v| !MIGRATOR.iter().any(|m| m.version == **v));
    if let Some(version) = unknown {
        pool.close().await;
        return Err(sqlx::Error::Configuration(
            format!(
                "the database holds migration {version}, which this build does not know: \
                 a newer wkuser migrated it, so use that build's commands"
            )
            .into(),
        ));
    }
    if let Some(version) = missing {
        pool.close().await;
        let what = if applied.is_empty() {
            "holds no wkuser schema (no node ever started on it)".to_owned()
        } else {
            format!(
                "lacks migration {version} of this build (start a node of this build on it first)"
            )
        };
        return Err(sqlx::Error::Configuration(
            format!("the database {what}").into(),
        ));
    }
    Ok(pool)
}

/// A pool on `url`, the schema left as it is.
async fn connect_only(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections)
        .connect_with(options(url)?)
        .await
}

/// The connect options of `url`, or an error that says what the URL should look like.
fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    PgConnectOptions::from_str(url)
        .map(|o| o.application_name("wkuser"))
        .map_err(|e| {
            let why = match e {
                sqlx::Error::Configuration(why) => why.to_string(),
                other => other.to_string(),
            };
            sqlx::Error::Configuration(
                format!("not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE): {why}").into(),
            )
        })
}

/// One connection to `url`, opened and closed: for a command run once, which should say at
/// once why the database cannot be reached (refused, unknown database, authentication), where
/// a pool waits out its acquire limit and then says only that it timed out.
pub async fn probe(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::{ConnectOptions, Connection};
    let conn = tokio::time::timeout(ACQUIRE_LIMIT, options(url)?.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the database did not answer in time",
            ))
        })??;
    conn.close().await
}
