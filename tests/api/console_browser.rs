//! The operator console in a real browser (`protocol.md` section 9, issue 20): headless
//! Chromium driven over WebDriver against the real server, whose sessions are made over real
//! WebSockets. Each test leaves screenshots in `target/console-screenshots/`.
//!
//! Here: the token, a populated uid (its "Now", its timeline bar by bar, its history and
//! events), a kick, and a wrong token. `console_browser_more` covers the keyboard, a phone's
//! width, live events, paging and the system panels.

use serde_json::{json, Value};
use wkuser::human::parse_rfc3339_ms;

use crate::helpers::*;

pub const MANAGER: &str = "console-m4nager";

/// A reqwest client that sends the manager token with every request, so that the helpers of
/// [`TestApp`] work against a server that needs it.
pub fn token_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("token", MANAGER.parse().expect("a header value"));
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client builds")
}

pub async fn app_with_token() -> TestApp {
    let mut app = spawn_app_with(&["--manager-token", MANAGER]).await;
    app.http = token_client();
    app
}

/// `uid`'s sessions as `/user/sessions` answers them, newest first.
pub async fn sessions_of(app: &TestApp, uid: &str) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/user/sessions?uid={uid}&limit=1000"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["sessions"].as_array().expect("sessions").clone()
}

/// Opens the console, types the manager token and waits for the search form.
pub async fn log_in(b: &mut Browser, app: &TestApp) {
    b.goto(&app.url("/console")).await;
    b.type_into("#login-token", MANAGER).await;
    b.click("#login-form button[type=submit]").await;
    b.visible("#search-uid").await;
}

/// Searches `uid` and waits until the page shows it.
pub async fn show_uid(b: &mut Browser, uid: &str) {
    b.type_into("#search-uid", uid).await;
    b.click("#search-form button[type=submit]").await;
    b.wait_for(
        &format!("{uid} shown"),
        "return document.getElementById('user-uid').textContent === arguments[0] \
         && document.querySelector('#timeline svg') ? true : null;",
        vec![json!(uid)],
    )
    .await;
}

/// The timeline as drawn: every bar with its lane, reason, rendered colour and geometry; the
/// legend's rendered colours; the axis. `null` until it has `bars` bars of which `open` are
/// open.
pub const TIMELINE: &str = r#"
const svg = document.querySelector('#timeline svg');
if (!svg) return null;
const bars = [...svg.querySelectorAll('rect.bar')].map((r) => {
  const lane = r.closest('g.lane');
  return {
    id: r.dataset.sessionId, flag: Number(r.dataset.flag), lane: Number(lane.dataset.flag),
    reason: r.dataset.reason, fill: getComputedStyle(r).fill,
    x: Number(r.getAttribute('x')), width: Number(r.getAttribute('width')),
    y: Number(r.getAttribute('y')), height: Number(r.getAttribute('height')),
    laneY: Number(lane.dataset.y), laneH: Number(lane.dataset.h),
    start: Number(r.dataset.start), end: r.dataset.end === '' ? null : Number(r.dataset.end),
    label: r.getAttribute('aria-label'),
  };
});
if (bars.length !== arguments[0] || bars.filter((b) => b.reason === 'open').length !== arguments[1]) return null;
const legend = {};
for (const li of document.querySelectorAll('#legend li')) {
  legend[li.dataset.reason] = getComputedStyle(li.querySelector('.swatch')).backgroundColor;
}
return {
  bars, legend, from: Number(svg.dataset.from), to: Number(svg.dataset.to),
  plotX: Number(svg.dataset.plotX), plotW: Number(svg.dataset.plotWidth),
};
"#;

/// The device flags the "Now" table lists, with each row's device id.
pub const NOW_ROWS: &str = r#"
return [...document.querySelectorAll('#now-table tbody tr')].map((tr) =>
  [Number(tr.dataset.flag), tr.querySelector('td.mono') ? tr.querySelector('td.mono').textContent : null]);
"#;

/// Waits until "Now" lists exactly `expected` (flag, device id) rows.
pub async fn wait_now(b: &mut Browser, expected: Value) -> Value {
    let probe = format!(
        "const rows = (() => {{ {NOW_ROWS} }})(); \
         return JSON.stringify(rows) === JSON.stringify(arguments[0]) ? rows : null;"
    );
    b.wait_for(
        &format!("\"Now\" listing {expected}"),
        &probe,
        vec![expected.clone()],
    )
    .await
}

