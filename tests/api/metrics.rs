//! `GET /metrics` (`protocol.md` section 9): Prometheus text, read back with a parser of the
//! format (`prometheus-parse`), every line of it required to parse. The counters are watched
//! moving as things happen: a connect of each result, every reason a session can end (one node,
//! a restart after a crash, a node lost from a cluster), the API's requests, the appends.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::SinkExt;
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wkuser::domain::CloseReason;

use crate::helpers::*;

/// A scrape, parsed: every line must be a comment the format knows or a sample.
pub fn parse(text: &str) -> Scrape {
    for line in text.lines() {
        let known = matches!(
            LineInfo::parse(line),
            LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. }
        );
        assert!(known, "a line that is not Prometheus text: {line:?}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text parses")
}

/// `GET /metrics` with these headers: the status, and the text parsed when it is a 200.
pub async fn scrape_with(api: &str, headers: &[(&str, &str)]) -> (u16, Option<Scrape>) {
    let mut request = reqwest::Client::new().get(format!("{api}/metrics"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let resp = request.send().await.expect("scrape sent");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    (status, Some(parse(&resp.text().await.unwrap())))
}

pub async fn scrape(api: &str) -> Scrape {
    let (status, scrape) = scrape_with(api, &[]).await;
    assert_eq!(status, 200);
    scrape.unwrap()
}

/// The value of the sample `name` whose labels include `labels` (a counter, a gauge, or the
/// count of a histogram), or `None` when there is none.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    Some(match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .map(|b| b.count)
            .expect("a histogram has its +Inf bucket"),
        Value::Summary(_) => panic!("{name} is a summary"),
    })
}

fn must(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

/// `wkuser_disconnects_total` by reason: every reason of section 3.4 must be there.
fn disconnects(scrape: &Scrape) -> BTreeMap<&'static str, f64> {
    CloseReason::ALL
        .iter()
        .map(|r| {
            let name = r.as_str();
            (
                name,
                must(scrape, "wkuser_disconnects_total", &[("reason", name)]),
            )
        })
        .collect()
}

fn connects(scrape: &Scrape, result: &str) -> f64 {
    must(scrape, "wkuser_connects_total", &[("result", result)])
}

fn sessions_open(scrape: &Scrape, flag: &str) -> f64 {
    value(scrape, "wkuser_sessions_open", &[("device_flag", flag)]).unwrap_or(0.0)
}

