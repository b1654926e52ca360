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

/// A write beside the log that records itself in the double's calls.
fn beside(store: &Arc<Double>) -> BesideWrite {
    let store = store.clone();
    Box::new(move || {
        store.calls.lock().push("beside");
        Ok(())
    })
}

#[tokio::test]
async fn a_write_beside_an_idle_log_gets_a_flush_of_its_own() {
    let store = Arc::new(Double::default());
    let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
    log.write_beside(beside(&store)).await.unwrap();
    assert_eq!(*store.calls.lock(), ["beside", "flush"]);
    let failing: BesideWrite = Box::new(|| Err(LogError::storage("insert failed (test)")));
    let failed = log.write_beside(failing).await.unwrap_err();
    assert_eq!(
        failed.to_string(),
        "event log storage failed: insert failed (test)"
    );
    assert_eq!(*store.calls.lock(), ["beside", "flush"], "nothing to flush");
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_beside_rides_on_the_flush_of_the_appends_queued_with_it() {
    let store = Arc::new(Double::default());
    let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
    // The writer is held in a first batch until the append and the write beside are queued,
    // so that they make the next round together.
    let writer_busy = store.events.lock();
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(vec![event()]).await }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let second = tokio::spawn({
        let log = log.clone();
        async move { log.append(vec![event()]).await }
    });
    let written = tokio::spawn({
        let (log, write) = (log.clone(), beside(&store));
        async move { log.write_beside(write).await }
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(writer_busy);
    assert_eq!(seqs(&first.await.unwrap().unwrap()), [1]);
    assert_eq!(seqs(&second.await.unwrap().unwrap()), [2]);
    written.await.unwrap().unwrap();
    assert_eq!(
        *store.calls.lock(),
        ["write", "flush", "beside", "write", "flush"],
        "one flush for the second append and the write beside"
    );
    log.close().await;
}

#[tokio::test]
async fn a_poisoned_writer_neither_runs_nor_flushes_a_write_beside() {
    let store = Arc::new(Double::default());
    let log = EventLog::start(store.clone(), NodeId(1)).unwrap();
    *store.failing_flush.lock() = true;
    *store.failing_discard.lock() = true;
    log.append(vec![event()]).await.unwrap_err();
    *store.failing_flush.lock() = false;
    let refused = log.write_beside(beside(&store)).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unknown state after a failed flush"),
        "{refused}"
    );
    assert_eq!(*store.calls.lock(), ["write", "flush", "discard"]);
    log.close().await;
}
