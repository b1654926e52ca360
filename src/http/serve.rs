//! The API's connections: accepted here, each served by hyper's HTTP/1.1 in a task of its own.
//!
//! `axum::serve` does the same job for any service; this loop does it for ours. It leaves out
//! what the API does not use: hyper-util's `auto` builder sniffs each connection's protocol and
//! wraps it for upgrades (the API speaks HTTP/1.1 only; WebSockets have their own port), and
//! axum boxes every request body (the hot path reads hyper's body as it comes; the router's
//! routes still get axum's `Body`). It adds what `axum::serve` lacks: a time limit on the head
//! of every request (`--header-read-timeout`, kept by [`super::quiet`] with a timer per
//! connection rather than hyper's per request; it also closes a keep-alive connection idle for
//! that long, and one that does not read its answer), and a bound on the stop.
//!
//! Promises: once `stop` is cancelled nothing more is accepted, idle connections close, and
//! each busy one finishes the request in hand; whatever is still open [`ApiConnections::grace`]
//! later is closed, and [`serve`] returns when every connection task has ended. Must never: end
//! on an accept error (out of file descriptors is transient: it backs off and retries).

use std::convert::Infallible;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use super::quiet::{Activity, QuietWatch};

/// The time limits of the API's connections.
#[derive(Debug, Clone, Copy)]
pub struct ApiConnections {
    /// How long a connection may take to send the head of its next request.
    pub header_read_timeout: Duration,
    /// How long the stop waits for open requests before it closes their connections.
    pub grace: Duration,
}

/// The first pause after a failed accept; it doubles while accepts keep failing.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `api` on `listener` until `stop` is cancelled, then lets open requests finish.
pub async fn serve<S>(
    listener: TcpListener,
    api: S,
    limits: ApiConnections,
    stop: CancellationToken,
) where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let http = http1::Builder::new();
    let look_every = QuietWatch::period(limits.header_read_timeout);
    let connections = TaskTracker::new();
    let force = CancellationToken::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // That connection is gone; the next one may be fine.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, pause = ?backoff, "accepting an API connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        // An answer written while the one before is still unacknowledged would otherwise wait
        // for the client's delayed ACK (about 40 ms) under Nagle's algorithm: pipelined
        // requests, and any answer written in two pieces, paid it.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an API connection");
        }
        let api = api.clone();
        let activity = Arc::new(Activity::default());
        let mut watch = QuietWatch::new(activity.clone());
        let connection = http.serve_connection(
            TokioIo::new(tcp),
            hyper::service::service_fn(move |request| {
                let in_hand = activity.start();
                let call = api.clone().oneshot(request);
                async move {
                    let answer = call.await;
                    drop(in_hand);
                    answer
                }
            }),
        );
        // A token of its own: it is polled at every wake of the connection, and the parent's
        // lock would be shared by every connection on every core.
        let stop = stop.child_token();
        let force = force.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let start = tokio::time::Instant::now() + look_every;
            let mut looks = tokio::time::interval_at(start, look_every);
            looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stopping = false;
            loop {
                tokio::select! {
                    biased;
                    // An error is the client's (it went away, or sent no valid request).
                    _ = connection.as_mut() => return,
                    _ = stop.cancelled(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    // Polled only once stopping: it is the parent's token, shared by all.
                    _ = force.cancelled(), if stopping => return,
                    // No head for the whole limit. Returning drops the connection, which
                    // closes its socket.
                    _ = looks.tick() => if watch.look() { return },
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "API connections still busy {:?} after the stop; closing them",
            limits.grace
        );
        force.cancel();
        connections.wait().await;
    }
}

/// Errors that concern the one connection being accepted, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
