//! The route table: every route the API serves, each registered once, from the handler's own
//! `#[utoipa::path]` (its method and path), by utoipa-axum's `routes!`. The router
//! ([`super::router`]) and the route labels of the metrics ([`super::measured`]) are both
//! built from [`table`], so a route cannot be served without being listed.
//!
//! Promises: [`table`] is the only place routes are added. Must never: register a route with
//! axum's `route` directly (it would be served and never listed).

use std::sync::LazyLock;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    cluster, events, health, metrics, onlinestatus, sessions, stats, systemuids, tokens, ApiState,
};

/// Every route, with the handler that serves it.
pub fn table() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(tokens::set_token))
        .routes(routes!(tokens::device_quit))
        // Served by the front before the router; known here too, so that a 405 for the
        // path's other methods names POST in its `Allow` header (RFC 9110 15.5.6).
        .routes(routes!(onlinestatus::routed))
        .routes(routes!(systemuids::list))
        .routes(routes!(systemuids::add))
        .routes(routes!(systemuids::remove))
        .routes(routes!(sessions::sessions))
        .routes(routes!(events::events))
        .routes(routes!(stats::stats))
        .routes(routes!(cluster::nodes))
        .routes(routes!(metrics::metrics))
        // `auth::PROBES`: the two paths that need no token.
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The paths of the route table, in the table's document order.
pub fn paths() -> Vec<String> {
    static PATHS: LazyLock<Vec<String>> =
        LazyLock::new(|| table().into_openapi().paths.paths.into_keys().collect());
    PATHS.clone()
}
