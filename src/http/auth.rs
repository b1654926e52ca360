//! The manager token: when one is configured, every API request but the probes' carries it,
//! in the `token` header (upstream's convention) or as `Authorization: Bearer <token>` (what
//! Prometheus and most HTTP tools send). [`super::front`] checks it before anything else sees
//! the request.
//!
//! Promises: the comparison takes the same time whatever the guess (both sides are hashed to
//! 32 bytes, then compared in constant time, so not even the length leaks); a request that
//! carries both is admitted only if both are right (a wrong credential is never outvoted by a
//! right one), judged without a shortcut on the first.
//! Must never: log either header.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The request header that carries the manager token, upstream's way.
pub const HEADER: &str = "token";

/// The scheme of `Authorization` that carries the manager token the other way (RFC 6750).
pub const BEARER: &str = "Bearer";

/// The configured manager token, kept only as its digest.
#[derive(Clone)]
pub struct ManagerToken([u8; 32]);

impl ManagerToken {
    pub fn new(token: &str) -> Self {
        ManagerToken(Sha256::digest(token.as_bytes()).into())
    }

    pub fn admits(&self, presented: &[u8]) -> bool {
        self.matches(presented).into()
    }

    fn matches(&self, presented: &[u8]) -> Choice {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&digest)
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
/// configured, else only when it presents the token (in its `token` header or as a bearer
/// token) and every credential it presents is right.
pub fn admits(expected: Option<&ManagerToken>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    // Each credential presented is compared, and the results combined without branching, so
    // that the time says nothing about which one (if any) was right.
    let judge = |presented: Option<&[u8]>| match presented {
        Some(p) => (Choice::from(1), expected.matches(p)),
        None => (Choice::from(0), Choice::from(1)),
    };
    let (header_sent, header_right) = judge(headers.get(HEADER).map(|v| v.as_bytes()));
    let (bearer_sent, bearer_right) = judge(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_credential(v.as_bytes())),
    );
    ((header_sent | bearer_sent) & header_right & bearer_right).into()
}

/// The credential of an `Authorization: Bearer <credential>` value, or `None` for another
/// scheme or none. The scheme is matched without regard to case (RFC 9110 11.1), and the
/// spaces after it are not part of the credential.
pub fn bearer_credential(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..BEARER.len())?;
    if !scheme.eq_ignore_ascii_case(BEARER.as_bytes()) {
        return None;
    }
    let rest = &value[BEARER.len()..];
    let credential = rest.trim_ascii_start();
    // "Bearertoken" is another scheme's name, not a bearer token; an empty credential is none.
    (credential.len() < rest.len() && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn a_bearer_credential_is_read_whatever_the_scheme_case() {
        assert_eq!(bearer_credential(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_credential(b"bearer   s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_credential(b"BEARER s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_credential(b"Bearers3cret"), None);
        assert_eq!(bearer_credential(b"Bearer "), None);
        assert_eq!(bearer_credential(b"Bearer"), None);
        assert_eq!(bearer_credential(b"Basic czNjcmV0"), None);
        assert_eq!(bearer_credential(b""), None);
    }

    #[test]
    fn either_header_admits_but_a_wrong_one_beside_a_right_one_refuses() {
        let token = ManagerToken::new("s3cret");
        let t = Some(&token);
        assert!(admits(t, &headers(&[("token", "s3cret")])));
        assert!(admits(t, &headers(&[("authorization", "Bearer s3cret")])));
        assert!(admits(
            t,
            &headers(&[("token", "s3cret"), ("authorization", "Bearer s3cret")])
        ));
        assert!(!admits(
            t,
            &headers(&[("token", "wrong"), ("authorization", "Bearer s3cret")])
        ));
        assert!(!admits(
            t,
            &headers(&[("token", "s3cret"), ("authorization", "Bearer wrong")])
        ));
        // Another scheme is no credential of ours: it neither admits nor refuses.
        assert!(admits(
            t,
            &headers(&[("token", "s3cret"), ("authorization", "Basic abc")])
        ));
        assert!(!admits(t, &headers(&[])));
        assert!(!admits(t, &headers(&[("authorization", "Bearer wrong")])));
        assert!(!admits(t, &headers(&[("authorization", "s3cret")])));
        assert!(!admits(t, &headers(&[("authorization", "Basic s3cret")])));
        assert!(admits(None, &headers(&[])));
    }
}
