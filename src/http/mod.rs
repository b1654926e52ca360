//! The HTTP API (`protocol.md` section 2; section 4 for operators): axum routes, one file per
//! resource, one error type ([`error::ApiError`]) that renders the contract's envelope. The
//! hot path, `POST /user/onlinestatus`, is served by [`front`] before the router; [`serve`]
//! accepts the connections.
//!
//! Owns the edge between JSON and typed commands: bodies are parsed here, once, into the
//! domain's newtypes by pure `parse_*` functions (public, so that `fuzz/` fuzzes the served
//! code), then handed to the write path or answered from memory. Promises: every
//! error, including 404, 405 and 413, is the `{"msg","status"}` envelope; the manager token
//! guards every request but the probes', whatever its path or method. Must never: panic on input, or answer a mutation before
//! its events are durable.

mod auth;
mod body;
mod cluster;
mod console;
pub mod error;
mod events;
mod front;
mod health;
mod lastseen;
mod measured;
mod metrics;
pub mod onlinestatus;
pub mod openapi;
mod query;
mod quiet;
pub mod serve;
pub mod sessions;
pub mod stats;
mod systemuids;
mod tokens;

use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::{Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::{self, header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use tower::util::Either;
use tower::{Service, ServiceBuilder};

pub use auth::ManagerToken;
use error::ApiError;

use crate::gateway::Gateway;
// The pure parsers behind the handlers, one per request body or query string: bytes in, the
// typed request or the `ApiError` (a 400) out. Each handler calls its parser and nothing else
// reads the input, so what `fuzz/` fuzzes through these is exactly what is served.
pub use events::{parse_events_query, EventsQuery};
pub use onlinestatus::parse_online_status;
pub use sessions::{parse_sessions_query, SessionsQuery};
pub use systemuids::parse_system_uids;
pub use tokens::{parse_device_quit, parse_set_token};

use crate::view::ViewStore;
use crate::write::WritePath;

/// The limits the API enforces.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_body_bytes: usize,
    pub max_uids_per_request: usize,
}

/// What every handler can reach, behind one pointer: axum clones the state for every request.
#[derive(Clone)]
pub struct ApiState(Arc<ApiContext>);

pub struct ApiContext {
    pub write: Arc<WritePath>,
    pub view: Arc<dyn ViewStore>,
    pub limits: ApiLimits,
    pub manager_token: Option<ManagerToken>,
    pub ready: Arc<AtomicBool>,
    /// For `/stats`: the gateway's count of open sockets.
    pub gateway: Arc<Gateway>,
    /// With a shared database: this node's lease, for `/cluster/nodes`.
    pub lease: Option<Arc<crate::cluster::lease::Lease>>,
    pub node_id: crate::domain::NodeId,
    /// With a shared database: whether the log could be read at the last try.
    pub storage_reachable: Option<Arc<AtomicBool>>,
    /// With --webhook-url: the webhook's figures, for `/stats`.
    pub webhook: Option<Arc<crate::webhook::WebhookStatus>>,
    /// When this node started serving (RFC 3339, UTC).
    pub started_at: String,
}

impl ApiState {
    pub fn new(context: ApiContext) -> Self {
        ApiState(Arc::new(context))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiContext;

    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

/// The whole API as one service: the onlinestatus hot path ([`front`]), then the router.
pub fn service<B>(
    state: ApiState,
) -> impl Service<http::Request<B>, Response = Response, Error = Infallible, Future: Send> + Clone + Send
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Into<axum::BoxError>,
{
    let http_metrics = state.write.metrics().http(openapi::paths);
    let front = measured::Measured::new(
        front::Front::new(state.clone(), router(state)),
        http_metrics,
    );
    // A span and events per request cost time even when the log filters them out, on the
    // hottest path there is, so the layer is there only when the log level asks for it
    // (RUST_LOG=tower_http=debug), decided at start.
    if tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG) {
        Either::Left(
            ServiceBuilder::new()
                .map_response(|r: http::Response<_>| r.map(axum::body::Body::new))
                .layer(tower_http::trace::TraceLayer::new_for_http())
                .service(front),
        )
    } else {
        Either::Right(front)
    }
}

/// Every route of the table ([`openapi::table`]); the hot path's POST is served by [`front`]
/// before the router.
fn router(state: ApiState) -> Router {
    let (api, _) = openapi::table().split_for_parts();
    let api = api
        // The console's page and files: not API routes, so not in the OpenAPI document.
        .merge(console::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // No token guard here: [`front`] checks the token before the router sees a request
        // (a guard layered here would sit inside the 405 fallback, whose `Allow` header
        // would tell a caller without the token the path's methods).
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    api.with_state(state)
}

/// `{"status":200}`: the answer of every mutation.
pub fn ok() -> Response {
    raw_json(StatusCode::OK, br#"{"status":200}"#.to_vec())
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => raw_json(status, bytes),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialize");
            raw_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"msg":"internal error","status":500}"#.to_vec(),
            )
        }
    }
}

pub fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}
