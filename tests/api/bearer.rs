//! `Authorization: Bearer <manager token>` (`protocol.md` section 9): taken wherever the `token`
//! header is, on the hot path and through the router alike; a 401 names both ways and the
//! scheme it takes (`WWW-Authenticate`).

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::http_errors::UNAUTHORIZED;

const SECRET: &str = "m4nager-secret";

/// A request with these headers to every kind of route: the hot path (answered by the front),
/// a mutation and a read through the router, an operator route, and an unknown path.
async fn answers(app: &TestApp, headers: &[(&str, &str)]) -> Vec<(String, Answer)> {
    let mut got = Vec::new();
    for (method, path, body) in [
        (Method::POST, "/user/onlinestatus", Some(r#"["u1"]"#)),
        (
            Method::POST,
            "/user/token",
            Some(r#"{"uid":"u1","token":"t","device_flag":1}"#),
        ),
        (Method::GET, "/user/systemuids", None),
        (Method::GET, "/user/sessions?uid=u1", None),
        (Method::GET, "/stats", None),
        (Method::GET, "/nowhere", None),
    ] {
        let answer = app
            .request(
                method.clone(),
                path,
                body.map(|b| b.as_bytes().to_vec()),
                headers,
            )
            .await;
        got.push((format!("{method} {path}"), answer));
    }
    got
}

#[tokio::test]
async fn a_bearer_token_is_taken_wherever_the_token_header_is() {
    let app = spawn_app_with(&["--manager-token", SECRET]).await;
    let bearer = format!("Bearer {SECRET}");
    let lower = format!("bearer  {SECRET}");
    for headers in [
        vec![("token", SECRET)],
        vec![("Authorization", bearer.as_str())],
        vec![("Authorization", lower.as_str())],
        vec![("token", SECRET), ("Authorization", bearer.as_str())],
    ] {
        for (what, answer) in answers(&app, &headers).await {
            let expected = if what.ends_with("/nowhere") { 404 } else { 200 };
            assert_eq!(
                answer.status, expected,
                "{what} {headers:?}: {:?}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn a_wrong_or_missing_bearer_token_is_a_401_that_names_both_ways() {
    let app = spawn_app_with(&["--manager-token", SECRET]).await;
    let wrong_case = format!("Bearer {}", SECRET.to_uppercase());
    let longer = format!("Bearer {SECRET}x");
    let basic = format!("Basic {SECRET}");
    let no_scheme = SECRET.to_string();
    let glued = format!("Bearer{SECRET}");
    let bearer = format!("Bearer {SECRET}");
    for headers in [
        vec![],
        vec![("Authorization", wrong_case.as_str())],
        vec![("Authorization", longer.as_str())],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", no_scheme.as_str())],
        vec![("Authorization", glued.as_str())],
        vec![("Authorization", "Bearer ")],
        // A wrong credential is never outvoted by a right one beside it.
        vec![("token", "wrong"), ("Authorization", bearer.as_str())],
        vec![("token", SECRET), ("Authorization", longer.as_str())],
    ] {
        for (what, answer) in answers(&app, &headers).await {
            assert_eq!(
                answer.pair(),
                (401, envelope(401, UNAUTHORIZED)),
                "{what} {headers:?}"
            );
            assert_eq!(answer.allow, None, "{what}: a 401 names no methods");
        }
    }
    // Both ways are named in the message, and the scheme in the header RFC 9110 asks for.
    assert!(
        UNAUTHORIZED.contains(r#""token" header"#)
            && UNAUTHORIZED.contains("Authorization: Bearer")
    );
    let resp = app
        .http
        .get(app.url("/user/systemuids"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="wkuser""#)
    );
    // The probes still need nothing.
    assert_eq!(app.get("/healthz").await, (200, json!({"status": 200})));
}

#[tokio::test]
async fn without_a_manager_token_a_bearer_header_changes_nothing() {
    let app = spawn_app().await;
    for (what, answer) in answers(&app, &[("Authorization", "Bearer anything")]).await {
        let expected = if what.ends_with("/nowhere") { 404 } else { 200 };
        assert_eq!(answer.status, expected, "{what}: {:?}", answer.body);
    }
}
