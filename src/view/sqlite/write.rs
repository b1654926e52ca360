//! Writing a batch of events into the SQLite view.
//!
//! Owns the statements that carry a batch's [`RowChanges`] into the tables, and the checkpoint
//! that accounts for them. Promises: the rows and the checkpoint are written in one transaction,
//! and events at or below the checkpoint are skipped, so a batch applied twice changes nothing.
//! Must never: interpret an event itself (that is [`crate::view::rows`]'s job).

use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::seq;
use crate::domain::*;
use crate::view::columns::no_checkpoint;
use crate::view::rows::RowChanges;
use crate::view::ViewError;

/// Rows per multi-row statement: the widest has 12 binds a row, well under SQLite's limit of
/// variables per statement.
const ROWS_PER_STATEMENT: usize = 64;

/// Applies a batch of consecutive events and moves the checkpoint, in one transaction.
pub(super) async fn apply(pool: &SqlitePool, batch: &[RecordedEvent]) -> Result<(), ViewError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let done: i64 = sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1")
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(no_checkpoint)?;
    let changes = RowChanges::of(batch, Seq(done.max(0) as u64));
    let Some(last) = changes.last else {
        return Ok(());
    };
    write(&mut tx, &changes).await?;
    sqlx::query("UPDATE projector_checkpoint SET last_seq = ?1 WHERE id = 1 AND last_seq < ?1")
        .bind(seq(last))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn write(tx: &mut Transaction<'_, Sqlite>, c: &RowChanges<'_>) -> Result<(), sqlx::Error> {
    for part in c.users.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new("INSERT INTO users (uid, created_seq, created_at) ");
        q.push_values(part, |mut b, u| {
            b.push_bind(u.uid.as_str())
                .push_bind(seq(u.seq))
                .push_bind(u.at);
        });
        q.push(" ON CONFLICT (uid) DO NOTHING");
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    for clear in &c.token_clears {
        let flag: i64 = match clear.scope {
            QuitScope::All => -1,
            QuitScope::One(f) => f.0.into(),
        };
        sqlx::query(
            "UPDATE tokens SET token_hash = NULL, updated_seq = ?3, updated_at = ?4 \
             WHERE uid = ?1 AND (?2 = -1 OR device_flag = ?2) AND token_hash IS NOT NULL",
        )
        .bind(clear.uid.as_str())
        .bind(flag)
        .bind(seq(clear.seq))
        .bind(clear.at)
        .execute(&mut **tx)
        .await?;
    }
    for part in c.tokens.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(
            "INSERT INTO tokens (uid, device_flag, device_level, token_hash, updated_seq, updated_at) ",
        );
        q.push_values(part, |mut b, t| {
            b.push_bind(t.uid.as_str())
                .push_bind(i64::from(t.flag.0))
                .push_bind(i64::from(t.level.as_u8()))
                .push_bind(t.hash.map(|h| h.to_hex()))
                .push_bind(seq(t.seq))
                .push_bind(t.at);
        });
        q.push(
            " ON CONFLICT (uid, device_flag) DO UPDATE SET device_level = excluded.device_level, \
             token_hash = excluded.token_hash, updated_seq = excluded.updated_seq, updated_at = excluded.updated_at",
        );
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    for part in c.sessions.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new(
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
                .push_bind(seq(s.seq))
                .push_bind(s.at)
                .push_bind(s.ended.map(|end| seq(end.seq)))
                .push_bind(s.ended.map(|end| end.at))
                .push_bind(s.ended.map(|end| end.reason.as_str()));
        });
        q.push(" ON CONFLICT (session_id) DO NOTHING");
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    // One statement for many ends, not one per end: each statement is a round trip to sqlx's
    // SQLite thread, and a login storm's closes would otherwise pay a wake of that thread
    // apiece. One end per session ([`RowChanges`] keeps only the first), so each row is matched
    // by at most one row of `ends`; the join goes through the primary key.
    for part in c.session_ends.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::new("WITH ends (session_id, seq, at, reason) AS (");
        q.push_values(part, |mut b, (session_id, end)| {
            b.push_bind(session_id.to_string())
                .push_bind(seq(end.seq))
                .push_bind(end.at)
                .push_bind(end.reason.as_str());
        });
        q.push(
            ") UPDATE device_sessions SET disconnected_seq = ends.seq, disconnected_at = ends.at, \
             reason = ends.reason FROM ends WHERE device_sessions.session_id = ends.session_id \
             AND device_sessions.disconnected_seq IS NULL",
        );
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    let last_seen: Vec<_> = c.last_seen.iter().collect();
    for part in last_seen.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::new("INSERT INTO last_seen (uid, device_flag, seen_seq, seen_at) ");
        q.push_values(part, |mut b, ((uid, flag), (s, at))| {
            b.push_bind(uid.as_str())
                .push_bind(i64::from(flag.0))
                .push_bind(seq(*s))
                .push_bind(*at);
        });
        q.push(
            " ON CONFLICT (uid, device_flag) DO UPDATE SET seen_seq = excluded.seen_seq, \
             seen_at = excluded.seen_at WHERE excluded.seen_seq > last_seen.seen_seq",
        );
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    for (uid, change) in &c.system_uids {
        if change.removed {
            sqlx::query("DELETE FROM system_uids WHERE uid = ?1")
                .bind(uid.as_str())
                .execute(&mut **tx)
                .await?;
        }
        if let Some(added) = change.added {
            sqlx::query(
                "INSERT INTO system_uids (uid, added_seq) VALUES (?1, ?2) ON CONFLICT (uid) DO NOTHING",
            )
            .bind(uid.as_str())
            .bind(seq(added))
            .execute(&mut **tx)
            .await?;
        }
    }
    for (boot_id, stopped, at) in &c.lifetime_stops {
        sqlx::query(
            "UPDATE node_lifetimes SET stopped_seq = ?2, stopped_at = ?3 WHERE boot_id = ?1",
        )
        .bind(boot_id.to_string())
        .bind(seq(*stopped))
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    for l in &c.lifetimes {
        let e = l.start;
        sqlx::query(
            "INSERT INTO node_lifetimes (boot_id, node_id, version, started_seq, started_at, stopped_seq, stopped_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (boot_id) DO NOTHING",
        )
        .bind(e.boot_id.to_string())
        .bind(e.node_id.0 as i64)
        .bind(&e.version)
        .bind(seq(l.seq))
        .bind(l.at)
        .bind(l.stopped.map(|(s, _)| seq(s)))
        .bind(l.stopped.map(|(_, at)| at))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
