//! The webhook's one piece of state: where delivery stands in the log, stored durably.
//!
//! Owns the [`Mark`] (the last seq delivered, and the range of the batch in flight) and its
//! stores: [`SledCursor`], a tree of the log's own sled database on a node alone on its data
//! directory, and [`super::cursor_pg::PgCursor`], a row of the shared database with a turn
//! that one node holds at a time. Kept with the log rather than in the SQL view on purpose:
//! a damaged view is set aside and rebuilt, which would lose a cursor kept there, and the log
//! is never rebuilt. Promises: a mark is durable when [`Turn::save`] returns; a batch's range
//! is saved before the receiver can see it, so a crash resends exactly that batch (same
//! range, same bytes) and never skips one. On a node alone the save runs on the log's writer
//! ([`EventLog::write_beside`]), which flushes the mark with sled's own flush (the log's
//! write-ahead file holds events only). Must never: store a delivered seq the receiver did not
//! answer 2xx for, or flush the log's database itself.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::status::WebhookStatus;
use crate::domain::Seq;
use crate::log::{EventLog, LogError};

/// Where delivery stands. Every entry up to `delivered` was answered 2xx; the batch
/// `delivered+1..=in_flight_to` was sent, or is about to be, and is not known to be answered
/// (`in_flight_to == delivered`: no batch in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub delivered: Seq,
    pub in_flight_to: Seq,
}

impl Mark {
    /// Everything up to `seq` delivered, nothing in flight.
    pub fn at(seq: Seq) -> Self {
        Mark {
            delivered: seq,
            in_flight_to: seq,
        }
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.delivered.to_key());
        b[8..].copy_from_slice(&self.in_flight_to.to_key());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        (b.len() == 16).then(|| Mark {
            delivered: Seq::from_key(&b[..8]).expect("8 bytes"),
            in_flight_to: Seq::from_key(&b[8..]).expect("8 bytes"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("webhook cursor: {0}")]
    Storage(String),
    /// Another node may deliver now: this node's turn is over.
    #[error("webhook cursor: the delivery turn was lost: {0}")]
    TurnLost(String),
}

/// Where a node keeps its mark, and how it gets its turn to deliver.
#[async_trait]
pub trait CursorStore: Send + Sync + 'static {
    /// Waits until this node may deliver (at once on a node alone on its log; with several
    /// nodes, when no other one delivers), and gives that turn with the stored mark. A store
    /// with no mark yet starts at `start` (the log's end when the webhook first starts: what
    /// happened before it was configured is not sent) and saves it at once. Once `stop` has
    /// fired it asks once more without waiting, and gives `None` when the turn is not free.
    /// While it waits, `status` hears the cursor another node left.
    async fn take_turn(
        &self,
        start: Seq,
        status: &WebhookStatus,
        stop: &CancellationToken,
    ) -> Option<Box<dyn Turn>>;
}

/// A node's turn to deliver.
#[async_trait]
pub trait Turn: Send {
    /// The mark as stored when the turn began, or as last saved.
    fn mark(&self) -> Mark;
    /// Stores `mark` durably. An error ends the turn: the caller takes a new one, which reads
    /// the mark again.
    async fn save(&mut self, mark: Mark) -> Result<(), CursorError>;
}

/// The key of the mark in its tree.
const KEY: &[u8] = b"mark";

/// The mark in the tree `webhook` of the log's sled database, made durable by the log's writer.
pub struct SledCursor {
    tree: sled::Tree,
    log: EventLog,
}

impl SledCursor {
    /// The last seq delivered, as stored in the log's database `db`; `None` when the webhook
    /// never ran there. For `wkuser archive`, which must not move undelivered entries away.
    pub fn delivered_in(db: &sled::Db) -> Result<Option<Seq>, CursorError> {
        let storage = |e: sled::Error| CursorError::Storage(e.to_string());
        let tree = db.open_tree("webhook").map_err(storage)?;
        Ok(tree
            .get(KEY)
            .map_err(storage)?
            .and_then(|b| Mark::from_bytes(&b))
            .map(|m| m.delivered))
    }

    /// The cursor in `db`, the database of the store `log` writes: its saves are made durable
    /// by that log's writer.
    pub fn open(db: &sled::Db, log: EventLog) -> Result<Self, CursorError> {
        let tree = db
            .open_tree("webhook")
            .map_err(|e| CursorError::Storage(e.to_string()))?;
        Ok(SledCursor { tree, log })
    }

    /// The stored mark, or a mark at `start` saved now.
    async fn read_or_start(&self, start: Seq) -> Result<Mark, CursorError> {
        let tree = self.tree.clone();
        let stored = tokio::task::spawn_blocking(move || tree.get(KEY))
            .await
            .map_err(|e| CursorError::Storage(e.to_string()))?
            .map_err(|e| CursorError::Storage(e.to_string()))?;
        match stored {
            Some(bytes) => Mark::from_bytes(&bytes)
                .ok_or_else(|| CursorError::Storage(format!("malformed mark {bytes:?}"))),
            None => {
                let mark = Mark::at(start);
                save_sled(&self.log, &self.tree, mark).await?;
                Ok(mark)
            }
        }
    }
}

/// Inserts `mark` on the log's writer, durable on return ([`crate::log::LogStore::flush_beside`]).
async fn save_sled(log: &EventLog, tree: &sled::Tree, mark: Mark) -> Result<(), CursorError> {
    let tree = tree.clone();
    log.write_beside(Box::new(move || {
        tree.insert(KEY, &mark.to_bytes()[..])
            .map(|_| ())
            .map_err(LogError::storage)
    }))
    .await
    .map_err(|e| CursorError::Storage(e.to_string()))
}

#[async_trait]
impl CursorStore for SledCursor {
    async fn take_turn(
        &self,
        start: Seq,
        status: &WebhookStatus,
        stop: &CancellationToken,
    ) -> Option<Box<dyn Turn>> {
        let mut pause = super::deliver::Backoff::default();
        loop {
            match self.read_or_start(start).await {
                Ok(mark) => {
                    return Some(Box::new(SledTurn {
                        tree: self.tree.clone(),
                        log: self.log.clone(),
                        mark,
                    }))
                }
                Err(e) => {
                    tracing::error!(error = %e, "webhook: cannot read the cursor; retrying");
                    status.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause.next()) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

struct SledTurn {
    tree: sled::Tree,
    log: EventLog,
    mark: Mark,
}

#[async_trait]
impl Turn for SledTurn {
    fn mark(&self) -> Mark {
        self.mark
    }

    async fn save(&mut self, mark: Mark) -> Result<(), CursorError> {
        save_sled(&self.log, &self.tree, mark).await?;
        self.mark = mark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mark_is_started_at_the_given_seq_once_then_read_back_as_saved() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(crate::log::SledStore::open(dir.path()).unwrap());
        let db = store.db().clone();
        let log = EventLog::start(store, crate::domain::NodeId(1)).unwrap();
        let status = WebhookStatus::new(Default::default());
        let stop = CancellationToken::new();
        let cursor = SledCursor::open(&db, log.clone()).unwrap();
        let mut turn = cursor.take_turn(Seq(40), &status, &stop).await.unwrap();
        assert_eq!(turn.mark(), Mark::at(Seq(40)));
        let sent = Mark {
            delivered: Seq(40),
            in_flight_to: Seq(52),
        };
        turn.save(sent).await.unwrap();
        drop(turn);
        // A later start at another end finds the mark where it was left.
        let turn = cursor.take_turn(Seq(90), &status, &stop).await.unwrap();
        assert_eq!(turn.mark(), sent);
        log.close().await;
    }
}
