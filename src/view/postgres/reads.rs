//! Reads of the PostgreSQL view: the snapshot memory is restored from, a user's session history,
//! and the dump that compares two views (of either engine).
//!
//! Owns the queries that read, and the dump's text form as PostgreSQL writes it. Promises: what
//! is read together is read in one snapshot (one REPEATABLE READ transaction), whatever the
//! projectors of other nodes commit meanwhile; the dump is character for character what the
//! SQLite view dumps for the same rows. Must never: write.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Row;

use super::super::columns::*;
use super::super::{HistorySnapshot, SessionRecord, ViewDump, ViewError, ViewState};
use super::{read_checkpoint, PostgresView};
use crate::domain::*;

/// A read-only transaction that sees one snapshot from its first query to its end.
const SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// A text column as SQLite's `quote()` writes it: in single quotes with each quote doubled,
/// `NULL` for NULL. PostgreSQL's own `quote_nullable` differs on a backslash (it writes an
/// `E'...'` string), so it is spelt out.
fn text(column: &str) -> String {
    format!("COALESCE('''' || replace({column}::text, '''', '''''') || '''', 'NULL')")
}

/// A nullable integer column as SQLite's `quote()` writes it.
fn int_or_null(column: &str) -> String {
    format!("COALESCE({column}::text, 'NULL')")
}

/// Each table of the view with the query that dumps it in the canonical order (see
/// [`ViewDump`]): keys of text compare bytewise (the schema's `COLLATE "C"`), and a uuid key
/// orders as its text does.
fn dump_queries() -> Vec<(&'static str, String)> {
    let row = |columns: &[String]| columns.join(" || ',' || ");
    let int = |c: &str| format!("{c}::text");
    vec![
        (
            "users",
            format!(
                "SELECT {} FROM users ORDER BY uid",
                row(&[text("uid"), int("created_seq"), int("created_at")])
            ),
        ),
        (
            "tokens",
            format!(
                "SELECT {} FROM tokens ORDER BY uid, device_flag",
                row(&[
                    text("uid"),
                    int("device_flag"),
                    int("device_level"),
                    text("token_hash"),
                    int("updated_seq"),
                    int("updated_at"),
                ])
            ),
        ),
        (
            "device_sessions",
            format!(
                "SELECT {} FROM device_sessions ORDER BY session_id",
                row(&[
                    text("session_id"),
                    text("uid"),
                    int("device_flag"),
                    int("device_level"),
                    text("device_id"),
                    int("node_id"),
                    text("peer"),
                    int("connected_seq"),
                    int("connected_at"),
                    int_or_null("disconnected_seq"),
                    int_or_null("disconnected_at"),
                    text("reason"),
                ])
            ),
        ),
        (
            "system_uids",
            format!(
                "SELECT {} FROM system_uids ORDER BY uid",
                row(&[text("uid"), int("added_seq")])
            ),
        ),
        (
            "node_lifetimes",
            format!(
                "SELECT {} FROM node_lifetimes ORDER BY boot_id",
                row(&[
                    text("boot_id"),
                    int("node_id"),
                    text("version"),
                    int("started_seq"),
                    int("started_at"),
                    int_or_null("stopped_seq"),
                    int_or_null("stopped_at"),
                ])
            ),
        ),
        (
            "last_seen",
            format!(
                "SELECT {} FROM last_seen ORDER BY uid, device_flag",
                row(&[
                    text("uid"),
                    int("device_flag"),
                    int("seen_seq"),
                    int("seen_at"),
                ])
            ),
        ),
        (
            "projector_checkpoint",
            "SELECT 'last_seq=' || last_seq::text FROM projector_checkpoint".to_string(),
        ),
    ]
}

impl PostgresView {
    /// The checkpoint and the dump, as of one snapshot of the view.
    pub async fn checkpoint_and_dump(&self) -> Result<(Seq, ViewDump), ViewError> {
        checkpoint_and_dump(&self.pool).await
    }

