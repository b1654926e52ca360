//! The SQLite implementation of the view: the embedded default, one file in the data
//! directory, WAL mode.
//!
//! Owns opening the file (read-write and migrated, or read-only and never changed), its pools
//! and its schema check; the reads live in [`reads`], the writing of a batch in [`write`], the
//! WAL's checkpoints of a read-write view in [`checkpoints`].
//! Promises what [`ViewStore`] promises; every query is a runtime `sqlx::query` with binds, so
//! the build needs no database. Must never: be written by anything but the projector (and a
//! replay into a fresh file).

mod checkpoints;
mod reads;
mod session_seqs;
mod snapshot;
mod write;

pub use snapshot::StateRows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::columns::no_checkpoint;
use super::{SessionRecord, SessionSeq, ViewDump, ViewError, ViewState, ViewStore};
use crate::domain::*;

pub struct SqliteView {
    pool: SqlitePool,
    /// A read-write view's checkpointing thread, until [`ViewStore::close`].
    checkpoints: parking_lot::Mutex<Option<checkpoints::Checkpoints>>,
}

/// The view's schema, one migration per version; sqlx records the applied ones in the view's
/// `_sqlx_migrations` table. A migration, once released, is never edited (sqlx refuses a view
/// whose recorded checksum differs); later ones must leave `projector_checkpoint` as the first
/// made it, since [`SqliteView::peek_checkpoint`] reads it from views of every version.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections of a read-write view: the projector's writes and the API's reads at once.
const CONNECTIONS: u32 = 4;

/// WAL pages past which a commit checkpoints the view itself: only if [`checkpoints`] falls
/// this far behind (about 40 MB of WAL).
const FALLBACK_AUTOCHECKPOINT: u32 = 10_000;

impl SqliteView {
    /// Opens (creating if needed) the view at `path` and brings its schema up to date, with
    /// SQLite's own page cache (2,000 KiB per connection).
    pub async fn open(path: &Path) -> Result<Self, ViewError> {
        Self::open_with_cache(path, crate::config::DEFAULT_VIEW_CACHE_MB).await
    }

    /// [`Self::open`] with a page cache of `cache_mb` MiB in all, split evenly over the pool's
    /// connections (each connection has a cache of its own).
    pub async fn open_with_cache(path: &Path, cache_mb: u64) -> Result<Self, ViewError> {
        let per_connection_kib = (cache_mb * 1024 / u64::from(CONNECTIONS)).max(1);
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The view is a projection: a transaction lost to power failure is replayed from
            // the log, since its checkpoint is lost with it. NORMAL is safe for that in WAL.
            .synchronous(SqliteSynchronous::Normal)
            // A negative size is in KiB (a positive one would be in pages).
            .pragma("cache_size", format!("-{per_connection_kib}"))
            .pragma("wal_autocheckpoint", FALLBACK_AUTOCHECKPOINT.to_string())
            // Every multi-row statement of the projector's transactions keeps a statement
            // journal (a copy of each page it changes, so that it can be undone alone); past
            // 64 KiB SQLite spills it to a new temporary file, created and unlinked per
            // statement. In memory, a statement's journal is freed when it ends, and the
            // file system never sees it.
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(10));
        let pool = pool_options(CONNECTIONS).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        let checkpoints = match checkpoints::Checkpoints::start(path) {
            Ok(checkpoints) => checkpoints,
            Err(e) => {
                pool.close().await;
                return Err(ViewError::Sql(sqlx::Error::Io(e)));
            }
        };
        Ok(SqliteView {
            pool,
            checkpoints: parking_lot::Mutex::new(Some(checkpoints)),
        })
    }

    /// Opens the view at `path` for reading only: never creates the file, never migrates it,
    /// and SQLite refuses any write through it. For looking at a view without changing it: the
    /// operator commands, which may run beside a server. Refuses a view whose schema is not
    /// this build's (older or newer), since its tables would not be what the queries expect.
    pub async fn open_existing_read_only(path: &Path) -> Result<Self, ViewError> {
        let pool = read_only_pool(path).await?;
        if let Err(e) = check_schema(&pool, path).await {
            pool.close().await;
            return Err(e);
        }
        Ok(SqliteView {
            pool,
            checkpoints: parking_lot::Mutex::new(None),
        })
    }

    /// The checkpoint of the view at `path`, read as [`Self::open_existing_read_only`] reads
    /// (the database file never created, migrated or written; SQLite may leave an empty
    /// `-wal` and a `-shm` beside it, as any reader of a WAL database does) but whatever its
    /// schema version: 0 when no migration has created the checkpoint's table yet. For
    /// telling, before anything may migrate a view, whether it holds applied events; a view of
    /// an older schema is exactly the one the read-write open would change. Relies on every schema keeping
    /// `projector_checkpoint` as the first migration made it.
    pub async fn peek_checkpoint(path: &Path) -> Result<Seq, ViewError> {
        let pool = read_only_pool(path).await?;
        let checkpoint = async {
            let mut conn = pool.acquire().await?;
            let made: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'projector_checkpoint')",
            )
            .fetch_one(&mut *conn)
            .await?;
            if !made {
                return Ok(Seq(0));
            }
            read_checkpoint(&mut conn).await
        }
        .await;
        pool.close().await;
        checkpoint
    }
}

