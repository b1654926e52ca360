//! Writing a batch of events into the PostgreSQL view.
//!
//! Owns the statements that carry a batch's [`RowChanges`] into the tables, and the checkpoint
//! that accounts for them. Each kind of change is one statement whatever the batch's size: its
//! rows travel as one array per column, unnested by the server, so a statement has a fixed
//! handful of binds (far under PostgreSQL's limit of 65,535), is prepared once per connection,
//! and costs one round trip. Promises: the rows and the checkpoint are written in the caller's
//! transaction; the checkpoint's row is locked first, so concurrent writers take turns, and
//! events at or below the checkpoint are skipped, so a batch applied twice (or by two nodes)
//! changes nothing. Must never: interpret an event itself (that is [`crate::view::rows`]'s
//! job).

use sqlx::postgres::PgConnection;

use super::seq;
use crate::domain::*;
use crate::view::columns::no_checkpoint;
use crate::view::rows::RowChanges;
use crate::view::ViewError;

/// Applies the events of `batch` after the view's checkpoint and moves the checkpoint to the
/// last of them, inside the transaction `tx` belongs to (a node may write the view in the
/// transaction that appends the events). Until that transaction ends, other writers of the
/// view wait for its checkpoint's row.
pub async fn apply_in(tx: &mut PgConnection, batch: &[RecordedEvent]) -> Result<(), ViewError> {
    if batch.is_empty() {
        return Ok(());
    }
    // FOR UPDATE: a second writer waits here until this transaction ends, then reads the
    // checkpoint it committed, and skips what it already applied.
    let done: i64 =
        sqlx::query_scalar("SELECT last_seq FROM projector_checkpoint WHERE id = 1 FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(no_checkpoint)?;
    let changes = RowChanges::of(batch, Seq(done.max(0) as u64));
    let Some(last) = changes.last else {
        return Ok(());
    };
    write(tx, &changes).await?;
    sqlx::query("UPDATE projector_checkpoint SET last_seq = $1 WHERE id = 1 AND last_seq < $1")
        .bind(seq(last))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Writes the changes in the order [`RowChanges`] documents.
async fn write(tx: &mut PgConnection, c: &RowChanges<'_>) -> Result<(), sqlx::Error> {
    if !c.users.is_empty() {
        sqlx::query(
            "INSERT INTO users (uid, created_seq, created_at) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (uid) DO NOTHING",
        )
        .bind(c.users.iter().map(|u| u.uid.as_str()).collect::<Vec<_>>())
        .bind(c.users.iter().map(|u| seq(u.seq)).collect::<Vec<_>>())
        .bind(c.users.iter().map(|u| u.at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.token_clears.is_empty() {
        // Each token row that holds a hash is cleared by the first quit of the batch that
        // covers it: a later one finds it cleared already, as one-by-one it would.
        sqlx::query(
            "UPDATE tokens t SET token_hash = NULL, updated_seq = c.seq, updated_at = c.at \
             FROM (SELECT DISTINCT ON (k.uid, k.device_flag) k.uid, k.device_flag, q.seq, q.at \
                   FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS q(uid, scope, seq, at) \
                   JOIN tokens k ON k.uid = q.uid AND (q.scope = -1 OR k.device_flag = q.scope) \
                   WHERE k.token_hash IS NOT NULL \
                   ORDER BY k.uid, k.device_flag, q.seq) c \
             WHERE t.uid = c.uid AND t.device_flag = c.device_flag",
        )
        .bind(c.token_clears.iter().map(|q| q.uid.as_str()).collect::<Vec<_>>())
        .bind(
            c.token_clears
                .iter()
                .map(|q| match q.scope {
                    QuitScope::All => -1,
                    QuitScope::One(f) => i64::from(f.0),
                })
                .collect::<Vec<_>>(),
        )
        .bind(c.token_clears.iter().map(|q| seq(q.seq)).collect::<Vec<_>>())
        .bind(c.token_clears.iter().map(|q| q.at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.tokens.is_empty() {
        sqlx::query(
            "INSERT INTO tokens (uid, device_flag, device_level, token_hash, updated_seq, updated_at) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[]) \
             ON CONFLICT (uid, device_flag) DO UPDATE SET device_level = excluded.device_level, \
             token_hash = excluded.token_hash, updated_seq = excluded.updated_seq, updated_at = excluded.updated_at",
        )
        .bind(c.tokens.iter().map(|t| t.uid.as_str()).collect::<Vec<_>>())
        .bind(c.tokens.iter().map(|t| i64::from(t.flag.0)).collect::<Vec<_>>())
        .bind(c.tokens.iter().map(|t| i64::from(t.level.as_u8())).collect::<Vec<_>>())
        .bind(c.tokens.iter().map(|t| t.hash.map(|h| h.to_hex())).collect::<Vec<_>>())
        .bind(c.tokens.iter().map(|t| seq(t.seq)).collect::<Vec<_>>())
        .bind(c.tokens.iter().map(|t| t.at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.sessions.is_empty() {
        let s = &c.sessions;
        sqlx::query(
            "INSERT INTO device_sessions (session_id, uid, device_flag, device_level, device_id, node_id, peer, \
             connected_seq, connected_at, disconnected_seq, disconnected_at, reason) \
             SELECT * FROM UNNEST($1::text[]::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], \
             $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[]) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(s.iter().map(|s| s.connected.session_id.to_string()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.connected.uid.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| i64::from(s.connected.device_flag.0)).collect::<Vec<_>>())
        .bind(s.iter().map(|s| i64::from(s.connected.device_level.as_u8())).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.connected.device_id.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.connected.node_id.0 as i64).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.connected.peer.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| seq(s.seq)).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.at).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.ended.map(|e| seq(e.seq))).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.ended.map(|e| e.at)).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.ended.map(|e| e.reason.as_str())).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.session_ends.is_empty() {
        // One end per session: [`RowChanges`] keeps only the first.
        let ends = &c.session_ends;
        sqlx::query(
            "UPDATE device_sessions d SET disconnected_seq = e.seq, disconnected_at = e.at, reason = e.reason \
             FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[], $4::text[]) AS e(session_id, seq, at, reason) \
             WHERE d.session_id = e.session_id AND d.disconnected_seq IS NULL",
        )
        .bind(ends.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>())
        .bind(ends.iter().map(|(_, e)| seq(e.seq)).collect::<Vec<_>>())
        .bind(ends.iter().map(|(_, e)| e.at).collect::<Vec<_>>())
        .bind(ends.iter().map(|(_, e)| e.reason.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.last_seen.is_empty() {
        let rows = &c.last_seen;
        sqlx::query(
            "INSERT INTO last_seen (uid, device_flag, seen_seq, seen_at) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (uid, device_flag) DO UPDATE SET seen_seq = excluded.seen_seq, \
             seen_at = excluded.seen_at WHERE excluded.seen_seq > last_seen.seen_seq",
        )
        .bind(rows.keys().map(|(uid, _)| uid.as_str()).collect::<Vec<_>>())
        .bind(rows.keys().map(|(_, f)| i64::from(f.0)).collect::<Vec<_>>())
        .bind(rows.values().map(|(s, _)| seq(*s)).collect::<Vec<_>>())
        .bind(rows.values().map(|(_, at)| *at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    // Each uid is deleted, then inserted: the two statements touch each uid in that order.
    let removed: Vec<&str> = (c.system_uids.iter())
        .filter(|(_, change)| change.removed)
        .map(|(uid, _)| uid.as_str())
        .collect();
    if !removed.is_empty() {
        sqlx::query("DELETE FROM system_uids WHERE uid = ANY($1::text[])")
            .bind(removed)
            .execute(&mut *tx)
            .await?;
    }
    let added: Vec<(&str, i64)> = (c.system_uids.iter())
        .filter_map(|(uid, change)| Some((uid.as_str(), seq(change.added?))))
        .collect();
    if !added.is_empty() {
        sqlx::query(
            "INSERT INTO system_uids (uid, added_seq) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT (uid) DO NOTHING",
        )
        .bind(added.iter().map(|(uid, _)| *uid).collect::<Vec<_>>())
        .bind(added.iter().map(|(_, s)| *s).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.lifetime_stops.is_empty() {
        // A lifetime stopped twice keeps its last stop, as one-by-one it would.
        let stops = &c.lifetime_stops;
        sqlx::query(
            "UPDATE node_lifetimes l SET stopped_seq = s.seq, stopped_at = s.at \
             FROM (SELECT DISTINCT ON (boot_id) boot_id, seq, at \
                   FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::bigint[]) AS s(boot_id, seq, at) \
                   ORDER BY boot_id, seq DESC) s \
             WHERE l.boot_id = s.boot_id",
        )
        .bind(stops.iter().map(|(id, _, _)| id.to_string()).collect::<Vec<_>>())
        .bind(stops.iter().map(|(_, s, _)| seq(*s)).collect::<Vec<_>>())
        .bind(stops.iter().map(|(_, _, at)| *at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !c.lifetimes.is_empty() {
        let l = &c.lifetimes;
        sqlx::query(
            "INSERT INTO node_lifetimes (boot_id, node_id, version, started_seq, started_at, stopped_seq, stopped_at) \
             SELECT * FROM UNNEST($1::text[]::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::bigint[]) \
             ON CONFLICT (boot_id) DO NOTHING",
        )
        .bind(l.iter().map(|l| l.start.boot_id.to_string()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.start.node_id.0 as i64).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.start.version.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| seq(l.seq)).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.at).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.stopped.map(|(s, _)| seq(s))).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.stopped.map(|(_, at)| at)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
