//! A log store that fails on demand, for what the server does when its event log cannot be
//! used: every operation failing, or only the flushes (a batch written but never durable).
//!
//! Owns [`Flaky`] and the servers started over it. Promises: with both switches off it is sled,
//! unchanged. Must never fail on its own: only a switch the test set makes it fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wkuser::domain::Seq;
use wkuser::log::{EncodedRecord, LogError, LogStore, SledStore};

use super::{spawn_app_on_store, TestApp};

/// A sled store that fails every operation while `failing` is set, or only its flushes while
/// `failing_flush` is set (the batch is then written but never durable).
pub struct Flaky {
    inner: SledStore,
    failing: Arc<AtomicBool>,
    failing_flush: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), LogError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(LogError::storage("disk on fire (test)"))
        } else {
            Ok(())
        }
    }
}

impl LogStore for Flaky {
    fn last_seq(&self) -> Result<Seq, LogError> {
        self.check()?;
        self.inner.last_seq()
    }
    fn write(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        self.check()?;
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<(), LogError> {
        self.check()?;
        if self.failing_flush.load(Ordering::SeqCst) {
            return Err(LogError::storage("flush failed (test)"));
        }
        self.inner.flush()
    }
    fn flush_beside(&self, appends_flushed: bool) -> Result<(), LogError> {
        self.check()?;
        self.inner.flush_beside(appends_flushed)
    }
    fn discard(&self, batch: &[EncodedRecord]) -> Result<(), LogError> {
        self.check()?;
        self.inner.discard(batch)
    }
    fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.check()?;
        self.inner.read_after(after, limit)
    }
    fn read_uid(
        &self,
        uid: &str,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LogError> {
        self.check()?;
        self.inner.read_uid(uid, after, limit)
    }
}

/// The server over a [`Flaky`] store, with its two switches (all operations, flushes only).
pub async fn flaky_app() -> (TestApp, Arc<AtomicBool>, Arc<AtomicBool>) {
    let (app, failing, failing_flush, _) = flaky_app_and_store().await;
    (app, failing, failing_flush)
}

/// [`flaky_app`], and the store itself, to look past the log's reads (which show durable
/// events only) at what the store holds.
pub async fn flaky_app_and_store() -> (TestApp, Arc<AtomicBool>, Arc<AtomicBool>, Arc<Flaky>) {
    let failing = Arc::new(AtomicBool::new(false));
    let failing_flush = Arc::new(AtomicBool::new(false));
    let (all, flush) = (failing.clone(), failing_flush.clone());
    let opened = Arc::new(std::sync::OnceLock::new());
    let keep = opened.clone();
    let app = spawn_app_on_store(&[], move |dir| {
        let store = Arc::new(Flaky {
            inner: SledStore::open(dir).expect("sled opens"),
            failing: all,
            failing_flush: flush,
        });
        let _ = keep.set(store.clone());
        store
    })
    .await;
    let store = opened.get().expect("the server opened its store").clone();
    (app, failing, failing_flush, store)
}
