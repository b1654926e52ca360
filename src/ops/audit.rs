//! `wkuser audit U`: a user's session history as a table a person reads, current status on top.
//!
//! Works from the SQL view file (a stopped data directory, or a running server's view, read
//! beside it: SQLite allows readers next to the writer) or from a running server's
//! `/user/sessions`. Must never: write to the view.

use std::fmt::Write;

use serde::Deserialize;

/// One row of the history, as `/user/sessions` answers it.
#[derive(Debug, Deserialize)]
pub struct Row {
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

#[derive(Debug, Deserialize)]
pub struct Online {
    pub device_flag: u8,
    pub device_name: String,
}

/// A page of history, as `/user/sessions` answers it.
#[derive(Debug, Deserialize)]
pub struct History {
    pub uid: String,
    pub online: Vec<Online>,
    pub sessions: Vec<Row>,
    #[serde(default)]
    pub next: Option<String>,
}

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

/// Builds the history from the SQL view's records (newest first); the sessions the view holds
/// open give the status.
pub fn from_records(
    uid: &str,
    records: &[crate::view::SessionRecord],
    next: Option<String>,
) -> History {
    use crate::human::format_ms;
    let mut online: Vec<Online> = Vec::new();
    for r in records.iter().filter(|r| r.disconnected_at.is_none()) {
        if !online.iter().any(|o| o.device_flag == r.device_flag.0) {
            online.push(Online {
                device_flag: r.device_flag.0,
                device_name: r.device_flag.name().into_owned(),
            });
        }
    }
    online.sort_by_key(|o| o.device_flag);
    History {
        uid: uid.to_owned(),
        online,
        sessions: records
            .iter()
            .map(|r| Row {
                session_id: r.session_id.to_string(),
                device_flag: r.device_flag.0,
                device_name: r.device_flag.name().into_owned(),
                device_id: r.device_id.as_str().to_owned(),
                device_level: r.device_level.as_u8(),
                node_id: r.node_id.0,
                peer: r.peer.clone(),
                connected_at: format_ms(r.connected_at),
                disconnected_at: r.disconnected_at.map(format_ms),
                reason: r.reason.map(|x| x.as_str().to_owned()),
            })
            .collect(),
        next,
    }
}
