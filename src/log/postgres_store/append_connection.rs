//! The appends' own connection to the shared log: held open between appends, outside any pool.
//!
//! Owns one `PgConnection` and what it takes to open it again. Why not a pool of one: a pooled
//! connection goes back to its pool through a task spawned on the store's runtime when it is
//! dropped, so the next append waited for that task's turn on a busy machine before it could
//! send anything (measured with three nodes under churn: `docs/performance.md`). Promises: one append at a time has the connection; one whose
//! statement failed in any way is dropped, and the next append opens a new one (a connection
//! that lost an answer cannot be trusted with the next statement); opening is bounded by
//! [`CONNECT_LIMIT`]. Must never: be shared with a reader (an append would wait behind it), or
//! be opened without its commit setting ([`super::durable::APPENDS_COMMIT`]).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::sync::{Mutex, MutexGuard};

/// The longest an append waits for its connection to open before it fails, recording nothing.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

pub(super) struct AppendConnection {
    options: PgConnectOptions,
    held: Mutex<Option<PgConnection>>,
}

/// The connection, for one append; [`Lease::broken`] when a statement on it failed.
pub(super) struct Lease<'a> {
    held: MutexGuard<'a, Option<PgConnection>>,
}

impl AppendConnection {
    /// A connection to be opened at its first use, with `options` (the commit setting included).
    pub(super) fn new(options: PgConnectOptions) -> Self {
        AppendConnection {
            options,
            held: Mutex::new(None),
        }
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
