//! Group commit: one writer thread turns concurrent appends into batches that each cost one
//! flush.
//!
//! Callers hand their events to [`EventLog::append`] and await the acknowledgement. The writer
//! takes every request waiting (up to [`MAX_BATCH`]), stamps the events, hands them to the
//! store as one batch that the store numbers and makes durable at once ([`LogStore::append`]:
//! one write and one flush, or one transaction), hands the batch to the commit listener (the
//! subscribers; in a shared log, first the other writers' events before it that the store
//! answered with the append), and only then acknowledges each caller. Promises: an acknowledged event is
//! durable; a failed batch is acknowledged as failed to every caller in it, consumes no seq and
//! leaves nothing behind (a batch written but not flushed is taken back, and the taking back
//! flushed when the disk allows; if the taking back fails, the writer refuses appends until
//! restart rather than guess), except a batch whose outcome a shared store could not learn
//! ([`AppendError::InDoubt`]: it is in the log once or not at all); a batch whose guards did not
//! all hold answers a conflict to the appenders guarded on those uids only, and the rest of it
//! is appended again at once; `durable()` never runs ahead of the disk, and reads show durable
//! events only (never a batch still being flushed). A write beside the log in the same store
//! (the webhook's cursor, [`EventLog::write_beside`]) runs on the writer's thread, before the
//! next batch's flush, and is made durable by [`LogStore::flush_beside`]: for free when the
//! store's flush covers it, with a flush of its own otherwise (sled: its events are made
//! durable by the write-ahead file, which holds events only). Must never: run a flush or a commit on the
//! async runtime's threads, or flush a store it has refused appends on.

use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::{AppendError, CommitListener, EncodedRecord, Guard, LogError, LogStore};
use crate::domain::{Event, NodeId, RecordedEvent, Seq};

/// The most append requests one batch takes.
pub const MAX_BATCH: usize = 1024;

enum Request {
    Append {
        events: Vec<Event>,
        guard: Option<Guard>,
        ack: oneshot::Sender<Result<Vec<RecordedEvent>, LogError>>,
    },
    Beside {
        write: BesideWrite,
        ack: BesideAck,
    },
    Stop,
}

/// A write into the log's own store beside its events (the webhook's cursor, in a tree of the
/// same sled database), run on the writer's thread by [`EventLog::write_beside`].
pub type BesideWrite = Box<dyn FnOnce() -> Result<(), LogError> + Send>;