#[tokio::test]
async fn connects_of_every_result_move_their_counters_and_the_gauges_follow() {
    let app = spawn_app().await;
    let before = scrape(&app.api).await;
    for result in ["ok", "auth_fail", "system_error"] {
        assert_eq!(connects(&before, result), 0.0, "{result}");
    }
    assert_eq!(must(&before, "wkuser_known_users", &[]), 0.0);
    // The process metrics every client library exports.
    assert!(must(&before, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(must(&before, "process_open_fds", &[]) > 0.0);
    assert!(must(&before, "process_max_fds", &[]) > 0.0);
    assert!(must(&before, "process_start_time_seconds", &[]) > 1.6e9);
    assert!(value(&before, "process_cpu_seconds_total", &[]).is_some());

    app.set_token("u1", "t1", 1, 0).await;
    app.set_token("u2", "t2", 3, 0).await;
    let mut ok1 = connected(&app, "u1", "t1", 1, "d1").await;
    let _ok2 = connected(&app, "u2", "t2", 3, "d2").await;
    let (_refused, answer) = app.ws_connect("u1", "wrong", 1, "d3").await;
    assert_eq!(answer["error"]["code"], 2, "{answer}");
    // Bad params are an auth failure too (protocol.md 3.2).
    let (_bad, answer) = app.ws_connect("bad uid", "t1", 1, "d4").await;
    assert_eq!(answer["error"]["code"], 2, "{answer}");
    app.post("/user/onlinestatus", &json!(["u1", "u2"])).await;
    app.get("/no/such/path").await;

    let after = scrape(&app.api).await;
    assert_eq!(connects(&after, "ok"), 2.0);
    assert_eq!(connects(&after, "auth_fail"), 2.0);
    assert_eq!(connects(&after, "system_error"), 0.0);
    assert_eq!(sessions_open(&after, "1"), 1.0);
    assert_eq!(sessions_open(&after, "3"), 1.0);
    assert_eq!(must(&after, "wkuser_known_users", &[]), 2.0);
    assert!(must(&after, "wkuser_open_connections", &[]) >= 2.0);
    assert_eq!(must(&after, "wkuser_ready", &[]), 1.0);
    let events = |kind| must(&after, "wkuser_events_appended_total", &[("type", kind)]);
    assert_eq!(events("TokenUpdated"), 2.0);
    assert_eq!(events("Connected"), 2.0);
    assert_eq!(events("NodeStarted"), 1.0);
    // Every append was timed: the node's start, two tokens, two connects.
    assert_eq!(must(&after, "wkuser_log_append_duration_seconds", &[]), 5.0);
    let (_, stats) = app.get("/stats").await;
    assert_eq!(
        must(&after, "wkuser_log_last_seq", &[]),
        stats["last_seq"].as_f64().unwrap()
    );
    // The API's requests, by the route table's path; a path no route serves is `unmatched`.
    let http = |route, status| {
        value(
            &after,
            "wkuser_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(http("/user/token", "200"), Some(2.0));
    assert_eq!(http("/user/onlinestatus", "200"), Some(1.0));
    assert_eq!(http("unmatched", "404"), Some(1.0));
    assert_eq!(http("/metrics", "200"), Some(1.0), "the first scrape");
    assert_eq!(
        value(
            &after,
            "wkuser_http_request_duration_seconds",
            &[("route", "/user/onlinestatus")]
        ),
        Some(1.0)
    );
    // The view catches up: its lag drops to 0.
    eventually(
        "the view caught up",
        async || value(&scrape(&app.api).await, "wkuser_view_lag_events", &[]),
        |lag| *lag == Some(0.0),
    )
    .await;

    // A session's end takes it out of the gauge.
    ok1.send(Message::Close(None)).await.unwrap();
    let closed = eventually(
        "u1's session closed",
        async || scrape(&app.api).await,
        |s| sessions_open(s, "1") == 0.0,
    )
    .await;
    assert_eq!(disconnects(&closed)["client_closed"], 1.0);
    assert_eq!(sessions_open(&closed, "3"), 1.0);
}

#[tokio::test]
async fn a_connect_the_log_cannot_record_counts_as_a_system_error() {
    let (app, failing, _) = flaky_app().await;
    app.set_token("u1", "t", 1, 0).await;
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_ws, answer) = app.ws_connect("u1", "t", 1, "d").await;
    assert_eq!(answer["error"]["code"], 15, "{answer}");
    let seen = scrape(&app.api).await;
    assert_eq!(connects(&seen, "system_error"), 1.0);
    assert_eq!(connects(&seen, "ok"), 0.0);
    assert!(must(&seen, "wkuser_log_append_failures_total", &[]) >= 1.0);
    assert_eq!(sessions_open(&seen, "1"), 0.0);
}

#[tokio::test]
async fn metrics_take_the_manager_token_as_prometheus_sends_it() {
    let app = spawn_app_with(&["--manager-token", "scrape-secret"]).await;
    assert_eq!(scrape_with(&app.api, &[]).await.0, 401);
    assert_eq!(
        scrape_with(&app.api, &[("Authorization", "Bearer nope")])
            .await
            .0,
        401
    );
    let (status, scrape) =
        scrape_with(&app.api, &[("Authorization", "Bearer scrape-secret")]).await;
    assert_eq!(status, 200);
    // The refused scrapes are counted, under their route.
    assert_eq!(
        value(
            &scrape.unwrap(),
            "wkuser_http_requests_total",
            &[("route", "/metrics"), ("status", "401")]
        ),
        Some(2.0)
    );
    assert_eq!(
        scrape_with(&app.api, &[("token", "scrape-secret")]).await.0,
        200
    );
}

/// Waits until the scrape shows `reason` counted `n` times, then checks that no other reason
/// moved from `expected` (which it updates).
async fn counted(app: &TestApp, expected: &mut BTreeMap<&'static str, f64>, reason: &str) {
    let want = expected[reason] + 1.0;
    *expected.get_mut(reason).unwrap() = want;
    let seen = eventually(
        &format!("{reason} counted"),
        async || disconnects(&scrape(&app.api).await),
        |seen| seen[reason] == want,
    )
    .await;
    assert_eq!(&seen, expected, "after {reason}");
}

#[tokio::test]
async fn every_way_a_session_ends_on_one_node_moves_its_reason() {
    let mut app = spawn_app().await;
    let mut expected = disconnects(&scrape(&app.api).await);
    assert!(expected.values().all(|n| *n == 0.0), "{expected:?}");

    // client_closed: a close frame.
    app.set_token("cc", "t", 1, 0).await;
    let mut ws = connected(&app, "cc", "t", 1, "d").await;
    ws.send(Message::Close(None)).await.unwrap();
    counted(&app, &mut expected, "client_closed").await;

    // device_quit: kicked by /user/device_quit.
    app.set_token("dq", "t", 1, 0).await;
    let _ws = connected(&app, "dq", "t", 1, "d").await;
    app.device_quit("dq", 1).await;
    counted(&app, &mut expected, "device_quit").await;

    // master_login: a master connect of another device.
    app.set_token("ml", "t", 1, 1).await;
    let _first = connected(&app, "ml", "t", 1, "d1").await;
    let _second = connected(&app, "ml", "t", 1, "d2").await;
    counted(&app, &mut expected, "master_login").await;

    // token_updated: a master /user/token.
    app.set_token("tu", "t", 1, 0).await;
    let _ws = connected(&app, "tu", "t", 1, "d").await;
    app.set_token("tu", "t2", 1, 1).await;
    counted(&app, &mut expected, "token_updated").await;

    // replaced: the same device connects again.
    app.set_token("rp", "t", 1, 0).await;
    let _first = connected(&app, "rp", "t", 1, "same").await;
    let _again = connected(&app, "rp", "t", 1, "same").await;
    counted(&app, &mut expected, "replaced").await;

    // protocol_error: a binary frame after connect.
    app.set_token("pe", "t", 1, 0).await;
    let mut ws = connected(&app, "pe", "t", 1, "d").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    counted(&app, &mut expected, "protocol_error").await;

    // slow_consumer: a client that never reads its answers.
    app.set_token("sc", "t", 1, 0).await;
    let (_unread, writer) = flooding_client(&app, "sc", "t", 1).await;
    counted(&app, &mut expected, "slow_consumer").await;
    writer.abort();

    // Open now: ml's second device, rp's second connect (the others ended).
    let open = eventually(
        "the sessions gauge settled",
        async || sessions_open(&scrape(&app.api).await, "1"),
        |n| *n == 2.0,
    )
    .await;
    assert_eq!(open, 2.0);

    // server_shutdown: the stop closes both. The API stops with the server, so the counters
    // are read from the stopped server's registry, encoded as /metrics encodes them.
    let metrics = app.server().write_path().metrics().clone();
    app.stop().await;
    let text = metrics
        .encode(&prometheus_client::registry::Registry::default())
        .unwrap();
    let stopped = parse(&text);
    *expected.get_mut("server_shutdown").unwrap() = 2.0;
    assert_eq!(disconnects(&stopped), expected);
    assert_eq!(sessions_open(&stopped, "1"), 0.0);
}

#[tokio::test]
async fn an_idle_session_is_counted_as_idle_timeout() {
    let app = spawn_app_with(&["--idle-timeout", "1s", "--slow-reader-limit", "300ms"]).await;
    app.set_token("idle", "t", 2, 0).await;
    let _ws = connected(&app, "idle", "t", 2, "d").await;
    let seen = eventually(
        "the idle session counted",
        async || scrape(&app.api).await,
        |s| disconnects(s)["idle_timeout"] == 1.0 && sessions_open(s, "2") == 0.0,
    )
    .await;
    assert_eq!(disconnects(&seen).values().sum::<f64>(), 1.0);
}

#[tokio::test]
async fn sessions_a_crash_left_open_are_counted_as_server_restart_by_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let node = start_node(data.path()).await;
    let http = reqwest::Client::new();
    node.post_ok(
        &http,
        "/user/token",
        json!({"uid": "crash", "token": "t", "device_flag": 1}),
    )
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws).await.unwrap();
    ws.send(Message::text(easy_connect(
        "crash",
        "t",
        "d",
        1,
        now_ms(),
        "c1",
    )))
    .await
    .unwrap();
    let answer = next_json(&mut ws).await.unwrap();
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    assert_eq!(sessions_open(&scrape(&node.api).await, "1"), 1.0);
    node.sigkill().await;

    let again = start_node(data.path()).await;
    let seen = scrape(&again.api).await;
    assert_eq!(disconnects(&seen)["server_restart"], 1.0);
    assert_eq!(disconnects(&seen).values().sum::<f64>(), 1.0);
    assert_eq!(sessions_open(&seen, "1"), 0.0);
    again.sigterm_and_wait().await;
}

#[tokio::test]
async fn a_lost_node_s_sessions_are_counted_once_as_node_lost_by_the_peer_that_closed_them() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let node = async |id: &str| {
        let dir = data.path().join(format!("node{id}"));
        let flags = [
            "--database-url",
            &db.url,
            "--node-id",
            id,
            "--node-lease",
            "1s",
        ];
        start_node_with(&dir, "info", &flags).await
    };
    let a = node("1").await;
    let b = node("2").await;
    let http = reqwest::Client::new();
    for uid in ["lost1", "lost2"] {
        a.post_ok(
            &http,
            "/user/token",
            json!({"uid": uid, "token": "t", "device_flag": 1}),
        )
        .await;
    }
    let mut sockets = Vec::new();
    for uid in ["lost1", "lost2"] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&b.ws).await.unwrap();
        ws.send(Message::text(easy_connect(
            uid,
            "t",
            "d",
            1,
            now_ms(),
            "c1",
        )))
        .await
        .unwrap();
        let answer = next_json(&mut ws).await.unwrap();
        assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
        sockets.push(ws);
    }
    // The sessions are B's: A counts none of them open.
    assert_eq!(sessions_open(&scrape(&b.api).await, "1"), 2.0);
    assert_eq!(sessions_open(&scrape(&a.api).await, "1"), 0.0);
    b.sigkill().await;
    let seen = eventually(
        "A closing the lost node's sessions",
        async || disconnects(&scrape(&a.api).await),
        |d| d["node_lost"] == 2.0,
    )
    .await;
    assert_eq!(seen.values().sum::<f64>(), 2.0, "{seen:?}");
    a.sigterm_and_wait().await;
}

