//! The reads the webhook starts its counts from, on PostgreSQL: the open sessions with the seq
//! of their `Connected`, and sessions looked up by id.
//!
//! Owns two queries that use the view's existing indexes (the partial index of open sessions,
//! the primary key), so that neither scans the whole history. Promises: the open sessions and
//! the checkpoint are read in one snapshot, whatever other nodes' projectors commit meanwhile.
//! Must never: write.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use super::super::columns::*;
use super::super::{SessionSeq, ViewError};
use super::read_checkpoint;
use crate::domain::*;

/// A read-only transaction that sees one snapshot from its first query to its end.
const SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

fn session_seq(row: &PgRow) -> Result<SessionSeq, ViewError> {
    Ok(SessionSeq {
        session_id: session_col(row.try_get(0)?)?,
        uid: uid_col(row.try_get(1)?)?,
        device_flag: flag_col(row.try_get(2)?)?,
        connected_seq: Seq(row.try_get::<i64, _>(3)?.max(0) as u64),
    })
}

pub(super) async fn open(pool: &PgPool) -> Result<(Seq, Vec<SessionSeq>), ViewError> {
    let mut tx = pool.begin_with(SNAPSHOT).await?;
    let checkpoint = read_checkpoint(&mut tx).await?;
    let rows = sqlx::query(
        "SELECT session_id::text, uid, device_flag, connected_seq FROM device_sessions \
         WHERE disconnected_seq IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let open = rows.iter().map(session_seq).collect::<Result<_, _>>()?;
    Ok((checkpoint, open))
}

pub(super) async fn by_id(pool: &PgPool, ids: &[SessionId]) -> Result<Vec<SessionSeq>, ViewError> {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let rows = sqlx::query(
        "SELECT session_id::text, uid, device_flag, connected_seq FROM device_sessions \
         WHERE session_id = ANY($1::text[]::uuid[])",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.iter().map(session_seq).collect()
}
