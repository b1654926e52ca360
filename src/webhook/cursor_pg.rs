//! The webhook's cursor in the shared database, and the turn that lets one node deliver at a
//! time (table `webhook_cursor` of `migrations/postgres/0005_webhook.sql`).
//!
//! Owns the delivery turn: a session-level advisory lock ([`DELIVERY_LOCK`]) held on a
//! connection of the turn's own. The database ends that session when the node's process dies
//! (kill -9 closes its sockets), so the lock passes to a waiting node at once, and that node
//! resumes from the shared mark. Every save goes through the lock's own connection: a node
//! whose connection (and so whose lock) is gone cannot move the mark, and learns that its turn
//! is over. Promises: at most one node holds the turn; a mark is committed when
//! [`Turn::save`] returns. Must never: log the database URL, or save on any other connection
//! than the one holding the lock.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Connection, PgConnection, Row};
use tokio_util::sync::CancellationToken;

use super::cursor::{CursorError, CursorStore, Mark, Turn};
use super::deliver::Backoff;
use super::status::WebhookStatus;
use crate::domain::{NodeId, Seq};

/// The advisory lock of the delivery turn ("wkhook"), held for the whole turn on the turn's
/// connection (unlike the log's transaction-level append lock).
pub const DELIVERY_LOCK: i64 = 0x77_6b_68_6f_6f_6b;

/// How often a node without the turn asks for it again (and reads the shared cursor).
const ASK_AGAIN: Duration = Duration::from_millis(500);

pub struct PgCursor {
    url: String,
    node_id: NodeId,
}

impl PgCursor {
    pub fn new(url: &str, node_id: NodeId) -> Self {
        PgCursor {
            url: url.to_owned(),
            node_id,
        }
    }

    /// On `conn`: the turn if the lock was free, `None` when another node holds it.
    async fn try_turn(
        &self,
        conn: &mut PgConnection,
        start: Seq,
    ) -> Result<Option<Mark>, sqlx::Error> {
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(DELIVERY_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if !held {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO webhook_cursor (id, delivered, in_flight_to, node_id) \
             VALUES (1, $1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(start.0 as i64)
        .bind(self.node_id.0 as i64)
        .execute(&mut *conn)
        .await?;
        read_mark(conn).await.map(Some)
    }
}

async fn read_mark(conn: &mut PgConnection) -> Result<Mark, sqlx::Error> {
    let row = sqlx::query("SELECT delivered, in_flight_to FROM webhook_cursor WHERE id = 1")
        .fetch_one(conn)
        .await?;
    Ok(Mark {
        delivered: Seq(row.try_get::<i64, _>(0)?.max(0) as u64),
        in_flight_to: Seq(row.try_get::<i64, _>(1)?.max(0) as u64),
    })
}

#[async_trait]
impl CursorStore for PgCursor {
    async fn take_turn(
        &self,
        start: Seq,
        status: &WebhookStatus,
        stop: &CancellationToken,
    ) -> Option<Box<dyn Turn>> {
        let mut pause = Backoff::default();
        loop {
            let mut conn = match PgConnection::connect(&self.url).await {
                Ok(conn) => conn,
                Err(_) if stop.is_cancelled() => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: cannot reach the shared database; retrying");
                    status.failed(&format_args!("cannot reach the shared database: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(pause.next()) => continue,
                        _ = stop.cancelled() => return None,
                    }
                }
            };
            loop {
                match self.try_turn(&mut conn, start).await {
                    Ok(Some(mark)) => {
                        tracing::info!(delivered = %mark.delivered, "webhook: this node delivers");
                        return Some(Box::new(PgTurn {
                            conn,
                            mark,
                            node_id: self.node_id,
                        }));
                    }
                    Ok(None) if stop.is_cancelled() => return None,
                    Ok(None) => {
                        // Another node delivers: show where it stands.
                        if let Ok(mark) = read_mark(&mut conn).await {
                            status.seen_elsewhere(mark.delivered.0);
                        }
                        pause = Backoff::default();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook: cannot ask for the delivery turn; reconnecting");
                        break;
                    }
                }
                // A stop asks once more at once: when no other node delivers (the last one
                // left, say), this one delivers what its stop recorded.
                tokio::select! {
                    _ = tokio::time::sleep(ASK_AGAIN) => {}
                    _ = stop.cancelled() => {}
                }
            }
            if stop.is_cancelled() {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.next()) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }
}

/// The turn: the connection that holds the lock. Dropped, the connection closes and the lock
/// goes with it.
struct PgTurn {
    conn: PgConnection,
    mark: Mark,
    node_id: NodeId,
}

#[async_trait]
impl Turn for PgTurn {
    fn mark(&self) -> Mark {
        self.mark
    }

    async fn save(&mut self, mark: Mark) -> Result<(), CursorError> {
        sqlx::query(
            "UPDATE webhook_cursor SET delivered = $1, in_flight_to = $2, node_id = $3, \
             updated_at = now() WHERE id = 1",
        )
        .bind(mark.delivered.0 as i64)
        .bind(mark.in_flight_to.0 as i64)
        .bind(self.node_id.0 as i64)
        .execute(&mut self.conn)
        .await
        .map_err(|e| CursorError::TurnLost(e.to_string()))?;
        self.mark = mark;
        Ok(())
    }
}
