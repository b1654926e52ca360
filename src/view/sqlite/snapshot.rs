//! The view's current state as rows, read from a view and written into a fresh one: what the
//! log keeps at an archive boundary ([`crate::archive`]) so that a view can be started there.
//!
//! Owns the [`StateRows`]: every row of `users`, `tokens`, `system_uids` and `last_seen`, and
//! the rows of `device_sessions` and `node_lifetimes` still open, each in the view dump's text
//! form (the columns as SQLite's `quote()` writes them). Promises: a view seeded with the rows
//! read from another view at checkpoint S, then fed the events after S, holds the same rows as
//! that other view fed the same events, except the sessions and lifetimes that ended by S (the
//! history, which is in the archives). Must never: seed a view that has applied events, or
//! seed from rows that did not come from [`SqliteView::state_rows`] (they are read back as SQL
//! literals: the rows are the log's own boundary record, never an operator's input).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::SqliteView;
use crate::domain::Seq;
use crate::view::ViewError;

/// Each table the state is kept from: its name, its columns in the dump's order, the select
/// that writes a row as the dump does, and which rows are state (the rest is history).
const TABLES: &[(&str, &str, &str, &str)] = &[
    (
        "users",
        "uid, created_seq, created_at",
        "quote(uid)||','||created_seq||','||created_at",
        "",
    ),
    (
        "tokens",
        "uid, device_flag, device_level, token_hash, updated_seq, updated_at",
        "quote(uid)||','||device_flag||','||device_level||','||quote(token_hash)||','||updated_seq||','||updated_at",
        "",
    ),
    (
        "device_sessions",
        "session_id, uid, device_flag, device_level, device_id, node_id, peer, connected_seq, \
         connected_at, disconnected_seq, disconnected_at, reason",
        "quote(session_id)||','||quote(uid)||','||device_flag||','||device_level||','||quote(device_id)||','||node_id||','||quote(peer)\
         ||','||connected_seq||','||connected_at||','||quote(disconnected_seq)||','||quote(disconnected_at)||','||quote(reason)",
        "WHERE disconnected_seq IS NULL",
    ),
    (
        "system_uids",
        "uid, added_seq",
        "quote(uid)||','||added_seq",
        "",
    ),
    (
        "node_lifetimes",
        "boot_id, node_id, version, started_seq, started_at, stopped_seq, stopped_at",
        "quote(boot_id)||','||node_id||','||quote(version)||','||started_seq||','||started_at||','||quote(stopped_seq)||','||quote(stopped_at)",
        "WHERE stopped_seq IS NULL",
    ),
    (
        "last_seen",
        "uid, device_flag, seen_seq, seen_at",
        "quote(uid)||','||device_flag||','||seen_seq||','||seen_at",
        "",
    ),
];

/// Rows per insert statement when seeding.
const ROWS_PER_INSERT: usize = 256;

/// The view's state rows as of `checkpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRows {
    pub checkpoint: Seq,
    /// `(table, rows)`, in the order of [`TABLES`].
    pub tables: Vec<(String, Vec<String>)>,
}

impl StateRows {
    /// How many rows of each table, for a person: `users 3, tokens 4, ...`.
    pub fn summary(&self) -> String {
        self.tables
            .iter()
            .map(|(t, rows)| format!("{t} {}", rows.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl SqliteView {
    /// The state rows at the view's checkpoint, read in one snapshot.
    pub async fn state_rows(&self) -> Result<StateRows, ViewError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = super::read_checkpoint(&mut tx).await?;
        let mut tables = Vec::with_capacity(TABLES.len());
        for (table, _, select, filter) in TABLES {
            let query = format!("SELECT {select} FROM {table} {filter} ORDER BY rowid");
            let rows: Vec<String> = sqlx::query(&query)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tables.push((table.to_string(), rows));
        }
        tx.commit().await?;
        Ok(StateRows { checkpoint, tables })
    }

    /// Writes `state` into this view, which must be empty (checkpoint 0), and moves its
    /// checkpoint to the state's, in one transaction.
    pub async fn seed(&self, state: &StateRows) -> Result<(), ViewError> {
        let mut tx = self.pool.begin().await?;
        let at = super::read_checkpoint(&mut tx).await?;
        if at != Seq(0) {
            return Err(ViewError::Malformed(format!(
                "a view at seq {at} cannot be seeded with the state at seq {}",
                state.checkpoint
            )));
        }
        for (table, rows) in &state.tables {
            let Some((_, columns, _, _)) = TABLES.iter().find(|(t, ..)| *t == table.as_str())
            else {
                return Err(ViewError::Malformed(format!(
                    "a boundary snapshot names the unknown table {table:?}"
                )));
            };
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let values = chunk
                    .iter()
                    .map(|row| format!("({row})"))
                    .collect::<Vec<_>>()
                    .join(",");
                sqlx::query(&format!("INSERT INTO {table} ({columns}) VALUES {values}"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("UPDATE projector_checkpoint SET last_seq = ?1 WHERE id = 1")
            .bind(state.checkpoint.0 as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
