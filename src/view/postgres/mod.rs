//! The PostgreSQL implementation of the view: the one view that several nodes share, in the
//! database that holds their log.
//!
//! Owns a pool on that database (opened with [`crate::postgres::connect`], which brings the
//! schema of `migrations/postgres` up to date); the reads live in [`reads`], the writing of a
//! batch in [`write`]. Promises what [`ViewStore`] promises, with the same rows and the same
//! dump as the SQLite view for the same log, and more: two writers at once (two nodes'
//! projectors, or a projector and a node appending) take turns on the checkpoint's row, so
//! neither applies an event twice. Every query is a runtime `sqlx::query` with binds, so the
//! build needs no database. Must never: be written by anything but a projector or an append
//! through [`apply_in`], or log the database URL.

mod reads;
mod session_seqs;
mod write;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool};

use super::columns::no_checkpoint;
use super::{SessionRecord, SessionSeq, ViewDump, ViewError, ViewState, ViewStore};
use crate::domain::*;

pub use write::apply_in;

pub struct PostgresView {
    pool: PgPool,
}

impl PostgresView {
    /// Connects to the database at `url` with a pool of at most `max_connections` and brings
    /// its schema up to date. A database that cannot be reached is
    /// [`ViewError::Unavailable`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, ViewError> {
        Ok(PostgresView {
            pool: crate::postgres::connect(url, max_connections).await?,
        })
    }

    /// Connects to the database at `url`, whose schema must already be this build's: for the
    /// operator commands, which read a shared view and must not create or migrate one.
    pub async fn connect_existing(url: &str, max_connections: u32) -> Result<Self, ViewError> {
        Ok(PostgresView {
            pool: crate::postgres::connect_existing(url, max_connections).await?,
        })
    }

    /// The view over a pool already connected (and migrated) by [`crate::postgres::connect`],
    /// such as the log's. [`ViewStore::close`] closes that pool.
    pub fn with_pool(pool: PgPool) -> Self {
        PostgresView { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The checkpoint, on `conn` (inside the caller's transaction when it has one).
async fn read_checkpoint(conn: &mut PgConnection) -> Result<Seq, ViewError> {
    let n: i64 = sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
        .fetch_optional(conn)
        .await?
        .ok_or_else(no_checkpoint)?;
    Ok(Seq(n.max(0) as u64))
}

/// A seq as PostgreSQL stores it (`bigint`).
fn seq(s: Seq) -> i64 {
    s.0 as i64
}

#[async_trait]
impl ViewStore for PostgresView {
    async fn checkpoint(&self) -> Result<Seq, ViewError> {
        read_checkpoint(&mut *self.pool.acquire().await?).await
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<(), ViewError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        apply_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(())
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
        self.pool.close().await;
    }
}
