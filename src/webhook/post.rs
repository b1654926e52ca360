//! The POST of one batch to the application server, as WuKongIM sends `user.onlinestatus`.
//!
//! Owns the request: `URL?event=user.onlinestatus`, `Content-Type: application/json`, the body,
//! the seq-range headers `X-WK-Seq-From` and `X-WK-Seq-To`, and with a secret
//! `X-WK-Signature: sha256=<hex HMAC-SHA256 of the body>`. Promises: a batch counts as
//! delivered only on a 2xx answer within [`TIMEOUT`]; anything else is an error that says what
//! went wrong (the status, a timeout, a refused connection), never the secret. Must never:
//! retry on its own (the delivery loop owns the backoff), or follow a redirect (a 3xx is not
//! a delivery).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Seq;

/// How long the receiver has to answer a batch.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The query parameter WuKongIM names its event with.
pub const EVENT: &str = "user.onlinestatus";

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("the receiver answered {0}")]
    Status(u16),
    #[error(
        "the receiver did not answer within {}",
        humantime::format_duration(TIMEOUT)
    )]
    Timeout,
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
}

/// The application server's webhook endpoint.
pub struct Receiver {
    client: reqwest::Client,
    /// The configured URL with `event=user.onlinestatus` added to its query.
    url: reqwest::Url,
    secret: Option<Vec<u8>>,
}

impl Receiver {
    pub fn new(url: &reqwest::Url, secret: Option<&str>) -> Result<Self, reqwest::Error> {
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("event", EVENT);
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Receiver {
            client,
            url,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        })
    }

    /// The URL batches are posted to, without its query and credentials (for the log).
    pub fn endpoint(&self) -> String {
        format!(
            "{}://{}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or(""),
            self.url
                .port()
                .map_or_else(String::new, |p| format!(":{p}"))
                + self.url.path()
        )
    }

    /// Posts the batch covering the log's seqs `from..=to`.
    pub async fn post(&self, from: Seq, to: Seq, body: Vec<u8>) -> Result<(), PostError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-WK-Seq-From", from.0.to_string())
            .header("X-WK-Seq-To", to.0.to_string());
        if let Some(secret) = &self.secret {
            request = request.header("X-WK-Signature", signature(secret, &body));
        }
        let answer = request.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                PostError::Timeout
            } else {
                PostError::Unreachable(chain(&e))
            }
        })?;
        let status = answer.status();
        // Read the answer to its end, so that the connection can carry the next batch.
        let _ = answer.bytes().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Status(status.as_u16()))
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An error with its causes, innermost last (reqwest's own message names only the URL).
fn chain(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        said.push_str(": ");
        said.push_str(&c.to_string());
        cause = c.source();
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn the_signature_is_rfc_hmac_sha256_in_hex() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_event_is_added_to_the_url_s_query() {
        let url = reqwest::Url::parse("http://user:pw@127.0.0.1:9/hook?app=1").unwrap();
        let receiver = Receiver::new(&url, None).unwrap();
        assert_eq!(
            receiver.url.as_str(),
            "http://user:pw@127.0.0.1:9/hook?app=1&event=user.onlinestatus"
        );
        assert_eq!(receiver.endpoint(), "http://127.0.0.1:9/hook");
    }
}