/// The options of every pool of a view: at most `max_connections`, each kept open for the
/// pool's life.
///
/// No idle timeout and no lifetime, because either makes sqlx 0.8 (up to 0.8.6 at least) start a
/// maintenance task whose sweep can spin a runtime thread forever: `release` makes a returned
/// connection poppable before it counts it idle, a concurrent pop can take the idle count
/// below zero, and the sweep then loops `0..usize::MAX` without ever awaiting (sqlx issue
/// #3645); a `wkuser audit` run beside a busy server once never exited, its worker thread
/// spinning in that sweep. A file on the local disk gains nothing from reaping idle connections, and without both settings (and with no
/// minimum of connections to keep) sqlx starts no maintenance task at all.
pub fn pool_options(max_connections: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// A pool of one read-only connection to the existing view at `path`.
async fn read_only_pool(path: &Path) -> Result<SqlitePool, ViewError> {
    // Checked here rather than left to SQLite: its "unable to open database file" does not
    // say that the file is simply not there.
    if !path.exists() {
        return Err(ViewError::Missing(path.to_path_buf()));
    }
    let options = SqliteConnectOptions::from_str("sqlite:")?
        .filename(path)
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(pool_options(1).connect_with(options).await?)
}

/// The checkpoint, on `conn` (inside the caller's transaction when it has one).
async fn read_checkpoint(conn: &mut SqliteConnection) -> Result<Seq, ViewError> {
    let n: i64 = sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
        .fetch_optional(conn)
        .await?
        .ok_or_else(no_checkpoint)?;
    Ok(Seq(n as u64))
}

/// Compares the migrations the view records as applied with this build's.
async fn check_schema(pool: &SqlitePool, path: &Path) -> Result<(), ViewError> {
    let known: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    let expected = known.iter().copied().max().unwrap_or(0);
    // A view that no migration ever ran on has no table to ask.
    let recorded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    let applied: Vec<i64> = if recorded {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let found = applied.iter().copied().max().unwrap_or(0);
    let path = path.to_path_buf();
    if applied.iter().any(|v| !known.contains(v)) {
        return Err(ViewError::SchemaNewer {
            path,
            found,
            expected,
        });
    }
    if known.iter().any(|v| !applied.contains(v)) {
        return Err(ViewError::SchemaOlder {
            path,
            found,
            expected,
        });
    }
    Ok(())
}

/// A seq as SQLite stores it.
fn seq(s: Seq) -> i64 {
    s.0 as i64
}

#[async_trait]
impl ViewStore for SqliteView {
    async fn checkpoint(&self) -> Result<Seq, ViewError> {
        read_checkpoint(&mut *self.pool.acquire().await?).await
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<(), ViewError> {
        write::apply(&self.pool, batch).await
    }

    async fn load_state(&self) -> Result<ViewState, ViewError> {
        reads::load_state(&self.pool).await
    }

    async fn sessions(
        &self,
        uid: &Uid,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionRecord>, ViewError> {
        reads::read_sessions(&mut *self.pool.acquire().await?, uid, before, limit).await
    }

    async fn open_session_seqs(&self) -> Result<(Seq, Vec<SessionSeq>), ViewError> {
        session_seqs::open(&self.pool).await
    }

    async fn session_seqs(&self, ids: &[SessionId]) -> Result<Vec<SessionSeq>, ViewError> {
        session_seqs::by_id(&self.pool, ids).await
    }

    async fn dump(&self) -> Result<ViewDump, ViewError> {
        reads::dump(&self.pool).await
    }

    async fn close(&self) {
        let checkpoints = self.checkpoints.lock().take();
        if let Some(checkpoints) = checkpoints {
            checkpoints.stop().await;
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an idle timeout, a lifetime or a minimum, sqlx starts no maintenance task, and
    /// so not the sweep that can spin forever (see [`pool_options`]).
    #[test]
    fn view_pools_start_no_maintenance_task() {
        for max in [1, 4] {
            let options = pool_options(max);
            assert_eq!(options.get_max_connections(), max);
            assert_eq!(options.get_idle_timeout(), None);
            assert_eq!(options.get_max_lifetime(), None);
            assert_eq!(options.get_min_connections(), 0);
        }
    }

    /// `PRAGMA name` as each of the pool's connections answers it: all of them held at once,
    /// so that each answer comes from a connection of its own.
    async fn pragma_on_every_connection(view: &SqliteView, name: &str) -> Vec<i64> {
        let mut held = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut conn = view.pool.acquire().await.unwrap();
            answers.push(
                sqlx::query_scalar(&format!("PRAGMA {name}"))
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap(),
            );
            held.push(conn);
        }
        answers
    }

    /// Statement journals and temporary tables stay in memory on every connection (see
    /// [`SqliteView::open_with_cache`]).
    #[tokio::test]
    async fn temporary_files_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let view = SqliteView::open(&dir.path().join("v.sqlite"))
            .await
            .unwrap();
        // 2 is MEMORY.
        assert_eq!(
            pragma_on_every_connection(&view, "temp_store").await,
            vec![2; CONNECTIONS as usize]
        );
        view.close().await;
    }

    /// The view's cache setting reaches every connection, split evenly between them.
    #[tokio::test]
    async fn the_page_cache_is_split_over_the_connections() {
        let dir = tempfile::tempdir().unwrap();
        let view = SqliteView::open_with_cache(&dir.path().join("v.sqlite"), 16)
            .await
            .unwrap();
        assert_eq!(
            pragma_on_every_connection(&view, "cache_size").await,
            vec![-(16 * 1024 / i64::from(CONNECTIONS)); CONNECTIONS as usize]
        );
        view.close().await;
    }
}
