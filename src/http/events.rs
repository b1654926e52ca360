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

use super::error::ApiError;
use super::query::Query;
use super::{json_response, ApiState};
use crate::domain::{Seq, Uid};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct EventsPage {
    events: Vec<Box<serde_json::value::RawValue>>,
    last_seq: Seq,
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

#[utoipa::path(get, path = "/events")]
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
