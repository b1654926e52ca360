//! The API's connections: accepted here, each served by hyper's HTTP/1.1 in a task of its own.
//!
//! `axum::serve` does the same job for any service; this loop does it for ours, without the
//! parts the API does not use: the protocol sniffing and upgrade machinery of hyper-util's
//! `auto` builder (the API speaks HTTP/1.1 only; WebSockets have their own port), the box
//! around every request body (the hot path reads hyper's body as it comes), and a shutdown
//! watch polled at every wake of every connection. Load-tool rounds against `axum::serve`:
//! 65.1k / 63.1k / 66.8k / 64.8k onlinestatus requests/s vs 64.4k / 65.2k / 61.5k / 65.4k.
//! It also bounds the head of a request in time (`--header-read-timeout`): a client that
//! trickles its headers, or holds an idle keep-alive connection, is cut.
//!
//! Promises: at `stop` no connection is accepted any more, every open one finishes the
//! request in hand (idle ones close at once), and [`serve`] returns when all have closed.
//! Must never: end on an accept error (out of file descriptors is transient: it backs off).

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// Serves `api` on `listener` until `stop` is cancelled, then lets open requests finish.
pub async fn serve<S>(
    listener: TcpListener,
    api: S,
    header_read_timeout: Duration,
    stop: CancellationToken,
) where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let api = api.clone();
        let connection = http.serve_connection(
            TokioIo::new(tcp),
            hyper::service::service_fn(move |request| api.clone().call(request)),
        );
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            tokio::select! {
                biased;
                // An error is the client's (it went away, or sent no valid request in time).
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
