//! Reads of the SQLite view: the snapshot memory is restored from, a user's session history,
//! and the dump that compares two views.
//!
//! Owns the queries that read and the parsing of each column into the domain's types.
//! Promises: what is read together is read in one snapshot (one transaction); a row this build
//! cannot read is reported as malformed, never guessed at. Must never: write.

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Row;

use super::super::columns::*;
use super::super::{HistorySnapshot, SessionRecord, ViewDump, ViewError, ViewState};
use super::{read_checkpoint, SqliteView};
use crate::domain::*;

/// Each table of the view with the query that dumps it in a canonical order.
const DUMPS: &[(&str, &str)] = &[
    (
        "users",
        "SELECT quote(uid)||','||created_seq||','||created_at FROM users ORDER BY uid",
    ),
    (
        "tokens",
        "SELECT quote(uid)||','||device_flag||','||device_level||','||quote(token_hash)||','||updated_seq||','||updated_at \
         FROM tokens ORDER BY uid, device_flag",
    ),
    (
        "device_sessions",
        "SELECT quote(session_id)||','||quote(uid)||','||device_flag||','||device_level||','||quote(device_id)||','||node_id||','||quote(peer)\
         ||','||connected_seq||','||connected_at||','||quote(disconnected_seq)||','||quote(disconnected_at)||','||quote(reason) \
         FROM device_sessions ORDER BY session_id",
    ),
    (
        "system_uids",
        "SELECT quote(uid)||','||added_seq FROM system_uids ORDER BY uid",
    ),
    (
        "node_lifetimes",
        "SELECT quote(boot_id)||','||node_id||','||quote(version)||','||started_seq||','||started_at||','||quote(stopped_seq)||','||quote(stopped_at) \
         FROM node_lifetimes ORDER BY boot_id",
    ),
    (
        "last_seen",
        "SELECT quote(uid)||','||device_flag||','||seen_seq||','||seen_at FROM last_seen \
         ORDER BY uid, device_flag",
    ),
    (
        "projector_checkpoint",
        "SELECT 'last_seq='||last_seq FROM projector_checkpoint",
    ),
];

impl SqliteView {
    /// The newest page of `uid`'s sessions (up to `limit`, as [`ViewStore::sessions`] gives
    /// it), the flags the user has a session open on and the checkpoint, all read in one
    /// snapshot of the view. Read one by one beside a server that keeps projecting, they could
    /// each see a different moment: a session open on the page that the flags no longer have,
    /// or a checkpoint older than the rows.
    pub async fn history_snapshot(
        &self,
        uid: &Uid,
        limit: u32,
    ) -> Result<HistorySnapshot, ViewError> {
        // One read transaction: in WAL mode its first SELECT fixes the snapshot that every
        // later one reads, whatever the projector commits meanwhile. BEGIN (deferred) writes
        // nothing, so it works on a read-only connection.
        let mut tx = self.pool.begin().await?;
        let checkpoint = read_checkpoint(&mut tx).await?;
        let sessions = read_sessions(&mut tx, uid, None, limit).await?;
        let open_flags = read_open_flags(&mut tx, uid).await?;
        let last_seen = read_last_seen(&mut tx, uid).await?;
        // Nothing to commit: ending it releases the snapshot (and lets the WAL be folded in).
        tx.rollback().await?;
        Ok(HistorySnapshot {
            checkpoint,
            sessions,
            open_flags,
            last_seen,
        })
    }
}

/// The flags `uid` has a session open on, as the view holds them, ascending: whatever the age
/// of those sessions (a page of the history may not reach back to them).
async fn read_open_flags(
    conn: &mut SqliteConnection,
    uid: &Uid,
) -> Result<Vec<DeviceFlag>, ViewError> {
    let rows = sqlx::query(
        "SELECT DISTINCT device_flag FROM device_sessions \
         WHERE uid = ?1 AND disconnected_at IS NULL ORDER BY device_flag",
    )
    .bind(uid.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| flag_col(row.try_get(0)?)).collect()
}

/// When each flag of `uid` last had a session end, by flag.
async fn read_last_seen(
    conn: &mut SqliteConnection,
    uid: &Uid,
) -> Result<Vec<(DeviceFlag, i64)>, ViewError> {
    let rows = sqlx::query(
        "SELECT device_flag, seen_at FROM last_seen WHERE uid = ?1 ORDER BY device_flag",
    )
    .bind(uid.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((flag_col(row.try_get(0)?)?, row.try_get(1)?)))
        .collect()
}

/// Up to `limit` of `uid`'s sessions, newest first, strictly older than `before` when given.
pub(super) async fn read_sessions(
    conn: &mut SqliteConnection,
    uid: &Uid,
    before: Option<SessionId>,
    limit: u32,
) -> Result<Vec<SessionRecord>, ViewError> {
    let rows = sqlx::query(
        "SELECT session_id, device_flag, device_level, device_id, node_id, peer, connected_at, disconnected_at, reason \
         FROM device_sessions WHERE uid = ?1 AND (?2 IS NULL OR session_id < ?2) \
         ORDER BY session_id DESC LIMIT ?3",
    )
    .bind(uid.as_str())
    .bind(before.map(|s| s.to_string()))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| session_record(row, uid)).collect()
}

/// The snapshot memory is restored from. Rows are read one at a time as SQLite yields them
/// (not all gathered first): at a million users, the rows of a whole table held at once cost
/// several times what memory keeps of them.
pub(super) async fn load_state(pool: &SqlitePool) -> Result<ViewState, ViewError> {
    let mut conn = pool.begin().await?;
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(no_checkpoint)?;
    let mut state = ViewState {
        checkpoint: Seq(checkpoint as u64),
        ..Default::default()
    };
    {
        let mut rows = sqlx::query("SELECT uid, device_flag, device_level, token_hash FROM tokens")
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let slot = token_slot(row.try_get(3)?, row.try_get(2)?)?;
            state
                .tokens
                .push((uid_col(row.try_get(0)?)?, flag_col(row.try_get(1)?)?, slot));
        }
    }
    {
        let mut rows = sqlx::query(
            "SELECT session_id, uid, device_flag, device_level, device_id, node_id FROM device_sessions \
                 WHERE disconnected_seq IS NULL ORDER BY connected_seq",
        )
        .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            state.open_sessions.push(open_session(&row)?);
        }
    }
    for row in sqlx::query("SELECT uid FROM system_uids ORDER BY uid")
        .fetch_all(&mut *conn)
        .await?
    {
        state.system_uids.push(uid_col(row.try_get(0)?)?);
    }
    {
        let mut rows =
            sqlx::query("SELECT uid, device_flag, seen_at FROM last_seen").fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            state.last_seen.push((
                uid_col(row.try_get(0)?)?,
                flag_col(row.try_get(1)?)?,
                row.try_get(2)?,
            ));
        }
    }
    conn.rollback().await?;
    Ok(state)
}

pub(super) async fn dump(pool: &SqlitePool) -> Result<ViewDump, ViewError> {
    let mut dump = ViewDump::default();
    for (table, query) in DUMPS {
        let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(pool).await?;
        dump.tables.push((table.to_string(), rows));
    }
    Ok(dump)
}
