//! Probes across nodes, for a target of several nodes sharing one log: how long an event
//! acknowledged on one node takes to show on another.
//!
//! - **Tail lag**: a probe user connects on node B; from the moment its connect is acknowledged,
//!   node A is asked `/user/onlinestatus` for it every [`POLL`] until it shows online.
//! - **Cross-node kick**: a probe user connects on node B; `/user/device_quit` is sent to node
//!   A; from A's answer to the close frame on B's socket (zero when the close came first).
//!
//! Node A is the node after B in `--api` order, so every ordered pair of neighbours is probed.
//! Each probe uses a user of its own, registered with the others, so that no probe sees another
//! one's session (a quit also clears the user's token). Promises: probes start at their rate
//! while the churn runs and never more than [`IN_FLIGHT`] at once (a probe due meanwhile is
//! skipped and counted); each is bounded by [`PROBE_LIMIT`]; failures are counted by kind.
//! Must never: count a probe whose event never showed as a latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpConn;
use crate::measure::{Errors, Latencies};
use crate::target::Spread;
use crate::ws::{self, Expect, Frames};

/// How often node A is asked whether the probe user is online yet: the tail lag's resolution.
pub const POLL: Duration = Duration::from_millis(1);
/// The longest a probe waits for its event on the other node.
pub const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// Probes of one kind in flight at once, at most.
const IN_FLIGHT: usize = 16;

/// The probes' users and where they go.
pub struct Plan {
    pub api: Spread,
    pub ws: Spread,
    pub token: Option<String>,
    /// Users for the tail lag probes, one each.
    pub tail: Arc<Frames>,
    /// Users for the kick probes, one each.
    pub kick: Arc<Frames>,
    pub tail_rate: f64,
    pub kick_rate: f64,
}

impl Plan {
    /// How many users `rate` probes a second need for `duration`.
    pub fn users_for(rate: f64, duration: Duration) -> usize {
        (rate * duration.as_secs_f64()).ceil() as usize
    }
}

/// What the probes measured.
#[derive(Debug, Default)]
pub struct AcrossRun {
    pub nodes: usize,
    /// Connect acknowledged on B -> online on A.
    pub tail_lag: Latencies,
    pub tail_errors: Errors,
    pub tail_skipped: u64,
    /// `device_quit` answered on A -> close frame on B.
    pub kick: Latencies,
    /// The close frames that came before A's answer (counted as zero in `kick`).
    pub kick_before_answer: u64,
    pub kick_errors: Errors,
    pub kick_skipped: u64,
}

/// Runs both kinds of probe at their rates for `duration`.
pub async fn probe(plan: &Plan, duration: Duration) -> AcrossRun {
    let tail = paced(
        plan,
        plan.tail_rate,
        plan.tail.uids.len(),
        duration,
        Kind::Tail,
    );
    let kick = paced(
        plan,
        plan.kick_rate,
        plan.kick.uids.len(),
        duration,
        Kind::Kick,
    );
    let (tail, kick) = tokio::join!(tail, kick);
    let mut run = AcrossRun {
        nodes: plan.api.all().len(),
        ..AcrossRun::default()
    };
    (run.tail_skipped, run.kick_skipped) = (tail.skipped, kick.skipped);
    for outcome in tail.outcomes {
        match outcome {
            Ok(Probed { took, .. }) => run.tail_lag.record(took),
            Err(e) => run.tail_errors.add(e),
        }
    }
    for outcome in kick.outcomes {
        match outcome {
            Ok(Probed { took, early }) => {
                run.kick.record(took);
                run.kick_before_answer += u64::from(early);
            }
            Err(e) => run.kick_errors.add(e),
        }
    }
    run
}

#[derive(Clone, Copy)]
enum Kind {
    Tail,
    Kick,
}

struct Probed {
    took: Duration,
    /// A kick whose close frame came before the quit's answer.
    early: bool,
}

struct Paced {
    outcomes: Vec<Result<Probed, String>>,
    skipped: u64,
}

/// Starts probe `i` at `i / rate` seconds, for each user, until `duration` has passed.
async fn paced(plan: &Plan, rate: f64, users: usize, duration: Duration, kind: Kind) -> Paced {
    let mut paced = Paced {
        outcomes: Vec::new(),
        skipped: 0,
    };
    if rate <= 0.0 || users == 0 {
        return paced;
    }
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut probes = JoinSet::new();
    let start = Instant::now();
    let nodes = plan.api.all().len();
    for i in 0..users {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= start + duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            paced.skipped += 1;
            continue;
        };
        // B holds the session; A, the next node, is asked.
        let (b, a) = (i % nodes, (i + 1) % nodes);
        let (ws_b, api_a) = (plan.ws.for_index(b), plan.api.for_index(a));
        let token = plan.token.clone();
        let frames = match kind {
            Kind::Tail => plan.tail.clone(),
            Kind::Kick => plan.kick.clone(),
        };
        probes.spawn(async move {
            let _permit = permit;
            let mut api = HttpConn::new(api_a, token);
            let run = async {
                match kind {
                    Kind::Tail => tail_lag(&mut api, ws_b, &frames, i).await,
                    Kind::Kick => kick(&mut api, ws_b, &frames, i).await,
                }
            };
            match timeout(PROBE_LIMIT + ws_limit(), run).await {
                Ok(outcome) => outcome,
                Err(_) => Err("probe timed out".into()),
            }
        });
    }
    while let Some(done) = probes.join_next().await {
        paced
            .outcomes
            .push(done.unwrap_or_else(|e| Err(format!("probe panicked: {e}"))));
    }
    paced
}

