//! `POST /user/lastseen` (protocol.md section 8): when each uid was last seen on each flag.
//!
//! Promises: the body is read as `/user/onlinestatus` reads it (a JSON array of at most
//! `max_uids_per_request` valid uids, the same 400s); one row per (uid, flag) that has ever
//! had a session, uids in request order (a uid listed twice answered once), flags ascending;
//! `online` 1 with `last_seen_at` null while a session of that flag is open, else `online` 0
//! and when its latest session ended. Answered from memory only. Must never: touch SQL or the
//! disk.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::body::Body;
use super::error::{ApiError, Envelope};
use super::onlinestatus::parse_online_status;
use super::{json_response, ApiState};
use crate::human::format_ms;

/// One row of the answer: a (uid, flag) that has had a session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Row<'a> {
    uid: &'a str,
    device_flag: u8,
    /// 1 while a session of this flag is open, else 0.
    online: u8,
    /// When the flag's latest session ended (RFC 3339, UTC); null while online.
    last_seen_at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/user/lastseen",
    tag = "users",
    request_body(content = super::openapi::UidList, content_type = "application/json", description = "The uids to look up, as /user/onlinestatus reads them"),
    responses(
        (status = 200, description = "One row per (uid, flag) that has had a session, uids in request order, flags ascending", body = Vec<Row>),
        (status = 400, description = "Malformed JSON, an entry that is not a valid uid (the message names it), or too many", body = Envelope),
    )
)]
pub async fn lastseen(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let uids = parse_online_status(&body.0, state.limits.max_uids_per_request)?;
    let presence = state.write.presence();
    let last_seen = state.write.subscribers().last_seen();
    let mut asked = HashSet::with_capacity(uids.len());
    let mut rows = Vec::new();
    for uid in &uids {
        let uid: &str = uid;
        if !asked.insert(uid) {
            continue;
        }
        let mut online = Vec::new();
        presence.for_each_online_flag(uid, |f| online.push(f));
        let mut ended = Vec::new();
        last_seen.for_each(uid, |f, at| ended.push((f, at)));
        let mut flags: Vec<_> = online
            .iter()
            .copied()
            .chain(ended.iter().map(|e| e.0))
            .collect();
        flags.sort_unstable();
        flags.dedup();
        for flag in flags {
            let is_online = online.contains(&flag);
            let at = ended.iter().find(|(f, _)| *f == flag).map(|(_, at)| *at);
            rows.push(Row {
                uid,
                device_flag: flag.0,
                online: u8::from(is_online),
                last_seen_at: if is_online { None } else { at.map(format_ms) },
            });
        }
    }
    Ok(json_response(StatusCode::OK, &rows))
}
