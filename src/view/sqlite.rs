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
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{HistorySnapshot, SessionRecord, ViewDump, ViewError, ViewState, ViewStore};
use crate::domain::event;
use crate::domain::*;

pub struct SqliteView {
    pool: SqlitePool,
}

/// The view's schema, one migration per version; sqlx records the applied ones in the view's
/// `_sqlx_migrations` table. A migration, once released, is never edited (sqlx refuses a view
/// whose recorded checksum differs); later ones must leave `projector_checkpoint` as the first
/// made it, since [`SqliteView::peek_checkpoint`] reads it from views of every version.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

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
        let pool = pool_options(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(SqliteView { pool })
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
        Ok(SqliteView { pool })
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
/// #3645). It happened here: one `wkuser audit` in about 7,000, run beside a busy server, never
/// exited, its worker thread spinning in that sweep (`gdb`, 2026-12-06). A file on the local
/// disk gains nothing from reaping idle connections, and without both settings (and with no
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
        // Nothing to commit: ending it releases the snapshot (and lets the WAL be folded in).
        tx.rollback().await?;
        Ok(HistorySnapshot {
            checkpoint,
            sessions,
            open_flags,
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

/// Up to `limit` of `uid`'s sessions, newest first, strictly older than `before` when given.
async fn read_sessions(
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

fn seq(s: Seq) -> i64 {
    s.0 as i64
}

async fn apply_one(tx: &mut Transaction<'_, Sqlite>, r: &RecordedEvent) -> Result<(), sqlx::Error> {
    let at = r.recorded_at;
    match &r.event {
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
        // Gathered by `Pending` and written in bulk at the end of the batch.
        Event::TokenUpdated(_) | Event::Connected(_) => {}
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

/// Rows of a batch written with multi-row statements at its end instead of one statement per
/// event: new users; the last state of each token touched (a device quit in the batch is
/// applied to it as well as to the older rows); new sessions, inserted already closed when
/// they also close within the batch (one row write instead of an insert and an update). The
/// result equals applying the events one by one.
#[derive(Default)]
struct Pending<'a> {
    users: Vec<(&'a Uid, i64, i64)>,
    seen_users: std::collections::HashSet<&'a Uid>,
    tokens: Vec<TokenRow<'a>>,
    token_at: std::collections::HashMap<(&'a Uid, DeviceFlag), usize>,
    sessions: Vec<NewSession<'a>>,
    by_id: std::collections::HashMap<SessionId, usize>,
}

struct TokenRow<'a> {
    uid: &'a Uid,
    flag: DeviceFlag,
    level: DeviceLevel,
    hash: Option<TokenHash>,
    seq: i64,
    at: i64,
}

struct NewSession<'a> {
    connected: &'a event::Connected,
    seq: i64,
    at: i64,
    closed: Option<(i64, i64, &'static str)>,
}

/// Rows per multi-row statement (12 binds each: well under SQLite's variable limit).
const ROWS_PER_STATEMENT: usize = 64;

impl<'a> Pending<'a> {
    /// Takes the event's deferred part; `false` when the event still needs `apply_one`.
    fn take(&mut self, r: &'a RecordedEvent) -> bool {
        match &r.event {
            Event::TokenUpdated(e) => {
                if self.seen_users.insert(&e.uid) {
                    self.users.push((&e.uid, seq(r.seq), r.recorded_at));
                }
                let row = TokenRow {
                    uid: &e.uid,
                    flag: e.device_flag,
                    level: e.device_level,
                    hash: Some(e.token_hash),
                    seq: seq(r.seq),
                    at: r.recorded_at,
                };
                match self.token_at.get(&(&e.uid, e.device_flag)) {
                    Some(&i) => self.tokens[i] = row,
                    None => {
                        self.token_at
                            .insert((&e.uid, e.device_flag), self.tokens.len());
                        self.tokens.push(row);
                    }
                }
                true
            }
            Event::DeviceQuit(e) => {
                for t in &mut self.tokens {
                    if t.uid == &e.uid && e.device_flag.covers(t.flag) && t.hash.is_some() {
                        t.hash = None;
                        t.seq = seq(r.seq);
                        t.at = r.recorded_at;
                    }
                }
                // The rows of earlier batches are cleared by `apply_one`.
                false
            }
            Event::Connected(e) => {
                self.by_id.insert(e.session_id, self.sessions.len());
                self.sessions.push(NewSession {
                    connected: e,
                    seq: seq(r.seq),
                    at: r.recorded_at,
                    closed: None,
                });
                true
            }
            Event::Disconnected(e) => match self.by_id.get(&e.session_id) {
                Some(&i) => {
                    let s = &mut self.sessions[i];
                    if s.closed.is_none() {
                        s.closed = Some((seq(r.seq), r.recorded_at, e.reason.as_str()));
                    }
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    async fn write(self, tx: &mut Transaction<'_, Sqlite>) -> Result<(), sqlx::Error> {
        for part in self.users.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO users (uid, created_seq, created_at) ");
            q.push_values(part, |mut b, (uid, seq, at)| {
                b.push_bind(uid.as_str()).push_bind(*seq).push_bind(*at);
            });
            q.push(" ON CONFLICT (uid) DO NOTHING");
            q.build().persistent(true).execute(&mut **tx).await?;
        }
        for part in self.tokens.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO tokens (uid, device_flag, device_level, token_hash, updated_seq, updated_at) ",
            );
            q.push_values(part, |mut b, t| {
                b.push_bind(t.uid.as_str())
                    .push_bind(i64::from(t.flag.0))
                    .push_bind(i64::from(t.level.as_u8()))
                    .push_bind(t.hash.map(|h| h.to_hex()))
                    .push_bind(t.seq)
                    .push_bind(t.at);
            });
            q.push(
                " ON CONFLICT (uid, device_flag) DO UPDATE SET device_level = excluded.device_level, \
                 token_hash = excluded.token_hash, updated_seq = excluded.updated_seq, updated_at = excluded.updated_at",
            );
            q.build().persistent(true).execute(&mut **tx).await?;
        }
        for part in self.sessions.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO device_sessions (session_id, uid, device_flag, device_level, device_id, node_id, peer, \
                 connected_seq, connected_at, disconnected_seq, disconnected_at, reason) ",
            );
            q.push_values(part, |mut b, s| {
                let e = s.connected;
                b.push_bind(e.session_id.to_string())
                    .push_bind(e.uid.as_str())
                    .push_bind(i64::from(e.device_flag.0))
                    .push_bind(i64::from(e.device_level.as_u8()))
                    .push_bind(e.device_id.as_str())
                    .push_bind(e.node_id.0 as i64)
                    .push_bind(e.peer.as_str())
                    .push_bind(s.seq)
                    .push_bind(s.at)
                    .push_bind(s.closed.map(|c| c.0))
                    .push_bind(s.closed.map(|c| c.1))
                    .push_bind(s.closed.map(|c| c.2));
            });
            q.push(" ON CONFLICT (session_id) DO NOTHING");
            q.build().persistent(true).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

fn malformed(what: impl std::fmt::Display) -> ViewError {
    ViewError::Malformed(what.to_string())
}

/// The migration writes the checkpoint's one row: a view without it is malformed, not empty.
fn no_checkpoint() -> ViewError {
    malformed("projector_checkpoint has no row")
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
        read_checkpoint(&mut *self.pool.acquire().await?).await
    }

    async fn apply(&self, batch: &[RecordedEvent]) -> Result<(), ViewError> {
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let done: i64 =
            sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(no_checkpoint)?;
        let mut pending = Pending::default();
        for r in batch.iter().filter(|r| seq(r.seq) > done) {
            if !pending.take(r) {
                apply_one(&mut tx, r).await?;
            }
        }
        pending.write(&mut tx).await?;
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
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(no_checkpoint)?;
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
        read_sessions(&mut *self.pool.acquire().await?, uid, before, limit).await
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
}
