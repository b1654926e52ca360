//! sled's deferred frees, run when the log checkpoints rather than whenever sled gets to them.
//!
//! sled 0.34 frees what a write replaces (a page's old versions, a written-out 512 KiB write
//! buffer) through crossbeam's epoch collector: each free waits in a global queue of bags
//! until no thread can still see it. The queue is emptied only a little at a time: a thread
//! that pins collects at most eight bags every 128 pins. The log's writer pins seldom and
//! replaces much (a spill into sled at each roll of the write-ahead file), so the queue grew
//! with the events appended, tens of bytes each, and was given back only in rare bulk
//! (docs/performance.md, "sled's deferred frees, run at each checkpoint").
//!
//! Owns nothing: it runs the collector. Promises: after [`collect`], every bag that no pinned
//! thread can still see has been freed, up to [`ROUNDS`] times eight bags. Must never: run on
//! the writer's thread (the writer's batches would wait for it), or hold a pin between rounds
//! (a pin held keeps the epoch from advancing).

/// Collection rounds per call: each advances the global epoch by one at most and frees up to
/// eight expired bags of up to 64 frees each, so 256 rounds free up to 131,072 at a checkpoint,
/// far more than a write-ahead file's worth of spills defers.
pub const ROUNDS: usize = 256;

/// Runs the epoch collector on the calling thread until it has collected [`ROUNDS`] times.
pub fn collect() {
    for _ in 0..ROUNDS {
        // A pin's flush moves this thread's own bag to the global queue, tries to advance the
        // epoch, and frees the expired bags at the queue's head.
        crossbeam_epoch::pin().flush();
    }
}
