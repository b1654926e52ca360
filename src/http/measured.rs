//! Every API request counted and timed: `wkuser_http_requests_total{route,status}` and
//! `wkuser_http_request_duration_seconds{route}` ([`crate::metrics::atomic::HttpMetrics`]).
//!
//! Wraps the whole API ([`super::front::Front`] and the router behind it), so that the hot path
//! is measured like every other route and a 401 refused at the front door counts too. The route
//! is named from the route table ([`super::openapi`]) by the request's path, before the request
//! is handed on. Promises: two clock reads and three atomic additions per request, no lock, no
//! allocation. Must never: change a request or its answer, or count a request that was never
//! answered (a client gone mid-request is not a status).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::http;
use axum::response::Response;
use tower::Service;

use crate::metrics::atomic::HttpMetrics;

/// The API, measured.
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S> Measured<S> {
    pub fn new(inner: S, metrics: Arc<HttpMetrics>) -> Self {
        Measured { inner, metrics }
    }
}

impl<S, B> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MeasuredCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = self.metrics.route_of(request.uri().path());
        MeasuredCall {
            started: Instant::now(),
            route,
            metrics: self.metrics.clone(),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// One request in hand: its answer, recorded as it comes out.
    pub struct MeasuredCall<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: usize,
        metrics: Arc<HttpMetrics>,
    }
}

impl<F> Future for MeasuredCall<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        if let Ok(response) = &answer {
            this.metrics.record(
                *this.route,
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(answer)
    }
}
