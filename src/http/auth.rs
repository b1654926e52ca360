//! The manager token: when one is configured, every API request but the probes' carries it
//! in the `token` header (upstream's convention). [`super::front`] checks it before anything
//! else sees the request.
//!
//! Promises: the comparison takes the same time whatever the guess (both sides are hashed to
//! 32 bytes, then compared in constant time, so not even the length leaks). Must never: log
//! the header.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The request header that carries the manager token.
pub const HEADER: &str = "token";

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

/// Whether a request for `path` with these headers may use the API: a probe or a file of the
/// console (which holds no data) always, any other only with the manager token when one is
/// configured.
pub fn admits_request(expected: Option<&ManagerToken>, path: &str, headers: &HeaderMap) -> bool {
    PROBES.contains(&path) || super::console::is_public(path) || admits(expected, headers)
}

/// Whether a request with these headers may use the API: always when no manager token is
/// configured, else only with the right one in its `token` header.
pub fn admits(expected: Option<&ManagerToken>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = headers.get(HEADER).map(|v| v.as_bytes());
    presented.is_some_and(|p| expected.admits(p))
}
