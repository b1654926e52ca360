//! The PostgreSQL-backed [`LogStore`]: one log that several nodes append to (tables
//! `log_events`, `log_uids` and `log_batches` of `migrations/postgres/0003_log.sql`).
//!
//! Owns the numbering of every node's batches. A batch is one transaction: it takes the append
//! lock ([`APPEND_LOCK`], a transaction-level advisory lock), reads the log's last seq, numbers
//! the batch after it, inserts it (its events, their uid index rows and the batch's id) and
//! commits; the lock goes with the commit. Promises: seqs are dense and become visible in seq
//! order, so a tailer reading `seq > last` never passes an event that commits later (the trap of
//! a `bigserial` key, whose values are taken before their transactions commit, in any order);
//! a batch whose commit answer was lost is looked up under the lock by its id before it is
//! inserted again, so it is recorded once; an append that fails before its commit leaves
//! nothing behind, and one whose outcome stays unknown says so ([`AppendError::InDoubt`]).
//! Must never:
//! read the last seq in the statement that takes the lock (under READ COMMITTED a statement
//! sees the rows committed when it started, before the lock was granted: it could miss the
//! previous holder's batch), or run a query on the async runtime's worker threads.
//!
//! The trait is synchronous, so the store owns a small runtime of its own whose one worker
//! drives the pool's connections; the caller's thread (the log's writer, or a blocking task)
//! runs each query with [`Handle::block_on`] and waits for it there.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::runtime::{Handle, Runtime};
use tokio::time::Instant;
use uuid::Uuid;

use super::{AppendError, EncodedRecord, Guard, LogError, LogStore};
use crate::domain::Seq;

/// The advisory lock every append holds from the read of the last seq to its commit, in every
/// node. Other writers of the shared log (a node declaring a dead peer's sessions lost) take it
/// too, so that their events join the same order.
pub const APPEND_LOCK: i64 = 0x77_6b_6c_6f_67; // "wklog"

/// The connections of one store: the writer's and a few readers'.
const POOL_SIZE: u32 = 4;

/// How long an append's transaction may sit idle before the database ends it: an append whose
/// node stopped or lost its connection mid-transaction holds the append lock, and every node's
/// appends wait for it until then.
const ABANDONED_APPEND: &str = "5s";

/// How long an append whose commit answer was lost keeps trying to learn its outcome before it
/// tells its appenders it does not know.
const RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// The first pause between two tries of a batch in doubt, doubled after each.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// `BEGIN` and the lock in one round trip (a simple query of three statements); the next
/// statement, with a snapshot taken after the lock was granted, reads the last seq.
fn begin_and_lock() -> String {
    format!(
        "BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{ABANDONED_APPEND}'; \
         SELECT pg_advisory_xact_lock({APPEND_LOCK})"
    )
}

/// Whether the batch is already recorded (an earlier try whose answer was lost), and the last
/// seq.
const READ_HEAD: &str = "SELECT (SELECT first_seq FROM log_batches WHERE batch_id = $1::uuid), \
     (SELECT coalesce(max(seq), 0) FROM log_events)";

/// The whole batch in one statement, with a fixed number of binds whatever its size (arrays).
/// An event that names a uid twice is indexed under it once, as sled's keys do.
const INSERT_BATCH: &str = "WITH events AS ( \
         INSERT INTO log_events (seq, body) SELECT * FROM unnest($1::int8[], $2::bytea[]) \
     ), uids AS ( \
         INSERT INTO log_uids (uid, seq) SELECT * FROM unnest($3::text[], $4::int8[]) \
         ON CONFLICT DO NOTHING \
     ) \
     INSERT INTO log_batches (batch_id, first_seq, last_seq) VALUES ($5::uuid, $6, $7)";

/// The first guard that does not hold: a uid with an event recorded after the seq its decision
/// was made at.
const BROKEN_GUARD: &str = "SELECT g.uid FROM unnest($1::text[], $2::int8[]) AS g(uid, after) \
     WHERE EXISTS (SELECT 1 FROM log_uids l WHERE l.uid = g.uid AND l.seq > g.after) LIMIT 1";

pub struct PostgresStore {
    /// Taken out at drop, to be shut down without blocking (a store may be dropped on the async
    /// runtime, where a blocking shutdown is refused).
    runtime: Option<Runtime>,
    handle: Handle,
    pool: PgPool,
}

/// What a store does with the database's schema when it connects.
enum Schema {
    /// Brings it up to date (a node).
    Migrate,
    /// Requires it up to date and changes nothing (an operator command).
    Existing,
}

