//! Group commit: one writer thread turns concurrent appends into batches that each cost one
//! flush.
//!
//! Callers hand their events to [`EventLog::append`] and await the acknowledgement. The writer
//! takes every request waiting (up to [`MAX_BATCH`]), stamps the events, hands them to the
//! store as one batch that the store numbers and makes durable at once ([`LogStore::append`]:
//! one write and one flush, or one transaction), hands the batch to the commit listener (the
//! subscribers), and only then acknowledges each caller. Promises: an acknowledged event is
//! durable; a failed batch is acknowledged as failed to every caller in it, consumes no seq and
//! leaves nothing behind (a batch written but not flushed is taken back, and the taking back
//! flushed when the disk allows; if the taking back fails, the writer refuses appends until
//! restart rather than guess), except a batch whose outcome a shared store could not learn
//! ([`AppendError::InDoubt`]: it is in the log once or not at all); a batch whose guards did not
//! all hold answers a conflict to the appenders guarded on those uids only, and the rest of it
//! is appended again at once; `durable()` never runs ahead of the disk, and reads show durable
//! events only (never a batch still being flushed). Must never: run a flush or a commit on the
//! async runtime's threads.

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
    let mut stop = false;
    let mut poisoned: Option<Arc<str>> = None;
    while !stop {
        match rx.blocking_recv() {
            None | Some(Request::Stop) => break,
            Some(Request::Append { events, guard, ack }) => pending.push((events, guard, ack)),
        }
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Request::Append { events, guard, ack }) => pending.push((events, guard, ack)),
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
        let outcome = if let Some(why) = &poisoned {
            Err(LogError::Storage(why.clone()))
        } else {
            match append_all_it_can(&*store, &mut batch, &mut encoded) {
                Ok(()) => {
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
        match outcome {
            Ok(()) if batch.is_empty() => {}
            Ok(()) => {
                last = seq;
                durable.send_replace(last);
                // Here, not in each appender's task: an appender that stops waiting (a client
                // gone) must not leave a durable event unapplied.
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
    }
    // Answer whatever was queued behind a stop, so no caller waits forever.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        if let Request::Append { ack, .. } = req {
            let _ = ack.send(Err(LogError::Closed));
        }
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
) -> Result<(), AppendError> {
    loop {
        let Some(first) = batch.iter().find_map(|a| a.recorded.first()) else {
            return Ok(());
        };
        // The first event's id names the batch across the store's retries: it is unique in
        // the log, and the same in every retry because the events are stamped once, here. A
        // batch appended again without its conflicts gets the id of its new first event: the
        // first try recorded nothing.
        let batch_id = first.event_id;
        let guards: Vec<Guard> = batch.iter().filter_map(|a| a.guard.clone()).collect();
        let uids = match store.append_guarded(batch_id, encoded, &guards) {
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
mod tests {
    //! The writer's side of the store contract, over a store double: the only writer's take-back
    //! and poisoning, and a shared store's numbering adopted.

    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::event::SystemUids;
    use crate::domain::Uid;
    use crate::log::AppendError;

    /// A store in memory that fails its flushes or its take-backs on demand, or numbers batches
    /// itself from `shared_last` (another writer's appends).
    #[derive(Default)]
    struct Double {
        events: Mutex<BTreeMap<Seq, Vec<u8>>>,
        calls: Mutex<Vec<&'static str>>,
        failing_flush: Mutex<bool>,
        failing_discard: Mutex<bool>,
        shared_last: Mutex<Option<u64>>,
        /// Guards on these uids break, as if another writer had recorded events of them.
        changed_elsewhere: Mutex<Vec<Uid>>,
        /// The guards of each call of `append_guarded`.
        guarded_calls: Mutex<Vec<Vec<Uid>>>,
    }

    impl LogStore for Double {
        fn append_guarded(
            &self,
            batch_id: Uuid,
            batch: &mut [EncodedRecord],
            guards: &[Guard],
        ) -> Result<(), AppendError> {
            self.guarded_calls
                .lock()
                .push(guards.iter().map(|g| g.uid.clone()).collect());
            let changed = self.changed_elsewhere.lock();
            let broken: Vec<Uid> = guards
                .iter()
                .filter(|g| changed.contains(&g.uid))
                .map(|g| g.uid.clone())
                .collect();
            drop(changed);
            if !broken.is_empty() {
                return Err(AppendError::Conflict(broken));
            }
            self.append(batch_id, batch)
        }
        fn last_seq(&self) -> Result<Seq, LogError> {
            Ok(self.events.lock().keys().last().copied().unwrap_or(Seq(0)))
        }
        fn append(&self, batch_id: Uuid, batch: &mut [EncodedRecord]) -> Result<(), AppendError> {
            let Some(others) = *self.shared_last.lock() else {
                return crate::log::append_as_only_writer(self, batch);
            };
            let last = others.max(self.last_seq().map_err(AppendError::Failed)?.0);
            let _ = batch_id;
            for (r, seq) in batch.iter_mut().zip(last + 1..) {
                r.seq = Seq(seq);
            }
            self.write(batch).map_err(AppendError::Failed)
        }
        fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
            self.calls.lock().push("write");
            let mut events = self.events.lock();
            for r in batch {
                events.insert(r.seq, r.bytes.clone());
            }
            Ok(())
        }
        fn flush(&self) -> Result<(), LogError> {
            self.calls.lock().push("flush");
            if *self.failing_flush.lock() {
                return Err(LogError::storage("flush failed (test)"));
            }
            Ok(())
        }
        fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
            self.calls.lock().push("discard");
            if *self.failing_discard.lock() {
                return Err(LogError::storage("discard failed (test)"));
            }
            let mut events = self.events.lock();
            for r in batch {
                events.remove(&r.seq);
            }
            Ok(())
        }
        fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
            let events = self.events.lock();
            let after = events.range(after.next()..).take(limit);
            Ok(after.map(|(s, b)| (*s, b.clone())).collect())
        }
        fn read_uid(&self, _: &str, _: Seq, _: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
            Ok(Vec::new())
        }
    }

    fn event() -> Event {
        Event::SystemUidsAdded(SystemUids { uids: Vec::new() })
    }

    fn guard(uid: &str) -> Option<Guard> {
        Some(Guard {
            uid: Uid::parse(uid).unwrap(),
            after: Seq(0),
        })
    }

    fn seqs(recorded: &[RecordedEvent]) -> Vec<u64> {
        recorded.iter().map(|r| r.seq.0).collect()
    }

    #[tokio::test]
    async fn a_batch_that_fails_to_flush_is_taken_back_and_consumes_no_seq() {
        let store = Arc::new(Double::default());
        let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
        assert_eq!(seqs(&log.append(vec![event()]).await.unwrap()), [1]);
        *store.failing_flush.lock() = true;
        let failed = log.append(vec![event(), event()]).await.unwrap_err();
        assert_eq!(
            failed.to_string(),
            "event log storage failed: flush failed (test)"
        );
        assert_eq!(store.events.lock().len(), 1, "taken back");
        *store.failing_flush.lock() = false;
        assert_eq!(seqs(&log.append(vec![event()]).await.unwrap()), [2]);
        assert_eq!(
            *store.calls.lock(),
            ["write", "flush", "write", "flush", "discard", "flush", "write", "flush"]
        );
        log.close().await;
    }

    #[tokio::test]
    async fn a_batch_that_cannot_be_taken_back_poisons_the_writer_until_restart() {
        let store = Arc::new(Double::default());
        let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
        *store.failing_flush.lock() = true;
        *store.failing_discard.lock() = true;
        let failed = log.append(vec![event()]).await.unwrap_err();
        assert_eq!(
            failed.to_string(),
            "event log storage failed: flush failed (test)"
        );
        *store.failing_flush.lock() = false;
        *store.failing_discard.lock() = false;
        let refused = log.append(vec![event()]).await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            "event log storage failed: the event log is in an unknown state after a failed \
             flush; restart the server"
        );
        assert_eq!(*store.calls.lock(), ["write", "flush", "discard"]);
        log.close().await;
    }

    #[tokio::test]
    async fn the_writer_takes_the_seqs_a_shared_store_gave_its_batch() {
        let store = Arc::new(Double::default());
        let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
        assert_eq!(seqs(&log.append(vec![event()]).await.unwrap()), [1]);
        // Other nodes appended seqs 2 to 40 meanwhile.
        *store.shared_last.lock() = Some(40);
        let recorded = log.append(vec![event(), event()]).await.unwrap();
        assert_eq!(seqs(&recorded), [41, 42]);
        assert_eq!(log.last_durable(), Seq(42));
        let read = log.read_after(Seq(1), 10).unwrap();
        assert_eq!(seqs(&read), [41, 42]);
        assert_eq!(read[0].event_id, recorded[0].event_id);
        log.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_guard_sends_back_its_own_command_only_and_the_rest_is_recorded() {
        let store = Arc::new(Double::default());
        *store.shared_last.lock() = Some(0);
        store
            .changed_elsewhere
            .lock()
            .push(Uid::parse("bob").unwrap());
        let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
        // The writer is held in a first batch until all three are queued, so that they make
        // the next batch together.
        let writer_busy = store.events.lock();
        let first = tokio::spawn({
            let log = log.clone();
            async move { log.append(vec![event()]).await }
        });
        // A blocking wait: the lock is held, and the appends run on the runtime's workers.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let appends: Vec<_> = ["ann", "bob", "cy"]
            .into_iter()
            .map(|uid| {
                let log = log.clone();
                tokio::spawn(
                    async move { log.append_guarded(vec![event(), event()], guard(uid)).await },
                )
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(writer_busy);
        assert_eq!(seqs(&first.await.unwrap().unwrap()), [1]);
        let mut outcomes = Vec::new();
        for a in appends {
            outcomes.push(a.await.unwrap());
        }
        assert!(matches!(&outcomes[1], Err(LogError::Conflict(uid)) if uid.as_str() == "bob"));
        let mut recorded: Vec<u64> = [&outcomes[0], &outcomes[2]]
            .into_iter()
            .flat_map(|o| seqs(o.as_ref().unwrap()))
            .collect();
        recorded.sort_unstable();
        assert_eq!(recorded, [2, 3, 4, 5], "dense, without bob's");
        let calls = store.guarded_calls.lock().clone();
        // The three appends are spawned at once: they may be queued in any order.
        let names = |c: &Vec<Uid>| {
            let mut n = c.iter().map(|u| u.as_str().to_owned()).collect::<Vec<_>>();
            n.sort_unstable();
            n
        };
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(names(&calls[1]), ["ann", "bob", "cy"], "one batch");
        assert_eq!(names(&calls[2]), ["ann", "cy"], "again without bob's");
        log.close().await;
    }
}
