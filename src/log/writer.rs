//! Group commit: one writer thread turns concurrent appends into batches that each cost one
//! flush.
//!
//! Callers hand their events to [`EventLog::append`] and await the acknowledgement. The writer
//! takes every request waiting (up to [`MAX_BATCH`]), numbers the events, writes them in one
//! atomic batch, flushes once, hands the batch to the commit listener (the subscribers), and
//! only then acknowledges each caller. Promises: an
//! acknowledged event is durable; a failed batch is acknowledged as failed to every caller in
//! it, consumes no seq and leaves nothing behind (a batch written but not flushed is taken
//! back, and the taking back flushed when the disk allows; if the taking back fails, the writer refuses appends until restart rather than guess);
//! `durable()` never runs ahead of the disk, and reads show durable events only (never a batch
//! still being flushed). Must never: run a flush on the async runtime's threads.

use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{CommitListener, EncodedRecord, LogError, LogStore};
use crate::domain::{Event, NodeId, RecordedEvent, Seq};

/// The most append requests one batch takes.
pub const MAX_BATCH: usize = 1024;

enum Request {
    Append {
        events: Vec<Event>,
        ack: oneshot::Sender<Result<Vec<RecordedEvent>, LogError>>,
    },
    Stop,
}

/// A cloneable handle to the log: append through the writer, read from the store.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// Taken out at [`EventLog::close`], so that the directory is released then, whatever
    /// handles still exist (they get [`LogError::Closed`]).
    store: parking_lot::RwLock<Option<Arc<dyn LogStore>>>,
    tx: mpsc::Sender<Request>,
    durable: watch::Receiver<Seq>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl EventLog {
    /// Starts the writer over `store`, for a log whose committed events nobody follows (the
    /// operator commands, tests); events are stamped with `node_id`.
    pub fn start(store: Arc<dyn LogStore>, node_id: NodeId) -> Result<Self, LogError> {
        Self::start_with(store, node_id, Arc::new(()))
    }

    /// Starts the writer over `store`; `listener` hears each committed batch, in seq order,
    /// before its appenders are answered.
    pub fn start_with(
        store: Arc<dyn LogStore>,
        node_id: NodeId,
        listener: Arc<dyn CommitListener>,
    ) -> Result<Self, LogError> {
        let last = store.last_seq()?;
        let (tx, rx) = mpsc::channel(64 * 1024);
        let (durable_tx, durable) = watch::channel(last);
        let writer_store = store.clone();
        let handle = thread::Builder::new()
            .name("wkuser-log-writer".into())
            .spawn(move || run_writer(writer_store, rx, durable_tx, listener, last, node_id))
            .map_err(LogError::storage)?;
        Ok(EventLog {
            inner: Arc::new(Inner {
                store: parking_lot::RwLock::new(Some(store)),
                tx,
                durable,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Appends `events` as one unit and returns them as recorded, once they are durable.
    pub async fn append(&self, events: Vec<Event>) -> Result<Vec<RecordedEvent>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Append { events, ack })
            .await
            .map_err(|_| LogError::Closed)?;
        done.await.map_err(|_| LogError::Closed)?
    }

    /// The highest durable seq, and a way to wait for it to move.
    pub fn durable(&self) -> watch::Receiver<Seq> {
        self.inner.durable.clone()
    }

    pub fn last_durable(&self) -> Seq {
        *self.inner.durable.borrow()
    }

    fn store(&self) -> Result<Arc<dyn LogStore>, LogError> {
        self.inner.store.read().clone().ok_or(LogError::Closed)
    }

    /// Up to `limit` durable events after `after`, decoded. A batch still being flushed is not
    /// shown: it may yet be taken back.
    pub fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let durable = self.last_durable();
        decode_durable(self.store()?.read_after(after, limit)?, durable)
    }

    /// Up to `limit` durable events of one uid after `after`, decoded.
    pub fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let durable = self.last_durable();
        decode_durable(self.store()?.read_uid(uid, after, limit)?, durable)
    }

    /// Stops the writer after everything queued before this call, waits for it, and releases
    /// the store (the data directory is free once reads already running finish).
    pub async fn close(&self) {
        let _ = self.inner.tx.send(Request::Stop).await;
        let handle = self.inner.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.store.write().take();
    }
}

/// Decodes the events up to `durable` (read before the store was, so nothing past it is known
/// to be on disk).
fn decode_durable(raw: Vec<(Seq, Vec<u8>)>, durable: Seq) -> Result<Vec<RecordedEvent>, LogError> {
    raw.into_iter()
        .take_while(|(seq, _)| *seq <= durable)
        .map(|(seq, bytes)| {
            RecordedEvent::decode(seq, &bytes).map_err(|e| LogError::corrupt(seq, e))
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn run_writer(
    store: Arc<dyn LogStore>,
    mut rx: mpsc::Receiver<Request>,
    durable: watch::Sender<Seq>,
    listener: Arc<dyn CommitListener>,
    mut last: Seq,
    node_id: NodeId,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    let mut poisoned: Option<Arc<str>> = None;
    while !stop {
        match rx.blocking_recv() {
            None | Some(Request::Stop) => break,
            Some(Request::Append { events, ack }) => pending.push((events, ack)),
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Request::Append { events, ack }) => pending.push((events, ack)),
                Ok(Request::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let recorded_at = now_ms();
        let mut seq = last;
        let mut encoded = Vec::new();
        let mut replies = Vec::with_capacity(pending.len());
        for (events, ack) in pending.drain(..) {
            let recorded: Vec<RecordedEvent> = events
                .into_iter()
                .map(|event| {
                    seq = seq.next();
                    RecordedEvent {
                        seq,
                        event_id: Uuid::now_v7(),
                        recorded_at,
                        node_id,
                        event,
                    }
                })
                .collect();
            encoded.extend(recorded.iter().map(|r| EncodedRecord {
                seq: r.seq,
                bytes: r.encode(),
                uids: r.event.uids().to_vec(),
            }));
            replies.push((recorded, ack));
        }
        let outcome = if let Some(why) = &poisoned {
            Err(LogError::Storage(why.clone()))
        } else {
            store.write(&encoded).and_then(|()| {
                store.flush().inspect_err(|_| {
                    // Written but not durable: take it back, or a later flush would make
                    // durable what the callers were told failed.
                    if let Err(e) = store.discard(&encoded) {
                        tracing::error!(error = %e, "cannot take back a batch that failed to flush; refusing appends until restart");
                        poisoned = Some("the event log is in an unknown state after a failed flush; restart the server".into());
                    } else if let Err(e) = store.flush() {
                        // The store's own background flush may have made the batch durable
                        // meanwhile, and a crash before the next flush would bring it back.
                        // A disk that just failed a flush may fail this one too: the next
                        // batch's flush, before anything is acknowledged, tries again.
                        tracing::warn!(error = %e, "the taking back of a failed batch is not durable yet");
                    }
                })
            })
        };
        match outcome {
            Ok(()) => {
                last = seq;
                durable.send_replace(last);
                // Here, not in each appender's task: an appender that stops waiting (a client
                // gone) must not leave a durable event unapplied.
                for (recorded, _) in &replies {
                    listener.committed(recorded);
                }
                for (recorded, ack) in replies {
                    let _ = ack.send(Ok(recorded));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = encoded.len(), "append failed; nothing acknowledged");
                for (_, ack) in replies {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }
    // Answer whatever was queued behind a stop, so no caller waits forever.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        if let Request::Append { ack, .. } = req {
            let _ = ack.send(Err(LogError::Closed));
        }
    }
}