/// `ada`'s sessions, each ended in its own way and two left open, over a few seconds (so that
/// the timeline's "Fit" shows them as bars): server_shutdown, master_login, token_updated,
/// client_closed, replaced, device_quit, then iOS and Android open. Returns the open sockets.
async fn populate_ada(app: &mut TestApp) -> Vec<Ws> {
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(450));
    app.set_token("ada", "t-mac", 4, 0).await;
    let _mac = connected(app, "ada", "t-mac", 4, "macbook").await;
    pause().await;
    app.restart().await; // closes it as server_shutdown
    app.set_token("ada", "t-ios", 1, 1).await;
    app.set_token("ada", "t-android", 2, 0).await;
    app.set_token("ada", "t-web", 3, 0).await;
    let _phone_a = connected(app, "ada", "t-ios", 1, "iphone-a").await;
    pause().await;
    let _phone_b = connected(app, "ada", "t-ios", 1, "iphone-b").await; // master_login
    pause().await;
    let mut pixel = connected(app, "ada", "t-android", 2, "pixel").await;
    pause().await;
    pixel.close(None).await.expect("close sent"); // client_closed
    let _web = connected(app, "ada", "t-web", 3, "web_a1b2c3d4").await;
    pause().await;
    let _web_again = connected(app, "ada", "t-web", 3, "web_a1b2c3d4").await; // replaced
    pause().await;
    app.set_token("ada", "t-ios-2", 1, 1).await; // token_updated
    pause().await;
    app.device_quit("ada", 3).await; // device_quit
    pause().await;
    let phone_c = connected(app, "ada", "t-ios-2", 1, "iphone-c").await;
    pause().await;
    let pixel_2 = connected(app, "ada", "t-android", 2, "pixel-2").await;
    app.wait_online(
        &["ada"],
        json!([{"uid": "ada", "device_flag": 1, "online": 1}, {"uid": "ada", "device_flag": 2, "online": 1}]),
    )
    .await;
    eventually(
        "ada's eight sessions, six closed, in the view",
        async || sessions_of(app, "ada").await,
        |s| s.len() == 8 && s.iter().filter(|s| s["reason"].is_string()).count() == 6,
    )
    .await;
    vec![phone_c, pixel_2]
}

fn ms(v: &Value) -> f64 {
    parse_rfc3339_ms(v.as_str().expect("a time")).expect("RFC 3339") as f64
}

