//! `GET /cluster/nodes`: the nodes that share this node's database, and how each is doing.
//!
//! Promises `[{"node_id","started_at","lease_expires_at","alive","sessions_open"}]`, ordered by
//! node id: times from the database's clock (RFC 3339, UTC), `alive` while a lease runs and was
//! not given up, the sessions each node holds counted from this node's memory. A node on the
//! embedded storage is a cluster of one: itself, with no lease (`null`). Must never: answer a
//! 500 because the database is away (that is a 503, retry later).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::{ApiError, Envelope};
use super::{json_response, ApiState};
use crate::cluster::lease::NodeRow;

#[utoipa::path(
    get,
    path = "/cluster/nodes",
    tag = "operators",
    responses(
        (status = 200, description = "The nodes sharing this node's database, by node id (this node alone on the embedded storage)", body = Vec<NodeRow>),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn nodes(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let rows = match &state.lease {
        Some(lease) => lease.nodes(&state.write).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the nodes' leases");
            ApiError::Unavailable(super::error::STORAGE_UNAVAILABLE)
        })?,
        None => {
            let sessions_open = state.write.presence().counts().1;
            vec![NodeRow {
                node_id: state.node_id.0,
                started_at: state.started_at.clone(),
                lease_expires_at: None,
                alive: true,
                sessions_open,
            }]
        }
    };
    Ok(json_response(StatusCode::OK, &rows))
}
