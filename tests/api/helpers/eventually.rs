//! Waiting for what the server does after its answer: a close recorded once the socket is gone,
//! a user seen offline, a slot freed, a line in a child's log.
//!
//! Owns [`eventually`], the one poll loop of the tests. Promises: it returns as soon as the
//! awaited value is seen, and otherwise fails once [`PATIENCE`] has passed, naming what it
//! awaited and the last value seen. The patience only bounds a failure: a loaded machine makes
//! a test wait longer, never fail. Must never stand in for an assertion of speed; a test whose
//! point is a deadline of the contract measures it itself.

use std::fmt::Debug;
use std::ops::AsyncFnMut;
use std::time::Duration;

/// How long [`eventually`] polls before it fails: far past what any wait of these tests needs.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The pause between two probes.
const PAUSE: Duration = Duration::from_millis(20);

/// Runs `probe` until `holds` accepts its value, with a short pause between runs; returns that
/// value. Panics after [`PATIENCE`], saying what was `awaited` and the last value seen (or that
/// the probe never finished once).
///
/// ```ignore
/// eventually("u1 offline", async || app.online(&["u1"]).await, |now| *now == json!([])).await;
/// ```
pub async fn eventually<T: Debug>(
    awaited: &str,
    probe: impl AsyncFnMut() -> T,
    holds: impl Fn(&T) -> bool,
) -> T {
    poll_until(PATIENCE, awaited, probe, holds).await
}

/// [`eventually`] with a longer `patience`, for a wait the contract itself makes long (a node
/// whose database is away answers each request only once its wait for a connection ends).
pub async fn eventually_within<T: Debug>(
    patience: Duration,
    awaited: &str,
    probe: impl AsyncFnMut() -> T,
    holds: impl Fn(&T) -> bool,
) -> T {
    poll_until(patience, awaited, probe, holds).await
}

/// [`eventually`] with a patience of its own, for this module's tests of the failure.
async fn poll_until<T: Debug>(
    patience: Duration,
    awaited: &str,
    mut probe: impl AsyncFnMut() -> T,
    holds: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let poll = async {
        loop {
            let seen = probe().await;
            if holds(&seen) {
                return seen;
            }
            last = Some(seen);
            tokio::time::sleep(PAUSE).await;
        }
    };
    let outcome = tokio::time::timeout(patience, poll).await;
    match (outcome, last) {
        (Ok(seen), _) => seen,
        (Err(_), Some(last)) => {
            panic!("waited {patience:?} for {awaited}; the last value seen: {last:?}")
        }
        (Err(_), None) => panic!("waited {patience:?} for {awaited}; the probe never finished"),
    }
}

#[tokio::test]
async fn the_first_value_that_holds_is_returned_after_as_many_probes_as_it_takes() {
    let mut probes = 0;
    let seen = eventually(
        "the third probe",
        async || {
            probes += 1;
            probes
        },
        |n| *n >= 3,
    )
    .await;
    assert_eq!((seen, probes), (3, 3));
}

#[tokio::test]
#[should_panic(expected = "for the count to reach 1000; the last value seen: ")]
async fn a_value_that_never_holds_fails_naming_what_was_awaited_and_the_last_value_seen() {
    let mut probes = 0;
    poll_until(
        Duration::from_millis(100),
        "the count to reach 1000",
        async || {
            probes += 1;
            probes
        },
        |n| *n >= 1000,
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "for a probe that hangs; the probe never finished")]
async fn a_probe_that_never_finishes_fails_too() {
    poll_until(
        Duration::from_millis(100),
        "a probe that hangs",
        async || std::future::pending::<()>().await,
        |_| true,
    )
    .await;
}
