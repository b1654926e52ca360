//! What every fuzz target asserts about an answer, shared: an error renders as the contract's
//! 400 envelope (`protocol.md` section 2), and a message never echoes a secret.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::response::IntoResponse;
use serde_json::Value;
use wkuser::http::error::ApiError;

/// Renders `e` exactly as the server answers it and asserts a 400 with the envelope
/// `{"msg":"...","status":400}` (keys in that order, a non-empty message, JSON content type).
/// Returns the message.
pub fn assert_400(e: ApiError) -> String {
    let response = e.into_response();
    assert_eq!(
        response.status().as_u16(),
        400,
        "a parse error must be a 400"
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = ready(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("the envelope is readable");
    assert!(body.starts_with(br#"{"msg":"#), "key order: {body:?}");
    let v: Value = serde_json::from_slice(&body).expect("the envelope is JSON");
    let map = v.as_object().expect("the envelope is an object");
    assert_eq!(map.len(), 2, "{v}");
    assert_eq!(map["status"], 400, "{v}");
    let msg = map["msg"].as_str().expect("msg is a string");
    assert!(!msg.is_empty(), "{v}");
    msg.to_owned()
}

/// The output of a future that must be ready at once (a rendered body is in memory).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory body was not ready"),
    }
}

/// `body` parsed as a JSON object with its string field `name` replaced by `Z`s of the same
/// byte length (so it passes or fails the same length checks), re-serialized; `None` when the
/// body is not such an object. A parser's message must be the same for both bodies: it then
/// cannot depend on, so cannot echo, that field's content.
pub fn with_field_blanked(body: &[u8], name: &str) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let Some(Value::String(s)) = map.get(name) else {
        return None;
    };
    let blank = "Z".repeat(s.len());
    map.insert(name.to_owned(), Value::String(blank));
    Some(serde_json::to_vec(&Value::Object(map)).expect("a Value serializes"))
}