/// Who waits for a write beside the log to be durable.
type BesideAck = oneshot::Sender<Result<(), LogError>>;

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
        self.append_guarded(events, None).await
    }

    /// [`EventLog::append`], recorded only if `guard` holds ([`LogError::Conflict`] otherwise:
    /// nothing is recorded, and the command is to be decided again).
    pub async fn append_guarded(
        &self,
        events: Vec<Event>,
        guard: Option<Guard>,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Append { events, guard, ack })
            .await
            .map_err(|_| LogError::Closed)?;
        done.await.map_err(|_| LogError::Closed)?
    }

    /// Runs `write`, a write into this log's store beside its events, on the writer's thread,
    /// and returns once a flush after it has made it durable: the flush of the next batch of
    /// appends when some wait, one of its own otherwise. Only for a store that is its log's
    /// only writer (sled), whose flush makes everything written before it durable.
    pub async fn write_beside(&self, write: BesideWrite) -> Result<(), LogError> {
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Beside { write, ack })
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
    /// shown: it may yet be taken back. (In a log several nodes share, every committed event
    /// is shown, the other nodes' included.)
    pub fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let durable = self.last_durable();
        let store = self.store()?;
        let raw = store.read_after(after, limit)?;
        decode_durable(raw, self.read_limit(&*store, durable))
    }

    /// How far a read may show: everything the store shows, unless its reads may run ahead
    /// of what the writer knows to be durable.
    fn read_limit(&self, store: &dyn LogStore, durable: Seq) -> Seq {
        if store.reads_may_run_ahead() {
            durable
        } else {
            Seq(u64::MAX)
        }
    }

    /// The archive boundary stored beside the log, encoded (see [`LogStore::boundary`]).
    pub fn boundary(&self) -> Result<Option<Vec<u8>>, LogError> {
        self.store()?.boundary()
    }

    /// Up to `limit` durable events of one uid after `after`, decoded.
    pub fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let durable = self.last_durable();
        let store = self.store()?;
        let raw = store.read_uid(uid, after, limit)?;
        let mut events = decode_durable(raw, self.read_limit(&*store, durable))?;
        // An index row can outlive its event in one rare case (a batch taken back, then a crash:
        // see `sled_store`): the event at that seq is then another's, and not shown.
        events.retain(|r| r.event.uids().iter().any(|u| u.as_str() == uid));
        Ok(events)
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
    let mut beside = Vec::new();
    let mut stop = false;
    let mut poisoned: Option<Arc<str>> = None;
    while !stop {
        match rx.blocking_recv() {
            None | Some(Request::Stop) => break,
            Some(Request::Append { events, guard, ack }) => pending.push((events, guard, ack)),
            Some(Request::Beside { write, ack }) => beside.push((write, ack)),
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Request::Append { events, guard, ack }) => pending.push((events, guard, ack)),
                Ok(Request::Beside { write, ack }) => beside.push((write, ack)),
                Ok(Request::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // Before the batch's flush, which makes them durable with it.
        let written: Vec<_> = beside
            .drain(..)
            .map(|(write, ack)| match &poisoned {
                Some(why) => (Err(LogError::Storage(why.clone())), ack),
                None => (write(), ack),
            })
            .collect();
        let recorded_at = now_ms();
        let mut seq = last;
        let mut encoded = Vec::new();
        let mut batch = Vec::with_capacity(pending.len());
        for (events, guard, ack) in pending.drain(..) {
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
            batch.push(Appender {
                recorded,
                guard,
                ack,
            });
        }
        // The other writers' events before the batch, when the store answered them with it.
        let mut preceding = Vec::new();
        let mut started = false;
        let outcome = if batch.is_empty() {
            // Only writes beside the log this round.
            Ok(())
        } else if let Some(why) = &poisoned {
            Err(LogError::Storage(why.clone()))
        } else {
            listener.append_started();
            started = true;
            let after = listener.published_up_to();
            match append_all_it_can(&*store, &mut batch, &mut encoded, after) {
                Ok(gap) => {
                    preceding = decode_preceding(gap);
                    // The store may have numbered the batch from a log that other nodes append
                    // to: its seqs are the ones recorded.
                    let mut recorded_seqs = encoded.iter().map(|r| r.seq);
                    for r in batch.iter_mut().flat_map(|a| a.recorded.iter_mut()) {
                        r.seq = recorded_seqs
                            .next()
                            .expect("the store keeps the batch's length");
                    }
                    seq = encoded.last().map_or(last, |r| r.seq);
                    Ok(())
                }
                Err(AppendError::Failed(e) | AppendError::InDoubt(e)) => Err(e),
                Err(AppendError::Conflict(uids)) => {
                    // The store named broken guards that no appender of the batch holds:
                    // cannot be, and leaving nobody out would only fail again. Decided again.
                    Err(LogError::Conflict(
                        uids.into_iter().next().expect("a conflict names a uid"),
                    ))
                }
                Err(AppendError::Poisoned(e)) => {
                    poisoned = Some("the event log is in an unknown state after a failed flush; restart the server".into());
                    Err(e)
                }
            }
        };
        // Whether a flush after the writes beside the log succeeded (the appends' own).
        let flushed = outcome.is_ok() && !batch.is_empty();
        match outcome {
            Ok(()) if batch.is_empty() => {}
            Ok(()) => {
                last = seq;
                durable.send_replace(last);
                // Here, not in each appender's task: an appender that stops waiting (a client
                // gone) must not leave a durable event unapplied.
                if !preceding.is_empty() {
                    listener.preceding(&preceding);
                }
                for appender in &batch {
                    listener.committed(&appender.recorded);
                }
                for appender in batch {
                    let _ = appender.ack.send(Ok(appender.recorded));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = encoded.len(), "append failed; nothing acknowledged");
                for appender in batch {
                    let _ = appender.ack.send(Err(e.clone()));
                }
            }
        }
        if started {
            // After the batch was handed over: a tail waiting for this append finds its
            // events, and the others' before them, published.
            listener.append_ended();
        }
        answer_beside(&*store, written, flushed, poisoned.as_ref());
    }
    // Answer whatever was queued behind a stop, so no caller waits forever.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        match req {
            Request::Append { ack, .. } => {
                let _ = ack.send(Err(LogError::Closed));
            }
            Request::Beside { ack, .. } => {
                let _ = ack.send(Err(LogError::Closed));
            }
            Request::Stop => {}
        }
    }
}

