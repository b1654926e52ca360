//! The API's head limit (`--header-read-timeout`), kept with one timer per connection instead
//! of one per request.
//!
//! hyper can bound the time a connection takes to send each request head itself, but it arms a
//! tokio timer for every request: a boxed sleep, an insert into the timer wheel and a removal,
//! each under the wheel's lock, and a clock read: on the onlinestatus path, more than the
//! hashing of the request's uids. Here a connection
//! instead counts the requests it starts (hyper calls the service once a head is whole) and
//! finishes ([`Activity`]); a [`QuietWatch`] looks at the counts every quarter of the limit,
//! and a connection whose counts stood still, with no request in hand, for four looks in a row
//! has sent no head for the whole limit: it is closed.
//!
//! Promises: a connection is never cut while a request is in hand, nor before the limit has
//! passed since its accept or its last request began or ended; one that trickles a head, sits
//! idle, or does not read its answer is cut at most a quarter of the limit after that. Must
//! never: cost a request more than a few uncontended atomic operations (two counts and an
//! `Arc`'s, on the connection's own lines), nor a wake of the connection more than a poll of
//! its one timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Looks per limit: a connection is cut between the limit and this fraction more.
const LOOKS_PER_LIMIT: u32 = 4;

/// What one connection's requests have done: counted by the service, read by its watch.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// Counts a request whose head is whole; it is in hand until the returned guard drops.
    pub fn start(self: &Arc<Self>) -> InHand {
        self.started.fetch_add(1, Ordering::Relaxed);
        InHand(self.clone())
    }

    fn counts(&self) -> (u64, u64) {
        // `finished` first: a request that ends between the two loads is still seen in hand.
        let finished = self.finished.load(Ordering::Relaxed);
        (self.started.load(Ordering::Relaxed), finished)
    }
}

/// A request in hand: from its head until its answer is ready (or it is dropped).
#[derive(Debug)]
pub struct InHand(Arc<Activity>);

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Watches one connection's [`Activity`] for a whole limit without a head.
#[derive(Debug)]
pub struct QuietWatch {
    activity: Arc<Activity>,
    seen: (u64, u64),
    quiet_looks: u32,
}

impl QuietWatch {
    pub fn new(activity: Arc<Activity>) -> Self {
        QuietWatch {
            activity,
            seen: (0, 0),
            quiet_looks: 0,
        }
    }

    /// How often to [`look`](Self::look) for a head limit of `limit`.
    pub fn period(limit: Duration) -> Duration {
        (limit / LOOKS_PER_LIMIT).max(Duration::from_millis(1))
    }

    /// One look, every [`period`](Self::period): true once the connection has been quiet, with
    /// nothing in hand, for the whole limit.
    pub fn look(&mut self) -> bool {
        let now = self.activity.counts();
        let in_hand = now.0 != now.1;
        if now != self.seen || in_hand {
            self.seen = now;
            self.quiet_looks = 0;
        } else {
            self.quiet_looks += 1;
        }
        self.quiet_looks >= LOOKS_PER_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_cut_after_four_quiet_looks_and_never_with_a_request_in_hand() {
        let activity = Arc::new(Activity::default());
        let mut watch = QuietWatch::new(activity.clone());
        // Accepted and silent: cut at the fourth look, a whole limit after the accept.
        assert_eq!([(); 4].map(|_| watch.look()), [false, false, false, true]);

        let mut watch = QuietWatch::new(activity.clone());
        let request = activity.start();
        // A request in hand for longer than the limit is never cut.
        assert!((0..10).all(|_| !watch.look()));
        drop(request);
        // Its end is activity: the count starts again from the look that sees it.
        assert_eq!(
            [(); 5].map(|_| watch.look()),
            [false, false, false, false, true]
        );

        // A head between two looks puts the count back to zero.
        let mut watch = QuietWatch::new(activity.clone());
        assert!(!watch.look() && !watch.look() && !watch.look());
        drop(activity.start());
        assert_eq!(
            [(); 5].map(|_| watch.look()),
            [false, false, false, false, true]
        );
    }

    #[test]
    fn the_period_is_a_quarter_of_the_limit_and_never_zero() {
        assert_eq!(
            QuietWatch::period(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            QuietWatch::period(Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
    }
}
