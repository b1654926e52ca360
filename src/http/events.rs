//! `GET /events[?uid=U][&after=SEQ][&limit=N]`: raw events from the log for operators and for
//! `wkuser events` against a running server.
//!
//! Promises: events in seq order, as stored (token hashes only, never a token), with
//! `last_seq`, the log's durable end, so a follower knows where it stands. Must never: read
//! past the durable end, or read the log on the async runtime's threads.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::error::{ApiError, Envelope};
use super::openapi::UidSchema;
use super::query::Query;
use super::{json_response, ApiState};
use crate::domain::{Seq, Uid};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// A page of the log.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<EventEnvelope>)]
    events: Vec<Box<serde_json::value::RawValue>>,
    /// Every event up to this seq is committed (the other nodes' too, on a shared log).
    #[schema(value_type = u64)]
    last_seq: Seq,
}

// The document's description of `RecordedEvent::to_operator_json`.
/// One event as recorded, with its place in the log.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EventEnvelope {
    seq: u64,
    #[schema(format = "uuid")]
    event_id: String,
    /// Milliseconds since the Unix epoch, by the recording node's clock.
    recorded_at: i64,
    node_id: u64,
    /// TokenUpdated, DeviceQuit, Connected, Disconnected, SystemUidsAdded, SystemUidsRemoved,
    /// NodeStarted or NodeStopped.
    #[schema(rename = "type")]
    kind: String,
    version: u16,
    /// The event's fields, by type (docs/architecture.md, Events).
    data: serde_json::Value,
}

// The document's description of the query; `parse_events_query` reads it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventsParams {
    /// Only this uid's events.
    #[param(value_type = Option<UidSchema>)]
    uid: Option<String>,
    /// Only events after this seq (default 0).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Events per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The parameters of `/events`, parsed.
#[derive(Debug)]
pub struct EventsQuery {
    pub uid: Option<Uid>,
    pub after: Seq,
    /// 1..=[`MAX_LIMIT`].
    pub limit: usize,
}

/// Reads the query string of `/events` (`None`: there was none), or the 400 naming the wrong
/// parameter. Pure; the handler serves exactly this (and `fuzz/` fuzzes it).
pub fn parse_events_query(raw: Option<&str>) -> Result<EventsQuery, ApiError> {
    let query = Query::parse(raw)?;
    let uid = query.get("uid").map(|_| query.uid("uid")).transpose()?;
    let after = Seq(query.int("after", 0, i64::MAX)?.unwrap_or(0) as u64);
    let limit = query
        .int("limit", 1, MAX_LIMIT as i64)?
        .map_or(DEFAULT_LIMIT, |n| n as usize);
    Ok(EventsQuery { uid, after, limit })
}

#[utoipa::path(
    get,
    path = "/events",
    tag = "operators",
    params(EventsParams),
    responses(
        (status = 200, description = "Events in seq order, and the log's last seq", body = EventsPage),
        (status = 400, description = "A wrong parameter (the message names it)", body = Envelope),
        (status = 500, description = "The event log cannot be read right now", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn events(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let EventsQuery { uid, after, limit } = parse_events_query(raw.as_deref())?;
    let log = state.write.log().clone();
    // Everything up to it is committed, the other nodes' events too when the log is shared.
    let last_seq = state.write.subscribers().last_published();
    let events = tokio::task::spawn_blocking(move || match &uid {
        Some(uid) => log.read_uid(uid.as_str(), after, limit),
        None => log.read_after(after, limit),
    })
    .await
    .map_err(|_| ApiError::Internal("internal error"))??;
    Ok(json_response(
        StatusCode::OK,
        &EventsPage {
            events: events
                .iter()
                .filter(|e| e.seq <= last_seq)
                .map(|e| e.to_operator_json())
                .collect(),
            last_seq,
        },
    ))
}
