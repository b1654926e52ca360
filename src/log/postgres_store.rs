//! The PostgreSQL-backed [`LogStore`]: one log that several nodes append to (tables
//! `log_events`, `log_uids` and `log_batches` of `migrations/postgres/0003_log.sql`).
//!
//! Owns the numbering of every node's batches, and the doorbell that tells a node another one
//! appended. A batch is one statement, a CALL of `wk_log_append_durable`
//! (`migrations/postgres/0009_log_append_durable.sql`), which runs `wk_log_append_after` (0008,
//! the successor of `wk_log_append`) in a transaction of its own: it takes the append lock
//! ([`APPEND_LOCK`], a transaction-level advisory lock), looks the batch up by its id (on a
//! retry), checks the guards, reads the log's last seq, numbers the batch after it, inserts it
//! (its events, their uid index rows and the batch's id), rings the doorbell, and reads the
//! other nodes' events between what this node has seen and its batch (answered with the batch's
//! seq, so that the node publishes its batch without reading them again). The procedure then
//! commits; the lock goes with the commit, and is never held across a round trip to this node.
//! That commit does not wait for the WAL flush: the procedure's second transaction makes the
//! batch durable before the CALL answers, and every read waits for the flush of what it saw
//! ([`durable`]). Promises: seqs are dense and
//! become visible in seq order, so a tailer reading `seq > last` never passes an event that
//! commits later (the trap of a `bigserial` key, whose values are taken before their
//! transactions commit, in any order); a batch whose answer was lost is looked up under the
//! lock by its id before it is inserted again, so it is recorded once; an append that fails
//! leaves nothing behind, and one whose outcome stays unknown says so
//! ([`AppendError::InDoubt`]); a batch whose guards break records nothing and names every uid
//! whose guard broke. Must never: read the last seq with a snapshot taken before the lock was
//! granted (it could miss the previous holder's batch: the function's statements each take a
//! new one, under READ COMMITTED, which it requires), append inside a transaction block (the
//! lock would outlive the statement), or run a query on the async runtime's worker threads.
//!
//! The trait is synchronous, so the store owns a small runtime of its own whose one worker
//! drives the readers' connections and the doorbell's listener; the caller's thread (a
//! blocking task) runs each read with [`Handle::block_on`] and waits for it there. The appends'
//! connection has a runtime of its own, which the appending thread (the log's writer) drives
//! while it waits ([`append_connection`]).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::Row;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

mod append_connection;
mod archive;
mod durable;
mod import;

use super::{doorbell, AppendError, EncodedRecord, Guard, LogError, LogStore};
use crate::domain::Seq;
use append_connection::AppendConnection;

/// The advisory lock every append holds from the read of the last seq to its commit, in every
/// node. Other writers of the shared log (a node declaring a dead peer's sessions lost) take it
/// too, so that their events join the same order.
pub const APPEND_LOCK: i64 = 0x77_6b_6c_6f_67; // "wklog"

/// The readers' connections of one store (the appends have one of their own).
const POOL_SIZE: u32 = 4;

/// A reader's connection used this recently is handed out without the round trip that checks
/// it: under load every read would otherwise cost two. One that died meanwhile fails its read,
/// which its caller tries again (the tail at its next poll).
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How long an append whose commit answer was lost keeps trying to learn its outcome before it
/// tells its appenders it does not know.
const RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// The first pause between two tries of a batch in doubt, doubled after each.
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// One append, whole, in the database, and durable when it answers
/// (`wk_log_append_durable` of `migrations/postgres`): the lock, the lookup by batch id (on a
/// retry, `$8`), the guards, the numbering and the inserts, committed without waiting for the
/// WAL (so the lock goes at once), the read of the other writers' events between `$9` and the
/// batch (at most `$10` of them), and then, in a second transaction of the same CALL, the flush
/// that makes the batch durable. Sent outside any transaction block, as the procedure's COMMIT
/// requires.
const APPEND: &str = "CALL wk_log_append_durable($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
     NULL, NULL, NULL, NULL)";

/// The most events before its batch an append answers: a node that was behind by more reads the
/// rest itself, rather than hold the append lock while they are read. With several nodes busy
/// the gap is a few batches of the others'.
const GAP_LIMIT: i32 = 512;