/// The connect's own bound, on top of the probe's wait.
fn ws_limit() -> Duration {
    crate::drive::OP_TIMEOUT
}

/// Connects user `i` on B; from the acknowledgement, asks A until the user shows online.
async fn tail_lag(
    api_a: &mut HttpConn,
    ws_b: std::net::SocketAddr,
    frames: &Frames,
    i: usize,
) -> Result<Probed, String> {
    let opened = timeout(
        ws_limit(),
        ws::open(ws_b, frames.connect(i), Expect::ConnectOk),
    )
    .await
    .map_err(|_| "tail probe: connect timed out".to_string())??;
    let acknowledged = Instant::now();
    let body = serde_json::to_vec(&[&frames.uids[i]]).expect("strings serialize");
    let seen = loop {
        match api_a.post("/user/onlinestatus", &body).await {
            Ok((200, answer)) if shows_online(answer) => break Ok(acknowledged.elapsed()),
            Ok((200, _)) => {}
            Ok((status, answer)) => {
                break Err(format!(
                    "tail probe: onlinestatus answered {status}: {}",
                    String::from_utf8_lossy(answer)
                ))
            }
            Err(e) => break Err(format!("tail probe: onlinestatus: {e}")),
        }
        if acknowledged.elapsed() > PROBE_LIMIT {
            break Err(format!(
                "tail probe: not online on the other node within {} s",
                PROBE_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let _ = timeout(ws_limit(), ws::close(opened.ws)).await;
    seen.map(|took| Probed { took, early: false })
}

/// Whether an onlinestatus answer for one uid says it is online.
fn shows_online(answer: &[u8]) -> bool {
    answer.windows(10).any(|w| w == br#""online":1"#)
}

/// Connects user `i` on B, quits its device on A; from A's answer to the close frame on B.
async fn kick(
    api_a: &mut HttpConn,
    ws_b: std::net::SocketAddr,
    frames: &Frames,
    i: usize,
) -> Result<Probed, String> {
    let opened = timeout(
        ws_limit(),
        ws::open(ws_b, frames.connect(i), Expect::ConnectOk),
    )
    .await
    .map_err(|_| "kick probe: connect timed out".to_string())??;
    // The socket is read from now on, so that the close frame is timed when it arrives.
    let closed = tokio::spawn(async move {
        let mut ws = opened.ws;
        let mut notified = false;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    notified |= t.as_str().contains(r#""method":"disconnect""#)
                        && t.as_str().contains(r#""reasonCode":12"#);
                }
                Some(Ok(Message::Close(_))) => return Ok((Instant::now(), notified)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("kick probe: read: {e}")),
                None => return Err("kick probe: socket ended without a close frame".into()),
            }
        }
    });
    let quit = serde_json::json!({
        "uid": frames.uids[i],
        "device_flag": frames.device_flag,
    })
    .to_string();
    let answered = match api_a.post("/user/device_quit", quit.as_bytes()).await {
        Ok((200, _)) => Instant::now(),
        Ok((status, answer)) => {
            closed.abort();
            return Err(format!(
                "kick probe: device_quit answered {status}: {}",
                String::from_utf8_lossy(answer)
            ));
        }
        Err(e) => {
            closed.abort();
            return Err(format!("kick probe: device_quit: {e}"));
        }
    };
    let (at, notified) = match timeout(PROBE_LIMIT, closed).await {
        Ok(Ok(outcome)) => outcome?,
        Ok(Err(e)) => return Err(format!("kick probe: reader failed: {e}")),
        Err(_) => {
            return Err(format!(
                "kick probe: no close frame on the other node within {} s",
                PROBE_LIMIT.as_secs()
            ))
        }
    };
    if !notified {
        return Err("kick probe: closed without the device quit notification".into());
    }
    Ok(Probed {
        took: at.saturating_duration_since(answered),
        early: at < answered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_shows_online_only_with_a_row() {
        assert!(shows_online(br#"[{"uid":"u","device_flag":1,"online":1}]"#));
        assert!(!shows_online(b"[]"));
    }

    #[test]
    fn users_cover_the_rate_for_the_duration() {
        assert_eq!(Plan::users_for(20.0, Duration::from_secs(20)), 400);
        assert_eq!(Plan::users_for(0.0, Duration::from_secs(20)), 0);
    }
}