/// The metric names a PromQL expression reads, and the labels it groups by: every identifier
/// that is not a function, a keyword, a label matcher, a range, a grouping or a variable.
fn promql_reads(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut grouped) = (BTreeSet::new(), BTreeSet::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' || c == '[' || c == '"' {
            // A label matcher, a range or a string: nothing in it is a metric.
            let close = match c {
                '{' => '}',
                '[' => ']',
                _ => '"',
            };
            i += 1;
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '$' {
            while i < chars.len() && (chars[i].is_alphanumeric() || "$_".contains(chars[i])) {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            let rest: String = chars[next..].iter().collect();
            // A function, or an aggregation with its grouping first (`sum by (l) (...)`).
            let is_call = rest.starts_with('(')
                || ["by ", "by(", "without ", "without("]
                    .iter()
                    .any(|g| rest.starts_with(g));
            if (word == "by" || word == "without") && is_call {
                // The grouping's labels, up to its `)`.
                let close = chars[next..].iter().position(|&c| c == ')').unwrap() + next;
                let labels: String = chars[next + 1..close].iter().collect();
                grouped.extend(labels.split(',').map(|l| l.trim().to_owned()));
                i = close + 1;
            } else if !is_call && !KEYWORDS.contains(&word.as_str()) {
                metrics.insert(word.clone());
            }
            continue;
        }
        i += 1;
    }
    (metrics, grouped)
}

#[test]
fn the_promql_reader_finds_metrics_and_groupings() {
    let (m, g) = promql_reads(
        r#"histogram_quantile(0.99, sum by (route, le) (rate(x_bucket{job=~"$job"}[$__rate_interval]))) / sum(y)"#,
    );
    assert_eq!(m, BTreeSet::from(["x_bucket".to_owned(), "y".to_owned()]));
    assert_eq!(g, BTreeSet::from(["route".to_owned(), "le".to_owned()]));
}

#[tokio::test]
async fn the_dashboard_queries_only_metrics_the_server_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            // `label_values(METRIC{...}, label)`: the metric is read, the label is not grouped.
            let inner = query
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0;
            exprs.push(inner.to_owned());
        }
    }
    // What the issue asks the dashboard to show is there.
    let all = exprs.join("\n");
    for shown in [
        "wkuser_sessions_open",
        "wkuser_connects_total",
        "wkuser_disconnects_total",
        "wkuser_log_append_duration_seconds_bucket",
        "wkuser_view_lag_events",
        "wkuser_webhook_pending",
    ] {
        assert!(all.contains(shown), "the dashboard shows no {shown}");
    }

    // A server that has done a little of everything, so that every series exists.
    let app = spawn_app().await;
    app.set_token("u1", "t", 1, 0).await;
    let mut ws = connected(&app, "u1", "t", 1, "d").await;
    app.post("/user/onlinestatus", &json!(["u1"])).await;
    let _other = connected(&app, "u1", "t", 1, "d2").await;
    ws.send(Message::Close(None)).await.unwrap();
    app.wait_online(
        &["u1"],
        json!([{"uid": "u1", "device_flag": 1, "online": 1}]),
    )
    .await;
    let seen = scrape(&app.api).await;
    let labels_of = |name: &str| -> BTreeSet<String> {
        seen.samples
            .iter()
            .filter(|s| s.metric == name)
            .flat_map(|s| s.labels.keys().cloned().collect::<Vec<_>>())
            .collect()
    };

    let mut checked = 0;
    for expr in &exprs {
        let (metrics, grouped) = promql_reads(expr);
        assert!(!metrics.is_empty(), "no metric read by {expr}");
        for metric in metrics {
            // A histogram's series: its buckets are one sample of the histogram's name.
            let (sample, histogram) = match metric.strip_suffix("_bucket") {
                Some(base) => (base.to_owned(), true),
                None => (metric.clone(), false),
            };
            let found = seen.samples.iter().find(|s| s.metric == sample);
            let found = found.unwrap_or_else(|| panic!("{metric} (in {expr}) is not exported"));
            assert_eq!(
                matches!(found.value, Value::Histogram(_)),
                histogram,
                "{metric} in {expr}"
            );
            let labels = labels_of(&sample);
            for label in &grouped {
                // `le` is a histogram's own; job and instance are the scrape's.
                if !["le", "job", "instance"].contains(&label.as_str()) {
                    assert!(
                        labels.contains(label),
                        "{metric} has no label {label} ({expr})"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} metric reads checked");
}
