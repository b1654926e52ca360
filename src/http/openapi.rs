//! The route table and the API's OpenAPI 3.1 document (`GET /openapi.json`, `protocol.md`
//! section 9), both from the handlers' own `#[utoipa::path]` attributes.
//!
//! Every route is registered once, in [`table`], by utoipa-axum's `routes!`, which adds the
//! handler to the router and its path, method, parameters, bodies and answers to the document
//! in one step. The router ([`super::router`]), the route labels of the metrics
//! ([`super::measured`]) and the document ([`document`]) are all built from it, so a route
//! cannot be served without being documented. What the front door answers before any handler
//! (the 401 of a missing manager token, the 413 of a body over the limit) is added to every
//! operation it applies to by [`FrontDoor`], once, rather than repeated on each handler.
//!
//! Promises: the document describes exactly what is served, bodies and errors included.
//! Must never: register a route with axum's `route` directly (it would be served and never
//! documented).

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::Envelope;
use super::{
    auth, cluster, events, health, lastseen, metrics, onlinestatus, sessions, stats, systemuids,
    tokens, ApiState,
};

/// Every route, with the handler that serves it, over the document's frame ([`ApiDoc`]).
pub fn table() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tokens::set_token))
        .routes(routes!(tokens::device_quit))
        // Served by the front before the router; known here too, so that a 405 for the
        // path's other methods names POST in its `Allow` header (RFC 9110 15.5.6).
        .routes(routes!(onlinestatus::routed))
        .routes(routes!(lastseen::lastseen))
        .routes(routes!(systemuids::list))
        .routes(routes!(systemuids::add))
        .routes(routes!(systemuids::remove))
        .routes(routes!(sessions::sessions))
        .routes(routes!(events::events))
        .routes(routes!(stats::stats))
        .routes(routes!(cluster::nodes))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
        // `auth::PROBES`: the two paths that need no token.
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The paths of the route table, in the document's order.
pub fn paths() -> Vec<String> {
    document().paths.paths.keys().cloned().collect()
}

/// The document: the route table's, with what the front door adds.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        let mut document = table().into_openapi();
        FrontDoor.modify(&mut document);
        document
    });
    &DOCUMENT
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operating",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static JSON: LazyLock<Vec<u8>> =
        LazyLock::new(|| serde_json::to_vec(document()).expect("the document serializes"));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        JSON.as_slice(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wkuser",
        description = "The WuKongIM user subsystem: user tokens, device sessions, online status and system uids. \
            Every error is the envelope {\"msg\",\"status\"}. With a manager token configured, every route but \
            /healthz and /readyz needs it, in the `token` header or as `Authorization: Bearer <token>`; without \
            one, no route needs it.",
    ),
    components(schemas(Envelope)),
    modifiers(&ManagerTokenSchemes),
    security(("token" = []), ("bearer" = [])),
    tags(
        (name = "users", description = "What application servers call: tokens, devices, online status, system uids"),
        (name = "operators", description = "Session history, the event log, counts, the cluster"),
        (name = "operating", description = "Probes, metrics and this document"),
    )
)]
struct ApiDoc;

/// The two ways the manager token is sent.
struct ManagerTokenSchemes;

impl Modify for ManagerTokenSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                auth::HEADER,
                "The manager token, upstream's way",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The manager token, as Prometheus and most tools send it",
                    ))
                    .build(),
            ),
        );
    }
}

/// What the front door answers before a handler runs, added to each operation it applies to.
struct FrontDoor;

impl Modify for FrontDoor {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let probe = auth::PROBES.contains(&path.as_str());
            for operation in operations(item) {
                if probe {
                    // No token, whatever is configured.
                    operation.security = Some(vec![Default::default()]);
                } else {
                    add_error(
                        operation,
                        401,
                        "A manager token is configured and the request carries neither the right `token` header nor the right bearer token",
                    );
                }
                if operation.request_body.is_some() {
                    add_error(
                        operation,
                        413,
                        "The body is over the limit (1 MiB by default)",
                    );
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_error(operation: &mut Operation, status: u16, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    Envelope::name(),
                ))))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .insert(status.to_string(), RefOr::T(response));
}

/// `{"status":200}`: the answer of every mutation, once its events are durable.
// `super::ok` writes these bytes itself; a test holds the two equal.
#[derive(Serialize, ToSchema)]
pub struct Acknowledged {
    #[schema(minimum = 200, maximum = 200)]
    pub status: u16,
}

/// A uid: 1 to 255 bytes of UTF-8, no whitespace or control characters, none of `@ # &`,
/// never `____system` (`protocol.md` section 1). The length is counted in bytes; the schema's
/// `maxLength` (characters) is the same for ASCII.
pub struct UidSchema;

/// The uid rule as a pattern. `\s` and the control ranges are Rust's `char::is_whitespace` and
/// `char::is_control` (Unicode White_Space and Cc).
const UID_PATTERN: &str = r"^(?!____system$)[^\s\x00-\x1f\x7f-\x9f@#&]+$";

impl PartialSchema for UidSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(crate::domain::MAX_UID_BYTES))
            .pattern(Some(UID_PATTERN))
            .description(Some(
                "1 to 255 bytes of UTF-8, no whitespace or control characters, none of @ # &, not ____system",
            ))
            .into()
    }
}

impl ToSchema for UidSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "Uid".into()
    }
}

/// A list of uids, at most as many as one request may carry (10,000 by default).
pub struct UidList;

impl PartialSchema for UidList {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                UidSchema::name(),
            )))
            .max_items(Some(10_000))
            .description(Some(
                "At most 10,000 uids by default (--max-uids-per-request)",
            ))
            .into()
    }
}

impl ToSchema for UidList {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UidSchema::name().into(), UidSchema::schema()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acknowledgement_is_what_mutations_answer() {
        let written = serde_json::to_vec(&Acknowledged { status: 200 }).unwrap();
        let served = super::super::ok();
        assert_eq!(served.status(), 200);
        let body =
            futures_util::FutureExt::now_or_never(axum::body::to_bytes(served.into_body(), 1024))
                .unwrap()
                .unwrap();
        assert_eq!(body.as_ref(), written.as_slice());
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_schemes_and_the_envelope() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["token"]["in"], "header");
        assert_eq!(schemes["token"]["name"], "token");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([{}])
        );
    }
}
