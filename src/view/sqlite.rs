//! The SQLite implementation of the view: the embedded default, one file in the data
//! directory, WAL mode.
//!
//! Promises what [`ViewStore`] promises; every query is a runtime `sqlx::query` with binds, so
//! the build needs no database. Must never: be written by anything but the projector (and a
//! replay into a fresh file).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{SessionRecord, ViewDump, ViewError, ViewState, ViewStore};
use crate::domain::*;

pub struct SqliteView {
    pool: SqlitePool,
}

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
        "projector_checkpoint",
        "SELECT 'last_seq='||last_seq FROM projector_checkpoint",
    ),
];

impl SqliteView {
    /// Opens (creating if needed) the view at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, ViewError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The view is a projection: a transaction lost to power failure is replayed from
            // the log, since its checkpoint is lost with it. NORMAL is safe for that in WAL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteView { pool })
    }
}

fn seq(s: Seq) -> i64 {
    s.0 as i64
}

async fn apply_one(tx: &mut Transaction<'_, Sqlite>, r: &RecordedEvent) -> Result<(), sqlx::Error> {
    let at = r.recorded_at;
    match &r.event {
        Event::TokenUpdated(e) => {
            sqlx::query("INSERT INTO users (uid, created_seq, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (uid) DO NOTHING")
                .bind(e.uid.as_str())
                .bind(seq(r.seq))
                .bind(at)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO tokens (uid, device_flag, device_level, token_hash, updated_seq, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (uid, device_flag) DO UPDATE SET device_level = ?3, token_hash = ?4, updated_seq = ?5, updated_at = ?6",
            )
            .bind(e.uid.as_str())
            .bind(i64::from(e.device_flag.0))
            .bind(i64::from(e.device_level.as_u8()))
            .bind(e.token_hash.to_hex())
            .bind(seq(r.seq))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::DeviceQuit(e) => {
            let flag: i64 = match e.device_flag {
                QuitScope::All => -1,
                QuitScope::One(f) => f.0.into(),
            };
            sqlx::query(
                "UPDATE tokens SET token_hash = NULL, updated_seq = ?3, updated_at = ?4 \
                 WHERE uid = ?1 AND (?2 = -1 OR device_flag = ?2) AND token_hash IS NOT NULL",
            )
            .bind(e.uid.as_str())
            .bind(flag)
            .bind(seq(r.seq))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::Connected(e) => {
            sqlx::query(
                "INSERT INTO device_sessions (session_id, uid, device_flag, device_level, device_id, node_id, peer, connected_seq, connected_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(e.session_id.to_string())
            .bind(e.uid.as_str())
            .bind(i64::from(e.device_flag.0))
            .bind(i64::from(e.device_level.as_u8()))
            .bind(e.device_id.as_str())
            .bind(e.node_id.0 as i64)
            .bind(&e.peer)
            .bind(seq(r.seq))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::Disconnected(e) => {
            sqlx::query(
                "UPDATE device_sessions SET disconnected_seq = ?2, disconnected_at = ?3, reason = ?4 \
                 WHERE session_id = ?1 AND disconnected_seq IS NULL",
            )
            .bind(e.session_id.to_string())
            .bind(seq(r.seq))
            .bind(at)
            .bind(e.reason.as_str())
            .execute(&mut **tx)
            .await?;
        }
        Event::SystemUidsAdded(e) => {
            for uid in &e.uids {
                sqlx::query("INSERT INTO system_uids (uid, added_seq) VALUES (?1, ?2) ON CONFLICT (uid) DO NOTHING")
                    .bind(uid.as_str())
                    .bind(seq(r.seq))
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Event::SystemUidsRemoved(e) => {
            for uid in &e.uids {
                sqlx::query("DELETE FROM system_uids WHERE uid = ?1")
                    .bind(uid.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Event::NodeStarted(e) => {
            sqlx::query(
                "INSERT INTO node_lifetimes (boot_id, node_id, version, started_seq, started_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (boot_id) DO NOTHING",
            )
            .bind(e.boot_id.to_string())
            .bind(e.node_id.0 as i64)
            .bind(&e.version)
            .bind(seq(r.seq))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Event::NodeStopped(e) => {
            sqlx::query(
                "UPDATE node_lifetimes SET stopped_seq = ?2, stopped_at = ?3 WHERE boot_id = ?1",
            )
            .bind(e.boot_id.to_string())
            .bind(seq(r.seq))
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn malformed(what: impl std::fmt::Display) -> ViewError {
    ViewError::Malformed(what.to_string())
}

fn uid_col(s: &str) -> Result<Uid, ViewError> {
    Uid::parse(s).map_err(|e| malformed(format_args!("uid {s:?}: {e}")))
}

fn flag_col(n: i64) -> Result<DeviceFlag, ViewError> {
    DeviceFlag::parse(n).ok_or_else(|| malformed(format_args!("device_flag {n}")))
}

fn level_col(n: i64) -> Result<DeviceLevel, ViewError> {
    DeviceLevel::parse(n).ok_or_else(|| malformed(format_args!("device_level {n}")))
}

fn session_col(s: &str) -> Result<SessionId, ViewError> {
    SessionId::parse(s).ok_or_else(|| malformed(format_args!("session_id {s:?}")))
}

fn device_col(s: &str) -> Result<DeviceId, ViewError> {
    DeviceId::parse(s).ok_or_else(|| malformed(format_args!("device_id {s:?}")))
}

#[async_trait]
impl ViewStore for SqliteView {
    async fn checkpoint(&self) -> Result<Seq, ViewError> {
        let n: i64 = sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Seq(n as u64))
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<(), ViewError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let done: i64 =
            sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        for r in batch.iter().filter(|r| seq(r.seq) > done) {
            apply_one(&mut tx, r).await?;
        }
        sqlx::query("UPDATE projector_checkpoint SET last_seq = ?1 WHERE id = 1 AND last_seq < ?1")
            .bind(seq(last.seq))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_state(&self) -> Result<ViewState, ViewError> {
        let mut conn = self.pool.begin().await?;
        let checkpoint: i64 =
            sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
        let mut state = ViewState {
            checkpoint: Seq(checkpoint as u64),
            ..Default::default()
        };
        for row in sqlx::query("SELECT uid, device_flag, device_level, token_hash FROM tokens")
            .fetch_all(&mut *conn)
            .await?
        {
            let hash: Option<String> = row.try_get(3)?;
            let slot = match hash {
                None => TokenSlot::Cleared,
                Some(h) => TokenSlot::Active {
                    hash: TokenHash::from_hex(&h).ok_or_else(|| malformed("token_hash"))?,
                    level: level_col(row.try_get(2)?)?,
                },
            };
            state
                .tokens
                .push((uid_col(row.try_get(0)?)?, flag_col(row.try_get(1)?)?, slot));
        }
        for row in sqlx::query(
            "SELECT session_id, uid, device_flag, device_level, device_id FROM device_sessions \
             WHERE disconnected_seq IS NULL ORDER BY connected_seq",
        )
        .fetch_all(&mut *conn)
        .await?
        {
            state.open_sessions.push((
                uid_col(row.try_get(1)?)?,
                OpenSession {
                    session_id: session_col(row.try_get(0)?)?,
                    device_flag: flag_col(row.try_get(2)?)?,
                    device_level: level_col(row.try_get(3)?)?,
                    device_id: device_col(row.try_get(4)?)?,
                },
            ));
        }
        for row in sqlx::query("SELECT uid FROM system_uids ORDER BY uid")
            .fetch_all(&mut *conn)
            .await?
        {
            state.system_uids.push(uid_col(row.try_get(0)?)?);
        }
        conn.rollback().await?;
        Ok(state)
    }

    async fn sessions(
        &self,
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
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let reason: Option<String> = row.try_get(8)?;
                Ok(SessionRecord {
                    session_id: session_col(row.try_get(0)?)?,
                    uid: uid.clone(),
                    device_flag: flag_col(row.try_get(1)?)?,
                    device_level: level_col(row.try_get(2)?)?,
                    device_id: device_col(row.try_get(3)?)?,
                    node_id: NodeId(row.try_get::<i64, _>(4)? as u64),
                    peer: row.try_get(5)?,
                    connected_at: row.try_get(6)?,
                    disconnected_at: row.try_get(7)?,
                    reason: reason
                        .map(|r| {
                            CloseReason::parse(&r)
                                .ok_or_else(|| malformed(format_args!("reason {r:?}")))
                        })
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn dump(&self) -> Result<ViewDump, ViewError> {
        let mut dump = ViewDump::default();
        for (table, query) in DUMPS {
            let rows: Vec<String> = sqlx::query_scalar(query).fetch_all(&self.pool).await?;
            dump.tables.push((table.to_string(), rows));
        }
        Ok(dump)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
