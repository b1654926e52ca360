//! `GET /metrics`: the server's metrics as Prometheus text (format 0.0.4), for a Prometheus
//! scrape (`protocol.md` section 9). Guarded by the manager token like every API route (a
//! scrape sends it as `Authorization: Bearer`).
//!
//! Promises: the live counters and histograms ([`crate::metrics::Metrics`]), then what is read
//! at the scrape from where it is kept: the log's last seq, the SQL view's lag, known users,
//! open sockets, readiness, and the build. Must never: walk every user or session (a scrape
//! of a node with a million users stays cheap), or touch SQL.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::error::{ApiError, Envelope};
use super::ApiState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    node_id: String,
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operating",
    responses(
        (status = 200, description = "Prometheus text exposition (format 0.0.4)", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 500, description = "The metrics could not be written", body = Envelope),
    )
)]
pub async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let write = &state.write;
    let last_seq = write.subscribers().last_published().0;
    let mut now = Registry::default();
    let mut gauge = |name: &str, help: &str, value: u64| {
        now.register(name, help, ConstGauge::new(value));
    };
    gauge(
        "wkuser_log_last_seq",
        "The last seq committed to the log and applied to memory (every node's events)",
        last_seq,
    );
    if let Some(projected) = write.metrics().view_projected() {
        gauge(
            "wkuser_view_projected_seq",
            "The last seq the SQL view has applied",
            projected.0,
        );
        gauge(
            "wkuser_view_lag_events",
            "Events committed to the log and not yet applied to the SQL view",
            last_seq.saturating_sub(projected.0),
        );
    }
    gauge(
        "wkuser_known_users",
        "Users memory holds (with a token or a session)",
        write.presence().known_users() as u64,
    );
    gauge(
        "wkuser_open_connections",
        "Open WebSocket sockets, authenticated or not",
        state.gateway.open_connections() as u64,
    );
    gauge(
        "wkuser_ready",
        "1 while /readyz answers 200",
        u64::from(state.ready.load(Ordering::Acquire)),
    );
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: state.node_id.0.to_string(),
        })
        .set(1);
    now.register(
        "wkuser_build_info",
        "This node's version and node id (always 1)",
        build,
    );

    let text = write.metrics().encode(&now).map_err(|e| {
        tracing::error!(error = %e, "the metrics did not encode");
        ApiError::Internal("internal error")
    })?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}
