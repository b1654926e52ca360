//! The manager token: when one is configured, every API request carries it in the `token`
//! header (upstream's convention).
//!
//! Promises: the comparison takes the same time whatever the guess (both sides are hashed to
//! 32 bytes, then compared in constant time, so not even the length leaks). Must never: log
//! the header.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::error::ApiError;

/// The configured manager token, kept only as its digest.
#[derive(Clone)]
pub struct ManagerToken([u8; 32]);

impl ManagerToken {
    pub fn new(token: &str) -> Self {
        ManagerToken(Sha256::digest(token.as_bytes()).into())
    }

    pub fn admits(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&digest).into()
    }
}

/// The probes' paths, which never need the token (`protocol.md` section 2): a load balancer or
/// an orchestrator asks them without any secret.
pub const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// The guard in front of every API request but the probes': a layer written out by hand rather
/// than with `axum::middleware::from_fn`, which boxes a future per request.
#[derive(Clone)]
pub struct RequireManagerToken(pub Option<ManagerToken>);

impl<S> Layer<S> for RequireManagerToken {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            expected: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    expected: Option<ManagerToken>,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let open = PROBES.contains(&request.uri().path());
        if !open && !admits(self.expected.as_ref(), request.headers()) {
            return Either::Left(ready(Ok(ApiError::Unauthorized.into_response())));
        }
        Either::Right(self.inner.call(request))
    }
}

/// Whether a request with these headers may use the API: always when no manager token is
/// configured, else only with the right one in its `token` header.
pub fn admits(expected: Option<&ManagerToken>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = headers.get("token").map(|v| v.as_bytes());
    presented.is_some_and(|p| expected.admits(p))
}
