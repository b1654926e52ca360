//! The API's front door: `POST /user/onlinestatus`, the hot path, is answered here; every other
//! request goes to the router.
//!
//! On the hot path the router's general machinery (path matching, the boxed and cloned route,
//! the body-limit extension, the extractors, a boxed handler future) cost more than the work
//! the request asks for once that work is fast, so the request is recognised by method and path
//! and served by a future written out here: check the manager token, read the body under the
//! limit, answer ([`onlinestatus::answer`]). Every other request has its manager token checked
//! here too, before the router sees it: the router's 405 names the path's methods in `Allow`,
//! which a caller without the token must not learn. Promises: the same answers as every other
//! route: 401 before anything is read, 413 for a body over the limit, 400 for a body that
//! cannot be read, all in the contract's envelope; other methods on the path get the router's
//! 405. Must never: serve any other path or method, or allocate for a body that came in one
//! piece.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{self, header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use futures_util::future::Either;
use tower::Service;

use super::error::ApiError;
use super::{auth, onlinestatus, ApiState};

/// The path served here; the router keeps the 405s for its other methods.
pub const ONLINE_STATUS: &str = "/user/onlinestatus";

/// A request refused before the router: its answer is ready.
type Refused = Ready<Result<Response, Infallible>>;

/// The API as one service: the hot path, then the router.
#[derive(Clone)]
pub struct Front {
    state: ApiState,
    router: Router,
}

impl Front {
    pub fn new(state: ApiState, router: Router) -> Self {
        Front { state, router }
    }
}

impl<B> Service<http::Request<B>> for Front
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<OnlineStatusCall<B>, Either<Refused, RouteFuture<Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is the hot path.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() == Method::POST && request.uri().path() == ONLINE_STATUS {
            return Either::Left(OnlineStatusCall::new(self.state.clone(), request));
        }
        let expected = self.state.manager_token.as_ref();
        if !auth::admits_request(expected, request.uri().path(), request.headers()) {
            return Either::Right(Either::Left(ready(Ok(
                ApiError::Unauthorized.into_response()
            ))));
        }
        Either::Right(Either::Right(self.router.call(request.map(Body::new))))
    }
}

/// One `POST /user/onlinestatus`: reads the body (hyper's own, as the connection delivers it;
/// any body in tests and benches), then answers.
pub struct OnlineStatusCall<B> {
    state: ApiState,
    body: B,
    read: BodyRead,
    /// Set when the request is refused: answered at the next poll, the rest left unread.
    refused: Option<ApiError>,
}

/// What has been read of the body so far.
#[derive(Default)]
enum BodyRead {
    #[default]
    Nothing,
    /// One frame: the whole body of nearly every request, kept without a copy.
    One(Bytes),
    Many(Vec<u8>),
}

impl BodyRead {
    fn as_slice(&self) -> &[u8] {
        match self {
            BodyRead::Nothing => &[],
            BodyRead::One(bytes) => bytes,
            BodyRead::Many(bytes) => bytes,
        }
    }
}

impl<B> OnlineStatusCall<B> {
    fn new(state: ApiState, request: http::Request<B>) -> Self {
        let (parts, body) = request.into_parts();
        let max = state.limits.max_body_bytes;
        let refused = if !auth::admits(state.manager_token.as_ref(), &parts.headers) {
            Some(ApiError::Unauthorized)
        } else if declared_length(&parts.headers).is_some_and(|n| n > max) {
            Some(ApiError::PayloadTooLarge(max))
        } else {
            None
        };
        OnlineStatusCall {
            state,
            body,
            read: BodyRead::Nothing,
            refused,
        }
    }

    /// Adds a frame's bytes, or the 413 once the body is over the limit.
    fn take(&mut self, data: Bytes) -> Result<(), ApiError> {
        self.read = match std::mem::take(&mut self.read) {
            BodyRead::Nothing => BodyRead::One(data),
            before => {
                let mut all = match before {
                    BodyRead::Many(all) => all,
                    one => one.as_slice().to_vec(),
                };
                all.extend_from_slice(&data);
                BodyRead::Many(all)
            }
        };
        let max = self.state.limits.max_body_bytes;
        if self.read.as_slice().len() > max {
            return Err(ApiError::PayloadTooLarge(max));
        }
        Ok(())
    }
}

/// The `Content-Length` a request declares, when it declares one that parses.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<B> Future for OnlineStatusCall<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(refused) = this.refused.take() {
                return Poll::Ready(Ok(refused.into_response()));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => {
                    let body = std::mem::take(&mut this.read);
                    return Poll::Ready(Ok(onlinestatus::answer(&this.state, body.as_slice())));
                }
                // Trailers carry nothing this route reads.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.refused = this.take(data).err();
                    }
                }
                Some(Err(e)) => {
                    this.refused = Some(ApiError::bad(format!("cannot read the body: {e}")));
                }
            }
        }
    }
}
