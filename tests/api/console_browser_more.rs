//! More of the operator console in a real browser: the keyboard alone at a phone's width with
//! events followed live, the session table's pages, the system uids and the whole system's
//! panels. Screenshots in `target/console-screenshots/`.

use fantoccini::key::Key;
use serde_json::{json, Value};

use crate::console_browser::{app_with_token, sessions_of, show_uid, wait_now, MANAGER};
use crate::helpers::*;

/// The element that has the focus, as `tag#id.class[data-session-id]`.
const FOCUSED: &str = r#"
const e = document.activeElement;
if (!e) return '';
return `${e.tagName.toLowerCase()}#${e.id}.${e.getAttribute('class') ?? ''}[${e.dataset ? (e.dataset.sessionId ?? '') : ''}]`;
"#;

#[tokio::test]
async fn the_console_works_by_keyboard_at_a_phones_width_and_follows_new_events() {
    let app = app_with_token().await;
    app.set_token("kay", "t-ios", 1, 0).await;
    app.set_token("kay", "t-web", 3, 0).await;
    let mut first = connected(&app, "kay", "t-ios", 1, "iphone-1").await;
    first.close(None).await.expect("close sent");
    let _second = connected(&app, "kay", "t-ios", 1, "iphone-2").await;
    eventually(
        "kay's first session closed in the view",
        async || sessions_of(&app, "kay").await,
        |s| s.len() == 2 && s.iter().any(|s| s["reason"] == "client_closed"),
    )
    .await;

    let mut b = Browser::start("keyboard").await;
    b.set_size(390, 844).await;
    b.goto(&app.url("/console")).await;
    // The token field has the focus: type, Enter. Then the uid field: type, Enter.
    b.visible("#login-token").await;
    let focused = b.js(FOCUSED, vec![]).await;
    assert_eq!(
        focused.as_str().unwrap().split('.').next(),
        Some("input#login-token")
    );
    b.keys(&format!("{MANAGER}{}", char::from(Key::Enter)))
        .await;
    b.visible("#search-uid").await;
    b.wait_for(
        "the uid field focused",
        "return document.activeElement.id === 'search-uid' ? true : null;",
        vec![],
    )
    .await;
    b.keys(&format!("kay{}", char::from(Key::Enter))).await;
    wait_now(&mut b, json!([[1, "iphone-2"]])).await;

    // Nothing is wider than a phone's screen: no sideways scrolling of the page.
    let widths = b
        .js(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than the window: {widths}"
    );

    // Tab reaches the timeline; the arrow keys move between its bars, and the focused bar's
    // details show.
    let mut on_bar = false;
    for _ in 0..80 {
        b.keys(&char::from(Key::Tab).to_string()).await;
        if b.js(FOCUSED, vec![])
            .await
            .as_str()
            .unwrap()
            .starts_with("rect#.bar")
        {
            on_bar = true;
            break;
        }
    }
    assert!(on_bar, "Tab never reached the timeline");
    let newest = b.js(FOCUSED, vec![]).await;
    let tip = b.text_of("#tooltip").await;
    assert!(
        tip.contains("iphone-2") && tip.contains("still open"),
        "{tip}"
    );
    b.screenshot("bar-focused").await;
    b.keys(&char::from(Key::Left).to_string()).await;
    let older = b.js(FOCUSED, vec![]).await;
    assert_ne!(older, newest, "the left arrow moves to the older session");
    let tip = b.text_of("#tooltip").await;
    assert!(
        tip.contains("iphone-1") && tip.contains("client_closed"),
        "{tip}"
    );
    b.keys(&char::from(Key::Escape).to_string()).await;
    b.wait_for(
        "the details hidden by Escape",
        "return document.getElementById('tooltip').hidden ? true : null;",
        vec![],
    )
    .await;

    // A device connecting now shows up in the events and in "Now" without a reload.
    let _web = connected(&app, "kay", "t-web", 3, "web_live").await;
    b.wait_for(
        "the new connect among the events",
        "return [...document.querySelectorAll('#events-table tbody tr')].some((tr) => \
         tr.dataset.type === 'Connected' && tr.textContent.includes('web_live')) ? true : null;",
        vec![],
    )
    .await;
    wait_now(&mut b, json!([[1, "iphone-2"], [3, "web_live"]])).await;
    b.screenshot("phone").await;
    b.close().await;
}

