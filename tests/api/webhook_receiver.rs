//! A webhook receiver for the tests: an application server's endpoint on port 0 that records
//! every batch it gets, checks each signature, and fails on demand (answers an error status,
//! is down with its port closed, or holds a batch while the test kills the sender).
//!
//! Owns [`Receiver`] and the dedupe a real receiver does with the seq headers ([`Receiver::taken`]).
//! Promises: every request is recorded with what it carried and what it was answered; a batch
//! is taken once, by its seq range. Must never answer 2xx to a request it did not record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::eventually;

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub from: u64,
    pub to: u64,
    pub entries: Vec<String>,
    /// The query string (`event=user.onlinestatus`).
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// `None` without a secret; otherwise whether `X-WK-Signature` was right.
    pub signature_ok: Option<bool>,
    /// What the receiver answered.
    pub answered: u16,
}

/// A batch held before its answer: `arrived` gives it, `release` lets the answer go.
pub struct Held {
    pub arrived: oneshot::Receiver<Batch>,
    pub release: oneshot::Sender<()>,
}

#[derive(Default)]
struct Shared {
    batches: Mutex<Vec<Batch>>,
    /// Statuses to answer the next requests with, in order (then 200).
    failures: Mutex<std::collections::VecDeque<u16>>,
    secret: Option<String>,
    hold: Mutex<Option<(oneshot::Sender<Batch>, oneshot::Receiver<()>)>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    serving: Mutex<Option<(JoinHandle<()>, oneshot::Sender<()>)>>,
}

impl Receiver {
    /// Listens on a free port of loopback; checks signatures with `secret` when given.
    pub async fn start(secret: Option<&str>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            shared: Arc::new(Shared {
                secret: secret.map(str::to_owned),
                ..Default::default()
            }),
            serving: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        *self.serving.lock() = Some((task, stop));
    }

    /// The URL to give the server.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Closes the port (and every connection): the sender finds nobody there.
    pub async fn down(&self) {
        let serving = self.serving.lock().take();
        if let Some((task, stop)) = serving {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the receiver stops")
                .unwrap();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("the receiver's port again");
        self.serve(listener);
    }

    /// Answers the next requests with `statuses`, one each, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.shared.failures.lock().extend(statuses.iter().copied());
    }

    /// Holds the next batch after recording it as taken, until the test releases it.
    pub fn hold_next(&self) -> Held {
        let (arrive, arrived) = oneshot::channel();
        let (release, released) = oneshot::channel();
        *self.shared.hold.lock() = Some((arrive, released));
        Held { arrived, release }
    }

    /// Every request so far, in arrival order.
    pub fn batches(&self) -> Vec<Batch> {
        self.shared.batches.lock().clone()
    }

    /// The entries taken, as a receiver that dedupes with the seq headers takes them: each
    /// batch answered 2xx once, a batch whose range was taken already dropped. Panics on a
    /// batch that overlaps a taken one only in part (the protocol resends a batch exactly), or
    /// that goes back before the last one taken.
    pub fn taken(&self) -> Vec<String> {
        let mut last_to = 0;
        let mut taken = Vec::new();
        let mut ranges = std::collections::HashSet::new();
        for b in self.batches().into_iter().filter(|b| b.answered == 200) {
            if b.to <= last_to {
                assert!(
                    ranges.contains(&(b.from, b.to)),
                    "a batch {}..={} overlaps the taken ones in part (last taken to {last_to})",
                    b.from,
                    b.to
                );
                continue;
            }
            assert!(
                b.from > last_to,
                "batch {}..={} overlaps {last_to}",
                b.from,
                b.to
            );
            ranges.insert((b.from, b.to));
            last_to = b.to;
            taken.extend(b.entries);
        }
        taken
    }

    /// Waits until `n` entries are taken; returns them.
    pub async fn wait_taken(&self, n: usize) -> Vec<String> {
        eventually(
            &format!("{n} webhook entries taken"),
            async || self.taken(),
            |t| t.len() >= n,
        )
        .await
    }
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seq = |name: &str| {
        header(name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing or not a number"))
    };
    let signature_ok = shared
        .secret
        .as_ref()
        .map(|secret| header("x-wk-signature") == Some(sign(secret, &body)));
    let answered = {
        let next = shared.failures.lock().pop_front();
        next.unwrap_or(200)
    };
    let batch = Batch {
        from: seq("x-wk-seq-from"),
        to: seq("x-wk-seq-to"),
        entries: serde_json::from_slice(&body).expect("the body is a JSON array of strings"),
        query,
        content_type: header("content-type"),
        signature_ok,
        answered,
    };
    shared.batches.lock().push(batch.clone());
    if answered == 200 {
        let hold = shared.hold.lock().take();
        if let Some((arrive, released)) = hold {
            let _ = arrive.send(batch);
            let _ = released.await;
        }
    }
    StatusCode::from_u16(answered).unwrap()
}

/// `sha256=<hex HMAC-SHA256 of body>`, computed here with the HMAC crate, not the server's code.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The entries a log's events make, by a naive model of the contract: one per `Connected` and
/// per `Disconnected`, connId the `Connected`'s seq, counts of the open sessions of the uid on
/// the flag and on every flag just after the event.
pub fn expected_entries(events: &[wkuser::domain::RecordedEvent]) -> Vec<String> {
    use wkuser::domain::Event;
    let mut open: Vec<(wkuser::domain::SessionId, String, u8, u64)> = Vec::new();
    let mut out = Vec::new();
    for r in events {
        let (uid, flag, online, conn) = match &r.event {
            Event::Connected(c) => {
                open.push((c.session_id, c.uid.to_string(), c.device_flag.0, r.seq.0));
                (c.uid.to_string(), c.device_flag.0, 1, r.seq.0)
            }
            Event::Disconnected(d) => {
                let at = open
                    .iter()
                    .position(|s| s.0 == d.session_id)
                    .expect("a session closes after it opened");
                let (_, uid, flag, conn) = open.remove(at);
                (uid, flag, 0, conn)
            }
            _ => continue,
        };
        let device = open.iter().filter(|s| s.1 == uid && s.2 == flag).count();
        let total = open.iter().filter(|s| s.1 == uid).count();
        out.push(format!("{uid}-{flag}-{online}-{conn}-{device}-{total}"));
    }
    out
}

/// Asserts that `taken` is `expected`, naming the first place they differ (the lists are long).
pub fn assert_same_entries(taken: &[String], expected: &[String]) {
    if taken == expected {
        return;
    }
    let at = taken
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(taken.len().min(expected.len()));
    let around = |l: &[String]| l[at.saturating_sub(3)..(at + 4).min(l.len())].to_vec();
    panic!(
        "{} entries taken, {} expected; first difference at {at}: taken {:?}, expected {:?}",
        taken.len(),
        expected.len(),
        around(taken),
        around(expected)
    );
}
