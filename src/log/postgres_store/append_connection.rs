//! The appends' own connection to the shared log: held open between appends, outside any pool,
//! and driven by the thread that appends.
//!
//! Owns one `PgConnection`, what it takes to open it again, and a single-threaded runtime of
//! its own whose IO driver the appending thread (the log's writer) runs while it waits
//! ([`AppendConnection::block_on`]). Why not a pool of one: a pooled connection goes back to
//! its pool through a task spawned on the store's runtime when it is dropped, so the next append
//! waited for that task's turn on a busy machine before it could send anything (measured with
//! three nodes under churn: `docs/performance.md`). Why a runtime of its own: driven by the
//! store's runtime, the answer to each append woke that runtime's thread first, which then woke
//! the writer; here it wakes the writer alone. Promises: one append at a time has the
//! connection; one whose statement failed in any way is dropped, and the next append opens a new
//! one (a connection that lost an answer cannot be trusted with the next statement); opening is
//! bounded by [`CONNECT_LIMIT`]. Must never: be shared with a reader (an append would wait
//! behind it), be opened without its commit setting ([`super::durable::APPENDS_COMMIT`]), or be
//! used outside [`AppendConnection::block_on`] (nothing else drives its IO).

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, MutexGuard};

/// The longest an append waits for its connection to open before it fails, recording nothing.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

pub(super) struct AppendConnection {
    options: PgConnectOptions,
    held: Mutex<Option<PgConnection>>,
    /// Current-thread: its driver runs on whichever thread is in [`AppendConnection::block_on`].
    /// Taken out at drop, to be shut down without blocking (a store may be dropped on an async
    /// runtime, where dropping a runtime is refused).
    runtime: Option<Runtime>,
}

/// The connection, for one append; [`Lease::broken`] when a statement on it failed.
pub(super) struct Lease<'a> {
    held: MutexGuard<'a, Option<PgConnection>>,
}

impl AppendConnection {
    /// A connection to be opened at its first use, with `options` (the commit setting included).
    pub(super) fn new(options: PgConnectOptions) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(AppendConnection {
            options,
            held: Mutex::new(None),
            runtime: Some(runtime),
        })
    }

    /// Runs `future` (which uses this connection) to completion on the calling thread, which
    /// drives the connection's IO meanwhile (see [`super::blocking_here`] for a caller on an
    /// async runtime).
    pub(super) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is taken out at drop only");
        super::blocking_here(|| runtime.block_on(future))
    }

    /// The connection, opened now if there is none.
    pub(super) async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let mut held = self.held.lock().await;
        if held.is_none() {
            let opening = PgConnection::connect_with(&self.options);
            let conn = tokio::time::timeout(CONNECT_LIMIT, opening)
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            *held = Some(conn);
        }
        Ok(Lease { held })
    }

    /// Closes the connection, if one is open.
    pub(super) async fn close(&self) {
        if let Some(conn) = self.held.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}

impl Drop for AppendConnection {
    fn drop(&mut self) {
        // The connection first, while its runtime still runs; then the runtime, without waiting.
        self.held.get_mut().take();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Lease<'_> {
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        self.held
            .as_mut()
            .expect("a lease holds an open connection")
    }

    /// Drops the connection: the next append opens a new one.
    pub(super) fn broken(mut self) {
        *self.held = None;
    }
}