#[tokio::test]
async fn the_console_takes_the_token_and_draws_a_uid_made_over_websockets() {
    let mut app = app_with_token().await;
    let _open = populate_ada(&mut app).await;
    let sessions = sessions_of(&app, "ada").await;

    let mut b = Browser::start("populated").await;
    b.goto(&app.url("/console")).await;
    let why = b.text_of("#login-why").await;
    assert!(why.contains("manager token"), "{why}");
    b.screenshot("token-asked").await;
    b.type_into("#login-token", MANAGER).await;
    b.click("#login-form button[type=submit]").await;
    b.wait_text("#token-state", "Manager token set for this tab")
        .await;
    // The token is kept for this tab only; the recent list keeps uids, never the token.
    let stored = b
        .js(
            "return [sessionStorage.getItem('wkuser.console.token'), JSON.stringify(localStorage)];",
            vec![],
        )
        .await;
    assert_eq!(stored[0], MANAGER);
    show_uid(&mut b, "ada").await;
    let local = b.js("return JSON.stringify(localStorage);", vec![]).await;
    let local = local.as_str().unwrap();
    assert!(local.contains("ada") && !local.contains(MANAGER), "{local}");

    // The timeline: one bar per session, in its flag's lane, coloured as the legend says its
    // reason is, at its real times; open sessions run to now.
    let drawn = b
        .wait_for("eight bars, two open", TIMELINE, vec![json!(8), json!(2)])
        .await;
    let bars = drawn["bars"].as_array().unwrap();
    let legend = drawn["legend"].as_object().unwrap();
    let colours: std::collections::HashSet<&str> =
        legend.values().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(
        colours.len(),
        legend.len(),
        "each reason its own colour: {legend:?}"
    );
    let (from, to) = (
        drawn["from"].as_f64().unwrap(),
        drawn["to"].as_f64().unwrap(),
    );
    let (plot_x, plot_w) = (
        drawn["plotX"].as_f64().unwrap(),
        drawn["plotW"].as_f64().unwrap(),
    );
    let x_of = |t: f64| plot_x + (t.max(from) - from) / (to - from) * plot_w;
    for s in &sessions {
        let id = s["session_id"].as_str().unwrap();
        let mine: Vec<&Value> = bars.iter().filter(|b| b["id"] == id).collect();
        assert_eq!(mine.len(), 1, "one bar for session {id}: {bars:?}");
        let bar = mine[0];
        assert_eq!(bar["lane"], s["device_flag"], "{id} in its flag's lane");
        assert_eq!(bar["flag"], s["device_flag"]);
        let y = bar["y"].as_f64().unwrap();
        let lane_y = bar["laneY"].as_f64().unwrap();
        assert!(
            y >= lane_y
                && y + bar["height"].as_f64().unwrap() <= lane_y + bar["laneH"].as_f64().unwrap(),
            "{id} drawn inside its lane: {bar}"
        );
        let reason = s["reason"].as_str().unwrap_or("open");
        assert_eq!(bar["reason"], reason, "{id}");
        assert_eq!(bar["fill"], legend[reason], "{id} in {reason}'s colour");
        // At its real times (the bar's own start is the session's, to the millisecond).
        let start = ms(&s["connected_at"]);
        assert_eq!(bar["start"].as_f64().unwrap(), start, "{id}");
        let x = bar["x"].as_f64().unwrap();
        assert!(
            (x - x_of(start)).abs() < 1.0,
            "{id} starts at x {x}, not {}",
            x_of(start)
        );
        let right = x + bar["width"].as_f64().unwrap();
        if s["disconnected_at"].is_null() {
            // To now; a bar shorter than the narrowest drawn (3 px) keeps its real start.
            let to_now = (plot_x + plot_w).max(x + 3.0);
            assert!(
                (right - to_now).abs() < 1.0,
                "{id} open: runs to now, not {right}"
            );
        } else {
            let end = x_of(ms(&s["disconnected_at"]));
            assert!(
                right <= end.max(x + 3.0) + 1.0,
                "{id} ends at {end}, drawn to {right}"
            );
        }
    }

    // "Now": the two devices online, by flag name, with level, node, device id and since when.
    wait_now(&mut b, json!([[1, "iphone-c"], [2, "pixel-2"]])).await;
    let now_text = b.text_of("#now-table").await;
    for expected in ["iOS", "Android", "master", "slave", "iphone-c", "pixel-2"] {
        assert!(
            now_text.contains(expected),
            "{expected} in \"Now\": {now_text}"
        );
    }
    let phone_c = sessions
        .iter()
        .find(|s| s["device_id"] == "iphone-c")
        .unwrap();
    let since = b
        .js(
            "const t = Date.parse(arguments[0]); const d = new Date(t); \
             const p = (n) => String(n).padStart(2, '0'); \
             return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;",
            vec![phone_c["connected_at"].clone()],
        )
        .await;
    assert!(
        now_text.contains(since.as_str().unwrap()),
        "since {since}: {now_text}"
    );

    // The history table and the raw events.
    let rows = b
        .wait_for(
            "the session table",
            "const r = document.querySelectorAll('#history-table tbody tr'); return r.length === 8 ? [...r].map((tr) => tr.dataset.sessionId) : null;",
            vec![],
        )
        .await;
    let ids: Vec<&Value> = sessions.iter().map(|s| &s["session_id"]).collect();
    assert_eq!(
        rows.as_array().unwrap().iter().collect::<Vec<_>>(),
        ids,
        "newest first, as the API pages them"
    );
    let events = b
        .wait_for(
            "the events",
            "const r = [...document.querySelectorAll('#events-table tbody tr')].map((tr) => tr.dataset.type); return r.length ? r : null;",
            vec![],
        )
        .await;
    let events: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        events.iter().filter(|t| **t == "Connected").count(),
        8,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|t| **t == "Disconnected").count(),
        6,
        "{events:?}"
    );
    assert!(
        events.contains(&"DeviceQuit") && events.contains(&"TokenUpdated"),
        "{events:?}"
    );

    // The picture of the README: the same uid, zoomed onto its sessions, at 1280 wide.
    b.set_size(1280, 1500).await;
    b.click("label[for=span-fit]").await;
    b.wait_for(
        "the timeline zoomed to fit",
        "const s = document.querySelector('#timeline svg'); return s && Number(s.dataset.to) - Number(s.dataset.from) < 3600e3 ? true : null;",
        vec![],
    )
    .await;
    b.wait_for(
        "the connects per second measured",
        "return document.querySelector('#rates-table tr[data-rate=connects]') ? true : null;",
        vec![],
    )
    .await;
    b.screenshot("ada").await;
    b.close().await;
}

