//! The reads the webhook starts its counts from, on SQLite: the open sessions with the seq of
//! their `Connected`, and sessions looked up by id.
//!
//! Owns two queries that use the view's existing indexes (the partial index of open sessions,
//! the primary key), so that neither scans the whole history. Promises: the open sessions and
//! the checkpoint are read in one snapshot. Must never: write.

use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::super::columns::*;
use super::super::{SessionSeq, ViewError};
use super::read_checkpoint;
use crate::domain::*;

/// Ids per lookup statement, well under SQLite's limit of variables per statement.
const IDS_PER_STATEMENT: usize = 256;

fn session_seq(row: &SqliteRow) -> Result<SessionSeq, ViewError> {
    Ok(SessionSeq {
        session_id: session_col(row.try_get(0)?)?,
        uid: uid_col(row.try_get(1)?)?,
        device_flag: flag_col(row.try_get(2)?)?,
        connected_seq: Seq(row.try_get::<i64, _>(3)?.max(0) as u64),
    })
}

pub(super) async fn open(pool: &SqlitePool) -> Result<(Seq, Vec<SessionSeq>), ViewError> {
    // One read transaction: its first SELECT fixes the snapshot the second reads.
    let mut tx = pool.begin().await?;
    let checkpoint = read_checkpoint(&mut tx).await?;
    let rows = sqlx::query(
        "SELECT session_id, uid, device_flag, connected_seq FROM device_sessions \
         WHERE disconnected_seq IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let open = rows.iter().map(session_seq).collect::<Result<_, _>>()?;
    Ok((checkpoint, open))
}

pub(super) async fn by_id(
    pool: &SqlitePool,
    ids: &[SessionId],
) -> Result<Vec<SessionSeq>, ViewError> {
    let mut out = Vec::with_capacity(ids.len());
    for part in ids.chunks(IDS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT session_id, uid, device_flag, connected_seq FROM device_sessions \
             WHERE session_id IN (",
        );
        let mut list = q.separated(", ");
        for id in part {
            list.push_bind(id.to_string());
        }
        q.push(")");
        for row in q.build().fetch_all(pool).await? {
            out.push(session_seq(&row)?);
        }
    }
    Ok(out)
}
