//! `GET /stats`: a few counters of the running server, for the load tool (`wkuser-loadtest`)
//! and for a person with curl.
//!
//! Promises: `{"open_connections","online_sessions","known_users","rss_bytes","last_seq",
//! "webhook_cursor","webhook_pending","webhook_last_error"}`, read from memory (the gateway's
//! socket counter, the presence projection, the log's durable end, the webhook's figures:
//! `null` without a webhook, and `webhook_pending` `null` on a node that does not deliver)
//! and from `/proc/self/status` for the resident set size (`null` where there is no `/proc`).
//! Counting sessions walks every user once, so it is for occasional reads, not for a hot loop.
//! Must never: touch SQL, or fail because a counter is unavailable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::{json_response, ApiState};

/// A few counters of the running server.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Open WebSocket sockets, authenticated or not.
    open_connections: usize,
    /// Open (connected) device sessions in the presence projection.
    online_sessions: usize,
    /// Users the projection holds (with a token or a session).
    known_users: usize,
    /// Resident set size of the process, in bytes.
    rss_bytes: Option<u64>,
    /// The log's last durable seq.
    last_seq: u64,
    /// The last seq the webhook delivered.
    webhook_cursor: Option<u64>,
    /// Webhook entries after the cursor, not yet delivered.
    webhook_pending: Option<u64>,
    /// The webhook's last failure, with its time.
    webhook_last_error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/stats",
    tag = "operators",
    responses((status = 200, description = "Counts read from memory", body = Stats))
)]
pub async fn stats(State(state): State<ApiState>) -> Response {
    let (known_users, online_sessions) = state.write.presence().counts();
    let webhook = state.webhook.as_ref().map(|w| w.figures());
    json_response(
        StatusCode::OK,
        &Stats {
            open_connections: state.gateway.open_connections(),
            online_sessions,
            known_users,
            rss_bytes: rss_bytes(),
            last_seq: state.write.subscribers().last_published().0,
            webhook_cursor: webhook.as_ref().map(|w| w.cursor),
            webhook_pending: webhook.as_ref().and_then(|w| w.pending),
            webhook_last_error: webhook.and_then(|w| w.last_error),
        },
    )
}

/// This process's resident set size (`VmRSS` of `/proc/self/status`), or `None` where it cannot
/// be read.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:   12345 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(n * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\twkuser\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }
}
