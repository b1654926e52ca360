//! When an event of the shared log is durable: the appends' commit split in two, and the
//! readers' wait for the WAL flush.
//!
//! Owns the statement that makes the database's commits so far durable ([`FLUSH`]), the option
//! the appends' connection runs with ([`APPENDS_COMMIT`]), and the mark every read of events
//! carries ([`MARK`]) with the wait it asks for ([`wait_until_flushed`]).
//!
//! Why split: every node's append takes the append lock, in turn, until its commit ends. A
//! commit that waits for its WAL flush holds the lock through the flush, so the nodes' flushes
//! queue one after another. The appends' connection therefore commits without waiting
//! (`synchronous_commit = off`): the lock goes as soon as the batch is numbered and its commit
//! record written. The same CALL (`wk_log_append_durable`, `migrations/postgres/0009`) then does
//! what [`FLUSH`] does in a transaction of its own: it writes one WAL record and commits it
//! waiting for the flush, which covers the batch's commit record and every one before it (the
//! WAL is written in order). The nodes' flushes run side by side, and PostgreSQL serves them
//! with shared fsyncs. A read that saw a commit not yet flushed runs [`FLUSH`] itself.
//!
//! Promises: an append is answered only after its flush has; a read answers events
//! only once the WAL on disk holds every commit its snapshot saw. A crash of PostgreSQL loses
//! only commits no one was told of, and those form the log's tail (their seqs come after every
//! durable one), so the log stays dense and the seqs lost are given again. Must never: answer,
//! acknowledge or publish an event before a flush covers it (it could be lost, and its seq
//! given to another event), or wait for a flush without a bound.

use std::time::Duration;

use sqlx::postgres::PgPool;

/// The setting of the appends' connection: commits answer before their WAL flush.
pub(super) const APPENDS_COMMIT: (&str, &str) = ("synchronous_commit", "off");

/// Makes every commit of the database so far durable. It writes one WAL record (a transactional
/// logical message: no table, no row, allowed to every role at any `wal_level`) so that its
/// transaction has a commit to flush, and turns synchronous commit on for that transaction
/// alone. A statement with no WAL record of its own would commit without a flush. Its name,
/// `wk_log_flush`, lets a test find it on the wire.
pub(super) const FLUSH: &str = "SELECT set_config('synchronous_commit', 'on', true), \
     pg_logical_emit_message(true, 'wk_log_flush', '')";

/// A column for every read of events: NULL when the WAL on disk already holds everything
/// written when the read ran, else the WAL position to wait for (as text). The position is read
/// during the statement, so after its snapshot was taken: it is past the commit record of every
/// transaction the read sees. An uncorrelated subquery, it is computed once per statement. On
/// a standby (an operator reading a replica) it is NULL without asking for WAL positions, which
/// a server in recovery refuses: a standby is sent only WAL its primary has flushed. The inner
/// subquery runs only when the CASE reaches it.
pub(super) const MARK: &str = "(SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE \
     (SELECT CASE WHEN pg_current_wal_flush_lsn() >= m.at THEN NULL ELSE m.at::text END \
     FROM (SELECT pg_current_wal_insert_lsn() AS at) AS m) END)";

/// How long a read waits for the WAL to be flushed before it fails: a flush that takes longer
/// than this is a database in trouble.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Waits until the WAL is on disk up to `at` (a position [`MARK`] answered) by running
/// [`FLUSH`] on one of `pool`'s connections: its commit returns once the WAL is flushed up to
/// its own record, which was written after `at`. One round trip, answered as soon as the flush
/// is done (most often one already under way: PostgreSQL flushes concurrent commits together),
/// where asking for the flush position again and again would cost a statement per look and up
/// to a pause of latency.
pub(super) async fn wait_until_flushed(pool: &PgPool, at: &str) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(FLUSH_LIMIT, sqlx::query(FLUSH).execute(pool)).await {
        Ok(flushed) => flushed.map(|_| ()),
        // An I/O error: the caller reports the database as unavailable.
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the database did not flush its WAL up to {at} within {FLUSH_LIMIT:?}"),
        ))),
    }
}
