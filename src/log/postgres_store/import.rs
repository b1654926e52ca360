//! The shared log's side of `wkuser migrate-to-postgres`: how far a move has come, and each
//! batch of a single node's log recorded with the seqs it carries.
//!
//! Promises: an imported batch follows the log's last seq exactly, under the append lock, so
//! the moved log stays dense from 1; nothing is imported once a node has started on the
//! database. Must never: number a batch itself (the seqs are the moved log's), or import
//! into a log a node appends to.

use uuid::Uuid;

use super::{db_error, to_i64, to_seq, PostgresStore, APPEND_LOCK};
use crate::domain::Seq;
use crate::log::{EncodedRecord, LogError};

/// How long an import's transaction may sit idle before the database ends it: a move that
/// stopped or lost its connection mid-transaction holds the append lock, and every other writer
/// waits for it until then.
const ABANDONED_APPEND: &str = "5s";

/// `BEGIN` and the lock in one round trip (a simple query of three statements); the next
/// statement, with a snapshot taken after the lock was granted, reads the last seq.
fn begin_and_lock() -> String {
    format!(
        "BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{ABANDONED_APPEND}'; \
         SELECT pg_advisory_xact_lock({APPEND_LOCK})"
    )
}

/// The whole batch in one statement, with a fixed number of binds whatever its size (arrays).
/// An event that names a uid twice is indexed under it once, as sled's keys do.
const INSERT_BATCH: &str = "WITH events AS ( \
         INSERT INTO log_events (seq, body) SELECT * FROM unnest($1::int8[], $2::bytea[]) \
     ), uids AS ( \
         INSERT INTO log_uids (uid, seq) SELECT * FROM unnest($3::text[], $4::int8[]) \
         ON CONFLICT DO NOTHING \
     ) \
     INSERT INTO log_batches (batch_id, first_seq, last_seq) VALUES ($5::uuid, $6, $7)";

impl PostgresStore {
    /// For `wkuser migrate-to-postgres`: how far a migration has moved a log into this
    /// database, or `None` once a node has ever started on it (its history is then its own,
    /// and nothing may be moved into it). `Some(0)` is an empty database.
    pub fn moved_so_far(&self) -> Result<Option<Seq>, LogError> {
        let (nodes, last): (bool, i64) = self
            .wait(
                sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM nodes), \
                     (SELECT coalesce(max(seq), 0) FROM log_events)",
                )
                .fetch_one(&self.pool),
            )
            .map_err(db_error)?;
        if nodes {
            return Ok(None);
        }
        to_seq(last).map(Some)
    }

    /// For `wkuser migrate-to-postgres` only: records `batch` with the seqs it carries (a
    /// single node's log, moved as it is), where [`LogStore::append`] numbers a batch itself.
    /// Under the append lock, the batch must follow the log's last seq exactly, so that the
    /// moved log stays dense from 1; `batch_id` names it in `log_batches` as an append's
    /// first event does. Refused once a node has started on the database: its appends would
    /// interleave with the moved history.
    pub fn import(&self, batch_id: Uuid, batch: &[EncodedRecord]) -> Result<(), LogError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let first = to_i64(first.seq)?;
        let seqs: Vec<i64> = batch
            .iter()
            .map(|r| to_i64(r.seq))
            .collect::<Result<_, _>>()?;
        if seqs.iter().zip(first..).any(|(s, want)| *s != want) {
            return Err(LogError::storage(
                "an imported batch must hold consecutive seqs",
            ));
        }
        let last = first + seqs.len() as i64 - 1;
        let bodies: Vec<&[u8]> = batch.iter().map(|r| r.bytes.as_slice()).collect();
        let (mut uids, mut uid_seqs) = (Vec::new(), Vec::new());
        for (r, seq) in batch.iter().zip(&seqs) {
            for uid in &r.uids {
                uids.push(uid.as_str());
                uid_seqs.push(*seq);
            }
        }
        let pool = &self.pool;
        self.wait(async move {
            let mut tx = pool.begin_with(begin_and_lock()).await.map_err(db_error)?;
            let (head, nodes): (i64, bool) = sqlx::query_as(
                "SELECT (SELECT coalesce(max(seq), 0) FROM log_events), \
                 EXISTS (SELECT 1 FROM nodes)",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if nodes {
                return Err(LogError::storage(
                    "a node started on the shared database during the move: stop it, and move into an empty database",
                ));
            }
            if head + 1 != first {
                return Err(LogError::storage(format_args!(
                    "the shared log ends at seq {head}: an imported batch from seq {first} would not follow it"
                )));
            }
            sqlx::query(INSERT_BATCH)
                .bind(&seqs)
                .bind(&bodies)
                .bind(&uids)
                .bind(&uid_seqs)
                .bind(batch_id.to_string())
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }
}