#[tokio::test]
async fn the_session_table_pages_like_the_api() {
    let app = app_with_token().await;
    app.set_token("pat", "t", 2, 0).await;
    for i in 0..55 {
        let mut ws = connected(&app, "pat", "t", 2, &format!("dev-{i:02}")).await;
        ws.close(None).await.expect("close sent");
        let _ = close_code(&mut ws).await;
    }
    eventually(
        "pat's 55 sessions closed in the view",
        async || sessions_of(&app, "pat").await,
        |s| s.len() == 55 && s.iter().all(|s| s["reason"] == "client_closed"),
    )
    .await;
    let sessions = sessions_of(&app, "pat").await;
    let ids: Vec<Value> = sessions.iter().map(|s| s["session_id"].clone()).collect();

    let mut b = Browser::start("paging").await;
    crate::console_browser::log_in(&mut b, &app).await;
    show_uid(&mut b, "pat").await;
    const ROWS: &str = "const r = [...document.querySelectorAll('#history-table tbody tr')]\
                        .map((tr) => tr.dataset.sessionId); \
                        return r.length === arguments[0] && r[0] === arguments[1] ? r : null;";
    let page1 = b
        .wait_for("the first page", ROWS, vec![json!(50), ids[0].clone()])
        .await;
    assert_eq!(page1.as_array().unwrap()[..], ids[..50]);
    b.click("#history-older").await;
    let page2 = b
        .wait_for("the second page", ROWS, vec![json!(5), ids[50].clone()])
        .await;
    assert_eq!(page2.as_array().unwrap()[..], ids[50..]);
    let older = b
        .js(
            "return document.getElementById('history-older').disabled;",
            vec![],
        )
        .await;
    assert_eq!(older, true, "the last page has no older one");
    b.click("#history-newer").await;
    b.wait_for(
        "the first page again",
        ROWS,
        vec![json!(50), ids[0].clone()],
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn system_uids_and_the_whole_system_from_the_console() {
    let app = app_with_token().await;
    app.set_token("sam", "t", 1, 0).await;
    let _ws = connected(&app, "sam", "t", 1, "phone").await;
    let (status, _) = app
        .post("/user/systemuids_add", &json!({"uids": ["robot0"]}))
        .await;
    assert_eq!(status, 200);

    let mut b = Browser::start("system").await;
    crate::console_browser::log_in(&mut b, &app).await;
    const LISTED: &str = "const l = [...document.querySelectorAll('#sysuids-list li')]\
                          .map((li) => li.dataset.uid); \
                          return JSON.stringify(l) === JSON.stringify(arguments[0]) ? l : null;";
    b.wait_for("robot0 listed", LISTED, vec![json!(["robot0"])])
        .await;

    b.type_into("#sysuids-add", "robot1, robot2").await;
    b.click("#sysuids-add-form button[type=submit]").await;
    b.wait_for(
        "three system uids listed",
        LISTED,
        vec![json!(["robot0", "robot1", "robot2"])],
    )
    .await;
    assert_eq!(
        app.system_uids().await,
        json!(["robot0", "robot1", "robot2"])
    );

    b.click("li[data-uid='robot1'] button").await;
    let question = b.text_of("#confirm-title").await;
    assert_eq!(question, "Remove robot1 from the system uids?");
    b.click("#confirm-ok").await;
    b.wait_for("robot1 removed", LISTED, vec![json!(["robot0", "robot2"])])
        .await;
    assert_eq!(app.system_uids().await, json!(["robot0", "robot2"]));

    // A uid the server refuses: its message, beside the field.
    b.type_into("#sysuids-add", "____system").await;
    b.click("#sysuids-add-form button[type=submit]").await;
    let error = b.text_of("#sysuids-error").await;
    assert!(error.contains("400"), "{error}");

    // The whole system: the sessions open as /stats counts them, the connects counted from the
    // log, the node.
    let (_, stats) = app.get("/stats").await;
    let open = stats["online_sessions"].as_u64().unwrap().to_string();
    b.wait_for(
        "the sessions open",
        "const d = [...document.querySelectorAll('#system-stats div')].find((d) => \
         d.querySelector('dt').textContent === 'Sessions open'); \
         return d && d.querySelector('dd').textContent === arguments[0] ? true : null;",
        vec![json!(open)],
    )
    .await;
    let _more = connected(&app, "sam", "t", 1, "tablet").await;
    b.wait_for(
        "a connect per second counted",
        "const r = document.querySelector('#rates-table tr[data-rate=connects] td'); \
         return r && Number(r.textContent) > 0 ? r.textContent : null;",
        vec![],
    )
    .await;
    let node = b
        .wait_for(
            "the node",
            "const r = document.querySelector('#nodes-table tr[data-node]'); \
             return r ? r.textContent : null;",
            vec![],
        )
        .await;
    assert!(node.as_str().unwrap().contains("alive"), "{node}");
    b.screenshot("system").await;
    b.close().await;
}

/// Connects to a node's gateway as the EasySDK does and asserts success.
async fn connect_to(node: &Node, uid: &str, token: &str, flag: u8, device: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(&node.ws)
        .await
        .expect("ws connects");
    send_text(
        &mut ws,
        easy_connect(uid, token, device, flag, now_ms(), "c1"),
    )
    .await;
    let answer: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
    assert_connected(&answer);
    ws
}

#[tokio::test]
async fn with_several_nodes_the_console_lists_them_and_where_each_device_is() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in ["1", "2"] {
        let dir = data.path().join(format!("node{id}"));
        let flags = ["--database-url", &db.url, "--node-id", id];
        nodes.push(start_node_with(&dir, "info", &flags).await);
    }
    let http = reqwest::Client::new();
    for (flag, token) in [(1, "t-ios"), (2, "t-android")] {
        let body = json!({"uid": "nia", "token": token, "device_flag": flag, "device_level": 0});
        let resp = http
            .post(format!("{}/user/token", nodes[0].api))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let _phone = connect_to(&nodes[0], "nia", "t-ios", 1, "phone").await;
    let _tablet = connect_to(&nodes[1], "nia", "t-android", 2, "tablet").await;

    let mut b = Browser::start("cluster").await;
    b.goto(&format!("{}/console", nodes[0].api)).await;
    show_uid(&mut b, "nia").await;
    wait_now(&mut b, json!([[1, "phone"], [2, "tablet"]])).await;
    // Each device on the node that holds it.
    let held = b
        .js(
            "return [...document.querySelectorAll('#now-table tbody tr')].map((tr) => \
             Number(tr.querySelector('td.num').textContent));",
            vec![],
        )
        .await;
    assert_eq!(held, json!([1, 2]));
    // The nodes, each alive with its one session.
    b.wait_for(
        "both nodes, one session each",
        "const rows = [...document.querySelectorAll('#nodes-table tr[data-node]')].map((tr) => \
         [Number(tr.dataset.node), tr.children[1].textContent, tr.children[2].textContent]); \
         return JSON.stringify(rows) === JSON.stringify([[1, 'alive', '1'], [2, 'alive', '1']]) \
         ? rows : null;",
        vec![],
    )
    .await;
    b.screenshot("nodes").await;
    b.close().await;
}