    /// The newest page of `uid`'s sessions (up to `limit`, as [`ViewStore::sessions`] gives
    /// it), the flags the user has a session open on and the checkpoint, all read in one
    /// snapshot of the view. Read one by one beside projectors that keep writing, they could
    /// each see a different moment: a session open on the page that the flags no longer have,
    /// or a checkpoint older than the rows.
    ///
    /// [`ViewStore::sessions`]: super::super::ViewStore::sessions
    pub async fn history_snapshot(
        &self,
        uid: &Uid,
        limit: u32,
    ) -> Result<HistorySnapshot, ViewError> {
        let mut tx = self.pool.begin_with(SNAPSHOT).await?;
        let checkpoint = read_checkpoint(&mut tx).await?;
        let sessions = read_sessions(&mut tx, uid, None, limit).await?;
        let open_flags = read_open_flags(&mut tx, uid).await?;
        let last_seen = read_last_seen(&mut tx, uid).await?;
        // Nothing to commit: ending it releases the snapshot.
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
async fn read_open_flags(conn: &mut PgConnection, uid: &Uid) -> Result<Vec<DeviceFlag>, ViewError> {
    let flags: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT device_flag FROM device_sessions \
         WHERE uid = $1 AND disconnected_at IS NULL ORDER BY device_flag",
    )
    .bind(uid.as_str())
    .fetch_all(conn)
    .await?;
    flags.into_iter().map(flag_col).collect()
}

/// When each flag of `uid` last had a session end, by flag.
async fn read_last_seen(
    conn: &mut PgConnection,
    uid: &Uid,
) -> Result<Vec<(DeviceFlag, i64)>, ViewError> {
    let rows = sqlx::query(
        "SELECT device_flag, seen_at FROM last_seen WHERE uid = $1 ORDER BY device_flag",
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
    conn: &mut PgConnection,
    uid: &Uid,
    before: Option<SessionId>,
    limit: u32,
) -> Result<Vec<SessionRecord>, ViewError> {
    let rows = sqlx::query(
        "SELECT session_id::text, device_flag, device_level, device_id, node_id, peer, connected_at, \
         disconnected_at, reason \
         FROM device_sessions WHERE uid = $1 AND ($2::text IS NULL OR session_id < $2::text::uuid) \
         ORDER BY session_id DESC LIMIT $3",
    )
    .bind(uid.as_str())
    .bind(before.map(|s| s.to_string()))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(|row| session_record(row, uid)).collect()
}

pub(super) async fn load_state(pool: &PgPool) -> Result<ViewState, ViewError> {
    let mut tx = pool.begin_with(SNAPSHOT).await?;
    let mut state = ViewState {
        checkpoint: read_checkpoint(&mut tx).await?,
        ..Default::default()
    };
    for row in sqlx::query("SELECT uid, device_flag, device_level, token_hash FROM tokens")
        .fetch_all(&mut *tx)
        .await?
    {
        let slot = token_slot(row.try_get(3)?, row.try_get(2)?)?;
        state
            .tokens
            .push((uid_col(row.try_get(0)?)?, flag_col(row.try_get(1)?)?, slot));
    }
    for row in sqlx::query(
        "SELECT session_id::text, uid, device_flag, device_level, device_id, node_id FROM device_sessions \
         WHERE disconnected_seq IS NULL ORDER BY connected_seq",
    )
    .fetch_all(&mut *tx)
    .await?
    {
        state.open_sessions.push(open_session(&row)?);
    }
    let system_uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM system_uids ORDER BY uid")
        .fetch_all(&mut *tx)
        .await?;
    for uid in system_uids {
        state.system_uids.push(uid_col(&uid)?);
    }
    for row in sqlx::query("SELECT uid, device_flag, seen_at FROM last_seen")
        .fetch_all(&mut *tx)
        .await?
    {
        state.last_seen.push((
            uid_col(row.try_get(0)?)?,
            flag_col(row.try_get(1)?)?,
            row.try_get(2)?,
        ));
    }
    tx.rollback().await?;
    Ok(state)
}

/// Every table, read in one snapshot: a view that projectors keep writing still dumps as one
/// moment of it.
pub(super) async fn dump(pool: &PgPool) -> Result<ViewDump, ViewError> {
    Ok(checkpoint_and_dump(pool).await?.1)
}

/// The checkpoint and every table, read in one snapshot: what `verify` compares a rebuild of
/// the log up to that checkpoint with, while other nodes' projectors keep writing.
pub(super) async fn checkpoint_and_dump(pool: &PgPool) -> Result<(Seq, ViewDump), ViewError> {
    let mut tx = pool.begin_with(SNAPSHOT).await?;
    let checkpoint = read_checkpoint(&mut tx).await?;
    let mut dump = ViewDump::default();
    for (table, query) in dump_queries() {
        let rows: Vec<String> = sqlx::query_scalar(&query).fetch_all(&mut *tx).await?;
        dump.tables.push((table.to_string(), rows));
    }
    tx.rollback().await?;
    Ok((checkpoint, dump))
}
