//! `GET /openapi.json` (`protocol.md` section 9): an OpenAPI 3.1 document of every route, held
//! to the router both ways. The router's own list of routes and methods (read from the router
//! the server builds, not from a list kept here) equals the document's; and over real HTTP,
//! every documented operation is served, and every other method on a documented path is a 405
//! whose `Allow` names exactly the documented ones.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

const SECRET: &str = "doc-secret";

/// The routes the router serves, path to methods, read from the router itself: axum's `Debug`
/// of a router lists each route's id with its methods (`allow_header`) and each id's path.
fn served_by_the_router() -> BTreeMap<String, BTreeSet<String>> {
    let (router, _) = wkuser::http::openapi::table().split_for_parts();
    let text = format!("{router:?}");
    // `RouteId(N): MethodRouter(MethodRouter { ... allow_header: Bytes(b"GET,HEAD") })`
    let mut methods = BTreeMap::new();
    for part in text.split("RouteId(").skip(1) {
        let Some((id, rest)) = part.split_once("): MethodRouter(") else {
            continue;
        };
        let allow = rest
            .split_once("allow_header: Bytes(b\"")
            .and_then(|(_, a)| a.split_once('"'))
            .map(|(a, _)| a)
            .expect("a method router names its methods");
        let set: BTreeSet<String> = allow
            .split(',')
            .filter(|m| *m != "HEAD") // axum serves HEAD with every GET
            .map(str::to_owned)
            .collect();
        methods.insert(id.to_owned(), set);
    }
    // `paths: {RouteId(N): "/path", ...}`
    let paths_part = text
        .split_once("paths: {")
        .map(|(_, p)| p.split_once('}').unwrap().0)
        .expect("the router lists its paths");
    let mut served = BTreeMap::new();
    for entry in paths_part.split(", ") {
        let (id, path) = entry
            .trim_start_matches("RouteId(")
            .split_once("): ")
            .expect("RouteId(N): \"/path\"");
        let path = path.trim_matches('"').to_owned();
        served.insert(path, methods[id].clone());
    }
    served
}

/// The operations of the document, path to methods (upper case).
fn documented(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

async fn document(app: &TestApp) -> Value {
    let answer = app
        .request(
            Method::GET,
            "/openapi.json",
            None,
            &[("Authorization", &format!("Bearer {SECRET}"))],
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    answer.body
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes() {
    let app = spawn_app_with(&["--manager-token", SECRET]).await;
    let doc = document(&app).await;
    let served = served_by_the_router();
    assert!(
        served.len() >= 14 && served.contains_key("/healthz") && served.contains_key("/metrics"),
        "the router's routes were not read: {served:?}"
    );
    assert_eq!(served, documented(&doc));
}

#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method_is() {
    let app = spawn_app_with(&["--manager-token", SECRET]).await;
    let doc = document(&app).await;
    let auth = [("token", SECRET)];
    for (path, methods) in documented(&doc) {
        for method in &methods {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            // An empty body: a route that reads one answers 400, never 404 or 405.
            let body = (method == Method::POST).then(Vec::new);
            let answer = app.request(method.clone(), &path, body, &auth).await;
            assert!(
                ![404, 405].contains(&answer.status) && answer.status < 500,
                "{method} {path} is documented but answered {:?}",
                answer.pair()
            );
        }
        for other in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if methods.contains(other) {
                continue;
            }
            let method = Method::from_bytes(other.as_bytes()).unwrap();
            let answer = app.request(method, &path, None, &auth).await;
            assert_eq!(
                answer.pair(),
                (405, envelope(405, "method not allowed")),
                "{other} {path}"
            );
            let allowed: BTreeSet<String> = answer
                .allow
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| m != "HEAD")
                .collect();
            assert_eq!(allowed, methods, "Allow of {path}");
        }
    }
    // A path the document does not hold is served by nobody.
    let answer = app.request(Method::GET, "/user", None, &auth).await;
    assert_eq!(answer.pair(), (404, envelope(404, "not found")));
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_bodies_answers_and_the_error_envelope() {
    let app = spawn_app_with(&["--manager-token", SECRET]).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = &doc["components"]["schemas"];
    let envelope = &schemas["ErrorEnvelope"];
    assert_eq!(envelope["required"], serde_json::json!(["msg", "status"]));
    // Both ways of sending the manager token, and the probes need neither.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["token"]["name"], "token");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(
        doc["paths"]["/readyz"]["get"]["security"],
        serde_json::json!([{}])
    );

    let envelope_ref = "#/components/schemas/ErrorEnvelope";
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{method} {path}");
            // Every error it may answer is the envelope.
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], envelope_ref, "{method} {path} {status}");
                }
            }
            let guarded = !["/healthz", "/readyz"].contains(&path.as_str());
            assert_eq!(responses.contains_key("401"), guarded, "{method} {path}");
            // A body is described, and so is its 413.
            if method == "post" {
                let body = &op["requestBody"]["content"]["application/json"]["schema"];
                assert!(body.is_object() && *body != Value::Null, "{path}");
                assert!(responses.contains_key("413"), "{path}");
                assert!(responses.contains_key("400"), "{path}");
            }
        }
    }
    // The bodies and answers are the handlers' own types.
    for name in [
        "SetTokenBody",
        "DeviceQuitBody",
        "SystemUidsBody",
        "OnlineRow",
        "SessionsPage",
        "SessionView",
        "EventsPage",
        "EventEnvelope",
        "Stats",
        "NodeRow",
        "Acknowledged",
        "Uid",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    let token = &schemas["SetTokenBody"]["properties"];
    assert_eq!(token["token"]["maxLength"], 4096);
    assert_eq!(token["device_flag"]["maximum"], 255);
    let session_params: Vec<&str> = doc["paths"]["/user/sessions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(session_params, ["uid", "limit", "before"]);
}

#[tokio::test]
async fn the_answers_served_match_their_documented_schemas() {
    // The document's own claim, checked on real answers: each field it requires is there.
    let app = spawn_app().await;
    let (_, doc) = app.get("/openapi.json").await;
    app.set_token("u1", "t", 1, 1).await;
    let _ws = connected(&app, "u1", "t", 1, "d").await;
    for (path, schema) in [
        ("/stats", "Stats"),
        ("/user/sessions?uid=u1", "SessionsPage"),
        ("/events?uid=u1", "EventsPage"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}");
        let required = doc["components"]["schemas"][schema]["required"]
            .as_array()
            .unwrap();
        for field in required {
            let field = field.as_str().unwrap();
            assert!(body.get(field).is_some(), "{path}: no {field} in {body}");
        }
    }
    let (_, nodes) = app.get("/cluster/nodes").await;
    for field in doc["components"]["schemas"]["NodeRow"]["required"]
        .as_array()
        .unwrap()
    {
        assert!(nodes[0].get(field.as_str().unwrap()).is_some(), "{nodes}");
    }
}
