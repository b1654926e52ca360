//! `GET /user/sessions?uid=U[&limit=N][&before=SESSION_ID]`: one user's session history for
//! operators (`protocol.md` section 4), newest first, paged.
//!
//! Promises: the current status and last seen (protocol.md section 8: when the latest session
//! of each flag not online now ended) come from memory, the history from the SQL view; `next`
//! is present exactly when an older page exists. Must never: scan other users' rows.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, Envelope};
use super::openapi::UidSchema;
use super::query::Query;
use super::{json_response, ApiState};
use crate::domain::{DeviceFlag, SessionId, Uid};
use crate::human::format_ms;
use crate::view::SessionRecord;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// A flag the user is online on, as the page's `online` list shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnlineFlag {
    pub device_flag: u8,
    pub device_name: String,
}

impl From<DeviceFlag> for OnlineFlag {
    fn from(f: DeviceFlag) -> Self {
        OnlineFlag {
            device_flag: f.0,
            device_name: f.name().into_owned(),
        }
    }
}

/// When a flag the user is not online on last had a session end, as the page's `last_seen`
/// list shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastSeenFlag {
    pub device_flag: u8,
    pub device_name: String,
    pub last_seen_at: String,
}

impl LastSeenFlag {
    pub fn new(flag: DeviceFlag, at: i64) -> Self {
        LastSeenFlag {
            device_flag: flag.0,
            device_name: flag.name().into_owned(),
            last_seen_at: format_ms(at),
        }
    }
}

/// One session as the page shows it (also what `wkuser audit` reads back). Times are RFC 3339,
/// UTC, with milliseconds; an open session has no end and no reason.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    #[schema(format = "uuid")]
    pub session_id: String,
    pub device_flag: u8,
    pub device_name: String,
    pub device_id: String,
    pub device_level: u8,
    pub node_id: u64,
    pub peer: String,
    pub connected_at: String,
    pub disconnected_at: Option<String>,
    pub reason: Option<String>,
}

impl From<&SessionRecord> for SessionView {
    fn from(s: &SessionRecord) -> Self {
        SessionView {
            session_id: s.session_id.to_string(),
            device_flag: s.device_flag.0,
            device_name: s.device_flag.name().into_owned(),
            device_id: s.device_id.as_str().to_owned(),
            device_level: s.device_level.as_u8(),
            node_id: s.node_id.0,
            peer: s.peer.clone(),
            connected_at: format_ms(s.connected_at),
            disconnected_at: s.disconnected_at.map(format_ms),
            reason: s.reason.map(|r| r.as_str().to_owned()),
        }
    }
}

/// The answer of `/user/sessions`; `next` is there exactly when an older page exists.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionsPage {
    pub uid: String,
    pub online: Vec<OnlineFlag>,
    /// Absent from the answers of servers before last seen.
    #[serde(default)]
    pub last_seen: Vec<LastSeenFlag>,
    pub sessions: Vec<SessionView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl SessionsPage {
    /// A page from up to `limit + 1` records, newest first: the extra one only says that an
    /// older page exists.
    pub fn new(
        uid: &Uid,
        mut records: Vec<SessionRecord>,
        limit: u32,
        online: Vec<OnlineFlag>,
        last_seen: Vec<LastSeenFlag>,
    ) -> Self {
        let next = (records.len() > limit as usize).then(|| {
            records.truncate(limit as usize);
            records.last().map(|s| s.session_id.to_string())
        });
        SessionsPage {
            uid: uid.to_string(),
            online,
            last_seen,
            sessions: records.iter().map(SessionView::from).collect(),
            next: next.flatten(),
        }
    }
}

// The document's description of the query; `parse_sessions_query` reads it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SessionsParams {
    #[param(value_type = UidSchema)]
    uid: String,
    /// Sessions per page (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page: sessions older than this one.
    #[param(format = "uuid")]
    before: Option<String>,
}

/// The parameters of `/user/sessions`, parsed.
#[derive(Debug)]
pub struct SessionsQuery {
    pub uid: Uid,
    /// 1..=[`MAX_LIMIT`].
    pub limit: u32,
    pub before: Option<SessionId>,
}

/// Reads the query string of `/user/sessions` (`None`: there was none), or the 400 naming the
/// wrong parameter. Pure; the handler serves exactly this (and `fuzz/` fuzzes it).
pub fn parse_sessions_query(raw: Option<&str>) -> Result<SessionsQuery, ApiError> {
    let query = Query::parse(raw)?;
    let uid = query.uid("uid")?;
    let limit = query
        .int("limit", 1, i64::from(MAX_LIMIT))?
        .map_or(DEFAULT_LIMIT, |n| n as u32);
    let before = match query.get("before") {
        None => None,
        Some(s) => {
            Some(SessionId::parse(s).ok_or_else(|| ApiError::bad("before must be a session id"))?)
        }
    };
    Ok(SessionsQuery { uid, limit, before })
}

#[utoipa::path(
    get,
    path = "/user/sessions",
    tag = "operators",
    params(SessionsParams),
    responses(
        (status = 200, description = "The uid's devices online now, and its sessions, newest first", body = SessionsPage),
        (status = 400, description = "A missing or wrong parameter (the message names it)", body = Envelope),
        (status = 500, description = "The SQL view failed", body = Envelope),
        (status = 503, description = "The shared database is unreachable; retry later", body = Envelope),
    )
)]
pub async fn sessions(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let SessionsQuery { uid, limit, before } = parse_sessions_query(raw.as_deref())?;
    let rows = state.view.sessions(&uid, before, limit + 1).await?;
    let mut flags = Vec::new();
    state
        .write
        .presence()
        .for_each_online_flag(uid.as_str(), |f| flags.push(f));
    let mut last_seen = Vec::new();
    state
        .write
        .subscribers()
        .last_seen()
        .for_each(uid.as_str(), |f, at| {
            if !flags.contains(&f) {
                last_seen.push(LastSeenFlag::new(f, at));
            }
        });
    let online = flags.into_iter().map(OnlineFlag::from).collect();
    Ok(json_response(
        StatusCode::OK,
        &SessionsPage::new(&uid, rows, limit, online, last_seen),
    ))
}