#[tokio::test]
async fn a_device_kicked_from_the_console_leaves_now() {
    let app = app_with_token().await;
    app.set_token("kim", "t-ios", 1, 1).await;
    app.set_token("kim", "t-web", 3, 0).await;
    let _phone = connected(&app, "kim", "t-ios", 1, "iphone").await;
    let mut web = connected(&app, "kim", "t-web", 3, "web_k1").await;

    let mut b = Browser::start("kick").await;
    log_in(&mut b, &app).await;
    show_uid(&mut b, "kim").await;
    wait_now(&mut b, json!([[1, "iphone"], [3, "web_k1"]])).await;

    // A kick asks first; cancelling it kicks nobody.
    b.click("button[data-kick-flag='1']").await;
    let question = b.text_of("#confirm-title").await;
    assert_eq!(question, "Kick iOS (flag 1) of kim?");
    b.screenshot("confirm").await;
    b.click("#confirm-cancel").await;
    b.wait_for(
        "the dialog closed",
        "return document.getElementById('confirm').open ? null : true;",
        vec![],
    )
    .await;

    b.click("button[data-kick-flag='3']").await;
    let question = b.text_of("#confirm-title").await;
    assert_eq!(question, "Kick Web (flag 3) of kim?");
    b.click("#confirm-ok").await;
    // The device gets the kick notification and its socket closes...
    assert_eq!(next_text(&mut web).await, kick_text("device quit"));
    assert_eq!(close_code(&mut web).await, Some(1000));
    // ...and the page shows it gone from "Now", the other device still there.
    wait_now(&mut b, json!([[1, "iphone"]])).await;
    b.wait_for(
        "the kicked session drawn as device_quit",
        "return document.querySelector(\"#timeline rect.bar[data-flag='3'][data-reason='device_quit']\") ? true : null;",
        vec![],
    )
    .await;
    b.screenshot("kicked").await;
    b.close().await;

    // One kick: the cancelled one sent nothing.
    let quits: Vec<Value> = app
        .events()
        .into_iter()
        .filter(|e| e.event.kind() == "DeviceQuit")
        .map(|e| serde_json::from_str(e.to_operator_json().get()).unwrap())
        .collect();
    assert_eq!(quits.len(), 1, "{quits:?}");
    assert_eq!(quits[0]["data"]["device_flag"], 3);
    app.wait_online(
        &["kim"],
        json!([{"uid": "kim", "device_flag": 1, "online": 1}]),
    )
    .await;
}

#[tokio::test]
async fn a_wrong_token_gets_a_clear_message_and_no_token_needs_none() {
    let app = app_with_token().await;
    let mut b = Browser::start("token").await;
    b.goto(&app.url("/console")).await;
    b.type_into("#login-token", "not-the-token").await;
    b.click("#login-form button[type=submit]").await;
    let message = b.text_of("#login-error").await;
    assert!(
        message.starts_with("Wrong manager token") && message.contains("401"),
        "{message}"
    );
    let state = b
        .js(
            "return [document.getElementById('app').hidden, document.body.innerText.length, \
             sessionStorage.getItem('wkuser.console.token'), \
             document.getElementById('login-error').getAttribute('role')];",
            vec![],
        )
        .await;
    assert_eq!(state[0], true, "the console stays closed");
    assert!(state[1].as_u64().unwrap() > 100, "not a blank page");
    assert_eq!(state[2], Value::Null, "a refused token is not kept");
    assert_eq!(state[3], "alert", "read out at once");
    b.screenshot("wrong").await;
    // The right one then opens it.
    b.type_into("#login-token", MANAGER).await;
    b.click("#login-form button[type=submit]").await;
    b.visible("#search-uid").await;

    // A server without a manager token asks for none.
    let open = spawn_app().await;
    b.goto(&open.url("/console")).await;
    b.wait_text("#token-state", "No manager token needed").await;
    b.close().await;
}
