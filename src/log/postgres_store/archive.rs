//! The shared log's side of `wkuser archive --database-url`: its boundary record (table
//! `log_boundary`, `migrations/postgres/0007_log_boundary.sql`), the drop of an archived range,
//! and what an archive run must know first (live nodes, the webhook's cursor, sizes on disk).
//!
//! Promises: the archived range is deleted and the new boundary written in one transaction,
//! under the append lock, and only if the boundary is still the one the run started from and
//! no node is alive: both or neither. Must never: run while a node appends (its batches would
//! interleave with the range being dropped), or delete an event after the new boundary.

use sqlx::Row;

use super::{db_error, to_i64, PostgresStore, APPEND_LOCK};
use crate::domain::Seq;
use crate::log::LogError;

/// The log's tables, whose sizes an archive reports and which it compacts.
const LOG_TABLES: &[&str] = &["log_events", "log_uids", "log_batches"];

impl PostgresStore {
    pub(super) fn read_boundary(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.wait(
            sqlx::query_scalar("SELECT body FROM log_boundary WHERE id = 1")
                .fetch_optional(&self.pool),
        )
        .map_err(db_error)
    }

    /// The nodes whose lease has not run out and that did not stop cleanly.
    pub fn live_nodes(&self) -> Result<Vec<i64>, LogError> {
        self.wait(
            sqlx::query_scalar(
                "SELECT node_id FROM nodes WHERE NOT stopped AND lease_expires_at > now() \
                 ORDER BY node_id",
            )
            .fetch_all(&self.pool),
        )
        .map_err(db_error)
    }

    /// The last seq the webhook delivered, `None` when it never ran on this database.
    pub fn webhook_delivered(&self) -> Result<Option<Seq>, LogError> {
        let delivered: Option<i64> = self
            .wait(
                sqlx::query_scalar("SELECT delivered FROM webhook_cursor WHERE id = 1")
                    .fetch_optional(&self.pool),
            )
            .map_err(db_error)?;
        Ok(delivered.map(|d| Seq(d.max(0) as u64)))
    }

    /// The bytes on disk of the log's tables, their indexes and TOAST included.
    pub fn log_bytes(&self) -> Result<u64, LogError> {
        let mut total = 0u64;
        for table in LOG_TABLES {
            let bytes: i64 = self
                .wait(
                    sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
                        .bind(*table)
                        .fetch_one(&self.pool),
                )
                .map_err(db_error)?;
            total += bytes.max(0) as u64;
        }
        Ok(total)
    }

    /// Deletes the events up to `upto` with their index rows and batch ids, and records
    /// `record` as the boundary at `upto`, in one transaction; refused when the boundary is no
    /// longer at `previous` (another archive ran meanwhile) or a node is alive.
    pub fn drop_archived(&self, previous: Seq, upto: Seq, record: &[u8]) -> Result<(), LogError> {
        let upto_i = to_i64(upto)?;
        let previous_i = to_i64(previous)?;
        let pool = &self.pool;
        self.wait(async move {
            let mut tx = pool.begin().await.map_err(db_error)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(APPEND_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            let row = sqlx::query(
                "SELECT (SELECT coalesce(max(seq), 0) FROM log_boundary), \
                 (SELECT count(*) FROM nodes WHERE NOT stopped AND lease_expires_at > now()), \
                 (SELECT coalesce(max(seq), 0) FROM log_events)",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let (at, alive, last): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if at != previous_i {
                return Err(LogError::storage(format_args!(
                    "the shared log's boundary moved to seq {at} during this archive: run it again"
                )));
            }
            if alive > 0 {
                return Err(LogError::storage(
                    "a node started on the shared database during this archive: stop every node, and run it again",
                ));
            }
            if upto_i >= last {
                return Err(LogError::storage(
                    "the live log must keep its last event: nothing was archived",
                ));
            }
            for statement in [
                "DELETE FROM log_uids WHERE seq <= $1",
                "DELETE FROM log_events WHERE seq <= $1",
                "DELETE FROM log_batches WHERE last_seq <= $1",
            ] {
                sqlx::query(statement)
                    .bind(upto_i)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            sqlx::query(
                "INSERT INTO log_boundary (id, seq, body) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
            )
            .bind(upto_i)
            .bind(record)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }

    /// Gives the space of the dropped range back to the file system: `VACUUM FULL` rewrites
    /// each log table (it locks them; the nodes are stopped).
    pub fn compact_log(&self) -> Result<(), LogError> {
        for table in LOG_TABLES {
            // The simple protocol: VACUUM runs outside any transaction, and is not prepared.
            self.wait(sqlx::raw_sql(&format!("VACUUM FULL {table}")).execute(&self.pool))
                .map_err(db_error)?;
        }
        Ok(())
    }
}