/// How one try of an append ended, when it did not record the batch.
enum TryError {
    /// The transaction did not commit: nothing of the batch is in the log.
    NotRecorded(sqlx::Error),
    /// A guard did not hold (another node recorded an event of this uid since): nothing of
    /// the batch is in the log.
    Conflict(crate::domain::Uid),
    /// The commit was sent and its answer lost: the batch may be in the log.
    Unknown(sqlx::Error),
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its schema up to date (the one migrator of
    /// `migrations/postgres`). Blocks: call it from a blocking task.
    pub fn connect(url: &str) -> Result<Self, LogError> {
        Self::open(url, Schema::Migrate)
    }

    /// Connects to the database at `url`, whose schema must already be this build's (see
    /// [`crate::postgres::connect_existing`]): for the operator commands, which must not
    /// create or migrate a shared database. Blocks: call it from a blocking task.
    pub fn connect_existing(url: &str) -> Result<Self, LogError> {
        Self::open(url, Schema::Existing)
    }

    fn open(url: &str, schema: Schema) -> Result<Self, LogError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wkuser-pg-log")
            .enable_all()
            .build()
            .map_err(LogError::storage)?;
        let handle = runtime.handle().clone();
        let connecting = async {
            match schema {
                Schema::Migrate => crate::postgres::connect(url, POOL_SIZE).await,
                Schema::Existing => crate::postgres::connect_existing(url, POOL_SIZE).await,
            }
        };
        let pool = wait_on(&handle, connecting)
            .map_err(|e| LogError::storage(format_args!("cannot open the shared log: {e}")))?;
        Ok(PostgresStore {
            runtime: Some(runtime),
            handle,
            pool,
        })
    }

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

