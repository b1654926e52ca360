//! `wkuser audit U`: a user's session history as a table a person reads, current status on top.
//!
//! Works from the SQL view file (a stopped data directory, or a running server's view, read
//! beside it: SQLite allows readers next to the writer) or from a running server's
//! `/user/sessions`. Promises: from the view, the status, the page and the seq it is as of are
//! one snapshot of it, however busy the server beside. Must never: write to the view.

use std::fmt::Write;

pub use crate::http::sessions::SessionsPage as History;
use crate::http::sessions::{LastSeenFlag, OnlineFlag, SessionsPage};
use crate::view::HistorySnapshot;

/// Renders the history; `source` says where it came from (shown under the title).
pub fn render(history: &History, source: &str) -> String {
    let mut out = String::new();
    let status = if history.online.is_empty() {
        "offline".to_owned()
    } else {
        let flags: Vec<String> = history
            .online
            .iter()
            .map(|o| format!("{} (flag {})", o.device_name, o.device_flag))
            .collect();
        format!("online on {}", flags.join(", "))
    };
    let _ = writeln!(out, "uid {}: {status}", history.uid);
    if !history.last_seen.is_empty() {
        let seen: Vec<String> = history
            .last_seen
            .iter()
            .map(|s| {
                format!(
                    "{} (flag {}) {}",
                    s.device_name, s.device_flag, s.last_seen_at
                )
            })
            .collect();
        let _ = writeln!(out, "last seen: {}", seen.join(", "));
    }
    let _ = writeln!(out, "source: {source}");
    if history.sessions.is_empty() {
        let _ = writeln!(out, "no sessions recorded");
        return out;
    }
    let headers = [
        "SESSION",
        "DEVICE",
        "DEVICE ID",
        "LEVEL",
        "NODE",
        "PEER",
        "CONNECTED",
        "DISCONNECTED",
        "REASON",
    ];
    let rows: Vec<[String; 9]> = history
        .sessions
        .iter()
        .map(|s| {
            [
                s.session_id.clone(),
                s.device_name.clone(),
                s.device_id.clone(),
                if s.device_level == 1 {
                    "master"
                } else {
                    "slave"
                }
                .to_owned(),
                s.node_id.to_string(),
                s.peer.clone(),
                s.connected_at.clone(),
                s.disconnected_at.clone().unwrap_or_else(|| "-".into()),
                s.reason.clone().unwrap_or_else(|| "(open)".into()),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l
    };
    let _ = writeln!(out, "{}", line(&headers.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    if history.next.is_some() {
        let _ = writeln!(out, "(older sessions not shown: raise --limit)");
    }
    out
}

/// Builds the history from one snapshot of the SQL view: its records (newest first, up to
/// `limit + 1`), the flags it holds a session open on (the status: an open session may be
/// older than the page) and when the others last had a session end.
pub fn from_snapshot(uid: &crate::domain::Uid, snapshot: HistorySnapshot, limit: u32) -> History {
    let last_seen = (snapshot.last_seen.iter())
        .filter(|(flag, _)| !snapshot.open_flags.contains(flag))
        .map(|(flag, at)| LastSeenFlag::new(*flag, *at))
        .collect();
    SessionsPage::new(
        uid,
        snapshot.sessions,
        limit,
        snapshot
            .open_flags
            .into_iter()
            .map(OnlineFlag::from)
            .collect(),
        last_seen,
    )
}