/// The events an append answered as preceding its batch, decoded. One that does not decode is
/// left out with those after it: the listener then reads them from the log itself (and meets
/// the same fault there, where it is reported as a read's).
fn decode_preceding(gap: Vec<(Seq, Vec<u8>)>) -> Vec<RecordedEvent> {
    let mut events = Vec::with_capacity(gap.len());
    for (seq, bytes) in gap {
        match RecordedEvent::decode(seq, &bytes) {
            Ok(event) => events.push(event),
            Err(e) => {
                tracing::warn!(seq = %seq, error = %e,
                    "an event before this node's batch does not decode; the follower reads it");
                break;
            }
        }
    }
    events
}

/// Answers one round's writes beside the log once the store made them durable (with the
/// round's appends, if their flush succeeded and covers them: `flushed`), never on a poisoned
/// store (it would make durable a batch its appenders were told failed).
fn answer_beside(
    store: &dyn LogStore,
    written: Vec<(Result<(), LogError>, BesideAck)>,
    flushed: bool,
    poisoned: Option<&Arc<str>>,
) {
    if written.is_empty() {
        return;
    }
    let durable = match poisoned {
        Some(why) => Err(LogError::Storage(why.clone())),
        None if written.iter().all(|(w, _)| w.is_err()) => Ok(()),
        None => store.flush_beside(flushed),
    };
    for (write, ack) in written {
        let _ = ack.send(write.and_then(|()| durable.clone()));
    }
}

/// One request of a batch: its events as stamped, its guard, and whom to answer.
struct Appender {
    recorded: Vec<RecordedEvent>,
    guard: Option<Guard>,
    ack: oneshot::Sender<Result<Vec<RecordedEvent>, LogError>>,
}

/// Appends `batch` (whose events are `encoded`, in order). When guards break, the appenders
/// guarded on those uids are answered [`LogError::Conflict`] (to be decided again) and taken
/// out, and the rest is appended again at once: one conflict must not send a whole batch of
/// unrelated commands back to decide again. Returns the last outcome; `batch` and `encoded`
/// then hold what it was about (empty when every appender was answered a conflict).
fn append_all_it_can(
    store: &dyn LogStore,
    batch: &mut Vec<Appender>,
    encoded: &mut Vec<EncodedRecord>,
    after: Option<Seq>,
) -> Result<Vec<(Seq, Vec<u8>)>, AppendError> {
    loop {
        let Some(first) = batch.iter().find_map(|a| a.recorded.first()) else {
            return Ok(Vec::new());
        };
        // The first event's id names the batch across the store's retries: it is unique in
        // the log, and the same in every retry because the events are stamped once, here. A
        // batch appended again without its conflicts gets the id of its new first event: the
        // first try recorded nothing.
        let batch_id = first.event_id;
        let guards: Vec<Guard> = batch.iter().filter_map(|a| a.guard.clone()).collect();
        let uids = match store.append_after(batch_id, encoded, &guards, after) {
            Err(AppendError::Conflict(uids)) => uids,
            outcome => return outcome,
        };
        let broken = |a: &Appender| a.guard.as_ref().is_some_and(|g| uids.contains(&g.uid));
        if !batch.iter().any(broken) {
            // The store names no guard of this batch: nothing to leave out, so nothing would
            // change by trying again.
            return Err(AppendError::Conflict(uids));
        }
        let mut kept = Vec::with_capacity(batch.len());
        let mut kept_encoded = Vec::with_capacity(encoded.len());
        let mut records = std::mem::take(encoded).into_iter();
        for appender in batch.drain(..) {
            let own: Vec<EncodedRecord> = records.by_ref().take(appender.recorded.len()).collect();
            match &appender.guard {
                Some(guard) if uids.contains(&guard.uid) => {
                    tracing::debug!(uid = %guard.uid, "a guard did not hold; the command is decided again");
                    let _ = appender
                        .ack
                        .send(Err(LogError::Conflict(guard.uid.clone())));
                }
                _ => {
                    kept_encoded.extend(own);
                    kept.push(appender);
                }
            }
        }
        *batch = kept;
        *encoded = kept_encoded;
    }
}

#[cfg(test)]
mod tests;