/// What a recorded append answers: its first seq, and the events of other writers that precede
/// it and follow the seq its node asked after (the first [`GAP_LIMIT`] of them).
type Recorded = (i64, Vec<(Seq, Vec<u8>)>);

pub struct PostgresStore {
    /// Taken out at drop, to be shut down without blocking (a store may be dropped on the async
    /// runtime, where a blocking shutdown is refused).
    runtime: Option<Runtime>,
    handle: Handle,
    /// The readers' connections (the tail, catch-ups, reads of the API).
    pool: PgPool,
    /// The appends' one connection, apart from the readers': an append never waits for a
    /// reader's connection, nor for a pool. A connection that died is found by the append
    /// itself, whose outcome is then looked up by its batch id (see [`TryError::Unknown`]).
    appends: AppendConnection,
    /// For the doorbell's own connection. Holds the password, if the URL has one: never shown.
    url: String,
    /// Names this store's appends in the doorbell, so that it does not wake for its own.
    writer_id: i64,
    doorbell: OnceLock<watch::Receiver<Seq>>,
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
    /// Guards did not hold (another node recorded an event of these uids since): nothing of
    /// the batch is in the log.
    Conflict(Vec<crate::domain::Uid>),
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
        let (pool, appends) = wait_on(&handle, async {
            // Connected (and migrated) once, then the store's own pools on the same options.
            let checked = connecting.await?;
            let options = (*checked.connect_options()).clone();
            checked.close().await;
            let reads = crate::postgres::pool_options(POOL_SIZE)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for < TRUSTED_IDLE {
                            return Ok(true);
                        }
                        sqlx::Connection::ping(conn).await.map(|()| true)
                    })
                })
                .connect_lazy_with(options.clone());
            let appends = AppendConnection::new(options.options([durable::APPENDS_COMMIT]))?;
            Ok::<_, sqlx::Error>((reads, appends))
        })
        .map_err(|e| LogError::storage(format_args!("cannot open the shared log: {e}")))?;
        if matches!(schema, Schema::Migrate) {
            // A role that may not write the flush's WAL record is told now, not at its first
            // append.
            appends
                .block_on(async {
                    let mut lease = appends.lease().await?;
                    sqlx::query(durable::FLUSH).execute(lease.conn()).await
                })
                .map_err(|e| LogError::storage(format_args!("cannot open the shared log: {e}")))?;
        }
        Ok(PostgresStore {
            runtime: Some(runtime),
            handle,
            pool,
            appends,
            url: url.to_owned(),
            // Random: two stores of one node (a restart, a test) must not take each other's
            // rings for their own.
            writer_id: Uuid::now_v7().as_u64_pair().1 as i64,
            doorbell: OnceLock::new(),
        })
    }

    /// Runs a read whose last column is [`durable::MARK`], and answers its rows once the WAL on
    /// disk holds everything they show.
    fn read_durable<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, LogError> {
        let pool = &self.pool;
        self.wait(async move {
            let rows = query.fetch_all(pool).await?;
            let mark: Option<String> = match rows.first() {
                Some(row) => row.try_get(row.len() - 1)?,
                None => None,
            };
            if let Some(at) = mark {
                durable::wait_until_flushed(pool, &at).await?;
            }
            Ok::<_, sqlx::Error>(rows)
        })
        .map_err(db_error)
    }

    fn wait<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        wait_on(&self.handle, future)
    }

    /// One try: one statement, [`APPEND`], which under the lock finds the batch recorded (a
    /// `retry` only: a first try cannot have been), or checks its guards, numbers it after the
    /// last seq and inserts it, and then flushes it. Returns the batch's first seq, and the
    /// events after `after` that precede it, once they are all durable.
    async fn try_append(
        appends: &AppendConnection,
        writer_id: i64,
        batch_id: Uuid,
        batch: &[EncodedRecord],
        guards: &[Guard],
        retry: bool,
        after: Option<i64>,
    ) -> Result<Recorded, TryError> {
        let bodies: Vec<&[u8]> = batch.iter().map(|r| r.bytes.as_slice()).collect();
        let (mut uids, mut uid_events) = (Vec::new(), Vec::new());
        for (r, position) in batch.iter().zip(1i32..) {
            for uid in &r.uids {
                uids.push(uid.as_str());
                uid_events.push(position);
            }
        }
        let guard_uids: Vec<&str> = guards.iter().map(|g| g.uid.as_str()).collect();
        let guard_after: Vec<i64> = guards.iter().map(|g| g.after.0 as i64).collect();
        // Taken apart from the statement: a connection that cannot be had means nothing was
        // sent.
        let mut lease = appends.lease().await.map_err(TryError::NotRecorded)?;
        let tried = Self::send_append(
            lease.conn(),
            writer_id,
            batch_id,
            &bodies,
            (&uids, &uid_events),
            (&guard_uids, &guard_after),
            retry,
            after,
        )
        .await;
        if matches!(tried, Err(TryError::NotRecorded(_) | TryError::Unknown(_))) {
            lease.broken();
        }
        tried
    }

    /// [`APPEND`] on `conn`, its answer read.
    #[allow(clippy::too_many_arguments)]
    async fn send_append(
        conn: &mut sqlx::PgConnection,
        writer_id: i64,
        batch_id: Uuid,
        bodies: &[&[u8]],
        (uids, uid_events): (&[&str], &[i32]),
        (guard_uids, guard_after): (&[&str], &[i64]),
        retry: bool,
        after: Option<i64>,
    ) -> Result<Recorded, TryError> {
        let row = sqlx::query(APPEND)
            .bind(batch_id.to_string())
            .bind(bodies)
            .bind(uids)
            .bind(uid_events)
            .bind(guard_uids)
            .bind(guard_after)
            .bind(writer_id)
            .bind(retry)
            .bind(after)
            .bind(GAP_LIMIT)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                if statement_surely_failed(&e) {
                    TryError::NotRecorded(e)
                } else {
                    // No answer, or one that does not say the statement failed: it may have
                    // committed.
                    TryError::Unknown(e)
                }
            })?;
        let first: Option<i64> = row.get(0);
        let conflicts: Option<Vec<String>> = row.get(1);
        match (first, conflicts) {
            (Some(first), _) => {
                let seqs: Option<Vec<i64>> = row.get(2);
                let bodies: Option<Vec<Vec<u8>>> = row.get(3);
                // The batch is recorded whatever the gap holds: a seq out of range (the table
                // refuses them) ends the gap there, and the caller's own read reports it.
                let gap = seqs
                    .unwrap_or_default()
                    .into_iter()
                    .zip(bodies.unwrap_or_default())
                    .map_while(|(seq, body)| Some((to_seq(seq).ok()?, body)))
                    .collect();
                Ok((first, gap))
            }
            (None, Some(uids)) if !uids.is_empty() => Err(TryError::Conflict(
                uids.iter()
                    .map(|uid| crate::domain::Uid::parse(uid))
                    .collect::<Result<_, _>>()
                    .map_err(|e| TryError::NotRecorded(sqlx::Error::Decode(Box::new(e))))?,
            )),
            (None, _) => Err(TryError::NotRecorded(sqlx::Error::Protocol(
                "wk_log_append_after answered neither a seq nor a conflict".into(),
            ))),
        }
    }

    /// Tries the batch until it is recorded, found recorded, or (once its outcome is in doubt)
    /// [`RESOLVE_LIMIT`] has passed. A try that fails before its commit is sent recorded
    /// nothing, and is answered at once.
    async fn append_batch(
        appends: &AppendConnection,
        writer_id: i64,
        batch_id: Uuid,
        batch: &[EncodedRecord],
        guards: &[Guard],
        after: Option<i64>,
    ) -> Result<Recorded, AppendError> {
        let mut in_doubt_since: Option<Instant> = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let retry = in_doubt_since.is_some();
            let tried =
                Self::try_append(appends, writer_id, batch_id, batch, guards, retry, after).await;
            let why = match tried {
                Ok((first, gap)) => {
                    if in_doubt_since.is_some() {
                        tracing::info!(batch = %batch_id, first_seq = first,
                            "a batch whose commit answer was lost is recorded once");
                    }
                    return Ok((first, gap));
                }
                Err(TryError::NotRecorded(e)) if in_doubt_since.is_none() => {
                    return Err(AppendError::Failed(db_error(e)));
                }
                // Checked after the lookup by batch id: a batch found recorded is not in
                // conflict with itself.
                Err(TryError::Conflict(uids)) => return Err(AppendError::Conflict(uids)),
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

/// Whether an error to [`APPEND`] says its statement failed, and so its batch did not commit:
/// an error the database answered in the statement's course. Not so an error of the connection
/// (the answer lost), nor one of the classes a server sends when it ends a session or fails in
/// itself, which may come after the commit; the procedure raises an error after its commit (its
/// flush failing) in class 58 for that reason.
fn statement_surely_failed(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let class = db.code().map(|c| c.chars().take(2).collect::<String>());
    // 08 connection exception, 53 insufficient resources, 57 operator intervention (a shutdown,
    // a terminated backend), 58 system error, XX internal error.
    !matches!(
        class.as_deref(),
        None | Some("08" | "53" | "57" | "58" | "XX")
    )
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
/// runtime.
fn wait_on<F>(handle: &Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    blocking_here(|| handle.block_on(future))
}

/// Runs `wait` (which blocks until a future is done) on the calling thread; called from a
/// thread of an async runtime (a caller that skipped the blocking task), where blocking in place
/// is refused, on a thread of its own instead.
fn blocking_here<R: Send>(wait: impl FnOnce() -> R + Send) -> R {
    if Handle::try_current().is_err() {
        return wait();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(wait)
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

    fn doorbell(&self) -> Option<watch::Receiver<Seq>> {
        let ring = self.doorbell.get_or_init(|| {
            let (tx, rx) = watch::channel(Seq(0));
            self.handle
                .spawn(doorbell::listen(self.url.clone(), self.writer_id, tx));
            rx
        });
        Some(ring.clone())
    }

    fn last_seq(&self) -> Result<Seq, LogError> {
        let query = format!(
            "SELECT coalesce(max(seq), 0), {} FROM log_events",
            durable::MARK
        );
        let rows = self.read_durable(sqlx::query(&query))?;
        let last: i64 = rows.first().map_or(0, |row| row.get(0));
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
        self.append_after(batch_id, batch, guards, None).map(|_| ())
    }

    fn append_after(
        &self,
        batch_id: Uuid,
        batch: &mut [EncodedRecord],
        guards: &[Guard],
        after: Option<Seq>,
    ) -> Result<Vec<(Seq, Vec<u8>)>, AppendError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let after = after.map(to_i64).transpose().map_err(AppendError::Failed)?;
        let (first, gap) = self.appends.block_on(Self::append_batch(
            &self.appends,
            self.writer_id,
            batch_id,
            batch,
            guards,
            after,
        ))?;
        let first = to_seq(first).map_err(AppendError::Failed)?;
        for (r, seq) in batch.iter_mut().zip(first.0..) {
            r.seq = Seq(seq);
        }
        Ok(gap)
    }

    fn boundary(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.read_boundary()
    }

    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let query = format!(
            "SELECT seq, body, {} FROM log_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            durable::MARK
        );
        let rows = self.read_durable(
            sqlx::query(&query)
                .bind(to_i64(after)?)
                .bind(limit_i64(limit)),
        )?;
        rows_to_events(rows)
    }

    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        let query = format!(
            "SELECT e.seq, e.body, {} FROM log_uids u JOIN log_events e ON e.seq = u.seq \
             WHERE u.uid = $1 AND u.seq > $2 ORDER BY u.seq LIMIT $3",
            durable::MARK
        );
        let rows = self.read_durable(
            sqlx::query(&query)
                .bind(uid)
                .bind(to_i64(after)?)
                .bind(limit_i64(limit)),
        )?;
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
        let appends = &self.appends;
        let _ = appends.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), appends.close()).await
        });
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::APPEND_LOCK;

    #[test]
    fn the_append_function_takes_the_append_lock() {
        let function = include_str!("../../migrations/postgres/0008_log_append_after.sql");
        let lock = format!("pg_advisory_xact_lock({APPEND_LOCK})");
        assert!(
            function.contains(&lock),
            "{lock} not in wk_log_append_after"
        );
    }
}
