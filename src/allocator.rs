//! The process's allocator: mimalloc, and the one thing it is told beyond allocating, which is
//! to give back what a runtime worker's past work left empty when that worker goes idle.
//!
//! Owns the global allocator and the hook the runtime's workers call before they park.
//! mimalloc keeps freed memory with the thread whose heap it came from: a page whose blocks
//! were all freed (often by the other worker, after a session moved between them) is noticed
//! empty, and its memory returned to the OS, only when its owner allocates from it again or
//! collects. A worker that goes idle after a storm of closes does neither, and the server kept
//! every page its closed sessions had touched (docs/performance.md, "Memory after the sessions
//! close"). Promises: a worker collects its heap when it parks, at most once per
//! [`COLLECT_EVERY`]. Must never: collect on every park (a busy worker parks thousands of times
//! a second, and a collection walks the whole heap), or collect another thread's heap
//! (mimalloc's heaps are single-threaded).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Per-thread free lists for every size the request path allocates (see `Cargo.toml`). The
/// `system-allocator` feature leaves the system's malloc in its place, for a heap profiler
/// (heaptrack) that sees malloc's callers and not mimalloc's.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The least time between two collections on one worker: rare enough that the hot path never
/// notices them, often enough that an idle worker's last burst is given back.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

#[cfg(not(feature = "system-allocator"))]
extern "C" {
    /// mimalloc's own (linked through the `mimalloc` crate): frees the calling thread's empty
    /// pages and lets the arenas return the memory they hold past its purge delay.
    fn mi_collect(force: bool);
}

/// When one thread last collected, and whether it is time again.
#[derive(Debug, Default, Clone, Copy)]
struct Pacer {
    last: Option<Instant>,
}

impl Pacer {
    /// True, and the clock restarted, when `now` is [`COLLECT_EVERY`] or more after the last
    /// collection or there was none.
    fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= COLLECT_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}

thread_local! {
    /// This worker's pacer.
    static PACER: Cell<Pacer> = const { Cell::new(Pacer { last: None }) };
}

/// For the runtime's `on_thread_park`: collects this worker's heap when it is due.
pub fn on_worker_park() {
    let now = Instant::now();
    let due = PACER.with(|cell| {
        let mut pacer = cell.get();
        let due = pacer.due(now);
        cell.set(pacer);
        due
    });
    // Under the system allocator there is no mimalloc heap to collect.
    #[cfg(not(feature = "system-allocator"))]
    if due {
        // SAFETY: mi_collect takes no pointer and touches only this thread's heap and the
        // arenas (which are thread-safe); it is sound on any thread at any time.
        unsafe { mi_collect(false) };
    }
    #[cfg(feature = "system-allocator")]
    let _ = due;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_park_collects_then_once_per_interval() {
        let t0 = Instant::now();
        let mut pacer = Pacer::default();
        assert!(
            pacer.due(t0),
            "a worker that never collected collects at once"
        );
        assert!(!pacer.due(t0), "not again at the same instant");
        assert!(
            !pacer.due(t0 + COLLECT_EVERY / 2),
            "not within the interval"
        );
        assert!(
            pacer.due(t0 + COLLECT_EVERY),
            "again once the interval has passed"
        );
        assert!(
            !pacer.due(t0 + COLLECT_EVERY + COLLECT_EVERY / 2),
            "the interval counts from the last collection, not the first"
        );
        assert!(pacer.due(t0 + COLLECT_EVERY * 2));
    }

    #[test]
    fn a_clock_that_seems_to_go_back_does_not_collect() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut pacer = Pacer::default();
        assert!(pacer.due(t0));
        assert!(!pacer.due(t0 - Duration::from_secs(5)));
    }

    #[test]
    fn collecting_on_a_thread_is_sound_and_the_allocator_still_works() {
        let kept: Vec<Box<[u8; 512]>> = (0..10_000).map(|_| Box::new([7; 512])).collect();
        drop(kept);
        on_worker_park();
        let after: Vec<u8> = vec![1; 1 << 20];
        assert_eq!(after.iter().map(|&b| u64::from(b)).sum::<u64>(), 1 << 20);
    }
}