    fn wait<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        wait_on(&self.handle, future)
    }

    /// One try: under the lock, the batch found recorded, or numbered after the last seq and
    /// inserted. Returns the batch's first seq.
    async fn try_append(
        pool: &PgPool,
        batch_id: Uuid,
        batch: &[EncodedRecord],
        guards: &[Guard],
    ) -> Result<i64, TryError> {
        let mut tx = pool
            .begin_with(begin_and_lock())
            .await
            .map_err(TryError::NotRecorded)?;
        let head = sqlx::query(READ_HEAD)
            .bind(batch_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(TryError::NotRecorded)?;
        let recorded: Option<i64> = head.get(0);
        if let Some(first) = recorded {
            return Ok(first);
        }
        if !guards.is_empty() {
            let uids: Vec<&str> = guards.iter().map(|g| g.uid.as_str()).collect();
            let after: Vec<i64> = guards.iter().map(|g| g.after.0 as i64).collect();
            let broken: Option<String> = sqlx::query_scalar(BROKEN_GUARD)
                .bind(&uids)
                .bind(&after)
                .fetch_optional(&mut *tx)
                .await
                .map_err(TryError::NotRecorded)?;
            if let Some(uid) = broken {
                let uid = crate::domain::Uid::parse(&uid)
                    .map_err(|e| TryError::NotRecorded(sqlx::Error::Decode(Box::new(e))))?;
                return Err(TryError::Conflict(uid));
            }
        }
        let last: i64 = head.get(1);
        let first = last + 1;
        let count = i64::try_from(batch.len()).expect("a batch fits in i64");
        let seqs: Vec<i64> = (first..first + count).collect();
        let bodies: Vec<&[u8]> = batch.iter().map(|r| r.bytes.as_slice()).collect();
        let (mut uids, mut uid_seqs) = (Vec::new(), Vec::new());
        for (r, seq) in batch.iter().zip(&seqs) {
            for uid in &r.uids {
                uids.push(uid.as_str());
                uid_seqs.push(*seq);
            }
        }
        sqlx::query(INSERT_BATCH)
            .bind(&seqs)
            .bind(&bodies)
            .bind(&uids)
            .bind(&uid_seqs)
            .bind(batch_id.to_string())
            .bind(first)
            .bind(first + count - 1)
            .execute(&mut *tx)
            .await
            .map_err(TryError::NotRecorded)?;
        tx.commit().await.map_err(|e| match e {
            // The database answered: it refused the commit, so nothing was recorded.
            sqlx::Error::Database(_) => TryError::NotRecorded(e),
            // No answer (the connection failed on the way): it may have committed.
            other => TryError::Unknown(other),
        })?;
        Ok(first)
    }

    /// Tries the batch until it is recorded, found recorded, or (once its outcome is in doubt)
    /// [`RESOLVE_LIMIT`] has passed. A try that fails before its commit is sent recorded
    /// nothing, and is answered at once.
    async fn append_batch(
        pool: &PgPool,
        batch_id: Uuid,
        batch: &[EncodedRecord],
        guards: &[Guard],
    ) -> Result<i64, AppendError> {
        let mut in_doubt_since: Option<Instant> = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let why = match Self::try_append(pool, batch_id, batch, guards).await {
                Ok(first) => {
                    if in_doubt_since.is_some() {
                        tracing::info!(batch = %batch_id, first_seq = first,
                            "a batch whose commit answer was lost is recorded once");
                    }
                    return Ok(first);
                }
                Err(TryError::NotRecorded(e)) if in_doubt_since.is_none() => {
                    return Err(AppendError::Failed(db_error(e)));
                }
                // Checked after the lookup by batch id: a batch found recorded is not in
                // conflict with itself.
                Err(TryError::Conflict(uid)) => return Err(AppendError::Conflict(uid)),
                Err(TryError::NotRecorded(e) | TryError::Unknown(e)) => e,
            };
            let since = *in_doubt_since.get_or_insert_with(Instant::now);
            if since.elapsed() + pause > RESOLVE_LIMIT {
                tracing::error!(batch = %batch_id, error = %why,
                    "cannot learn whether a batch was recorded: it is in the log once or not at all");
                return Err(AppendError::InDoubt(LogError::InDoubt(
                    why.to_string().into(),
                )));
            }
            tracing::warn!(batch = %batch_id, error = %why,
                "the answer to an append's commit was lost; looking the batch up before trying again");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

/// A database error as the log reports it: unavailable when the database cannot be reached
/// (the caller may retry later), a storage failure otherwise.
fn db_error(e: sqlx::Error) -> LogError {
    if crate::view::sql_is_unavailable(&e) {
        LogError::Unavailable(e.to_string().into())
    } else {
        LogError::storage(e)
    }
}

/// Runs `future` to completion on the calling thread, its connections driven by `handle`'s
/// runtime. Called from a thread of an async runtime (a caller that skipped the blocking task),
/// where blocking in place is refused, it waits on a thread of its own instead.
fn wait_on<F>(handle: &Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if Handle::try_current().is_err() {
        return handle.block_on(future);
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| handle.block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn to_seq(value: i64) -> Result<Seq, LogError> {
    u64::try_from(value)
        .map(Seq)
        .map_err(|_| LogError::storage(format_args!("negative seq {value} in the shared log")))
}

fn to_i64(seq: Seq) -> Result<i64, LogError> {
    i64::try_from(seq.0).map_err(|_| LogError::storage(format_args!("seq {seq} out of range")))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn rows_to_events(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
    rows.into_iter()
        .map(|row| Ok((to_seq(row.get(0))?, row.get(1))))
        .collect()
}

impl LogStore for PostgresStore {
    /// A read sees committed events only, and a committed event is durable.
    fn reads_may_run_ahead(&self) -> bool {
        false
    }

    fn last_seq(&self) -> Result<Seq, LogError> {
        let last: i64 = self
            .wait(
                sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM log_events")
                    .fetch_one(&self.pool),
            )
            .map_err(db_error)?;
        to_seq(last)
    }

    fn append(&self, batch_id: Uuid, batch: &mut [EncodedRecord]) -> Result<(), AppendError> {
        self.append_guarded(batch_id, batch, &[])
    }

    fn append_guarded(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
    ) -> Result<(), AppendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let first = self.wait(Self::append_batch(&self.pool, batch_id, batch, guards))?;
        let first = to_seq(first).map_err(AppendError::Failed)?;
        for (r, seq) in batch.iter_mut().zip(first.0..) {
            r.seq = Seq(seq);
        }
        Ok(())
    }

    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let rows = self
            .wait(
                sqlx::query(
                    "SELECT seq, body FROM log_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(to_i64(after)?)
                .bind(limit_i64(limit))
                .fetch_all(&self.pool),
            )
            .map_err(db_error)?;
        rows_to_events(rows)
    }

    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let rows = self
            .wait(
                sqlx::query(
                    "SELECT e.seq, e.body FROM log_uids u JOIN log_events e ON e.seq = u.seq \
                     WHERE u.uid = $1 AND u.seq > $2 ORDER BY u.seq LIMIT $3",
                )
                .bind(uid)
                .bind(to_i64(after)?)
                .bind(limit_i64(limit))
                .fetch_all(&self.pool),
            )
            .map_err(db_error)?;
        rows_to_events(rows)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closes the connections politely (bounded: a database out of reach must not hold the
        // drop), then lets the runtime go without waiting for it.
        let pool = self.pool.clone();
        let _ = self
            .wait(async move { tokio::time::timeout(Duration::from_secs(1), pool.close()).await });
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
