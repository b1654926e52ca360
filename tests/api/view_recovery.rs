//! The SQL view is a projection: deleted or corrupt, it is rebuilt from the log at start, and
//! the server says so in its log.

use serde_json::{json, Value};

use crate::process::start_node;

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = http.post(url).body(body.to_string()).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn populate(http: &reqwest::Client, api: &str) {
    let ok = (200, json!({"status": 200}));
    let token = json!({"uid": "keep", "token": "k1", "device_flag": 1, "device_level": 1});
    assert_eq!(post(http, format!("{api}/user/token"), token).await, ok);
    let sys = json!({"uids": ["robot"]});
    assert_eq!(
        post(http, format!("{api}/user/systemuids_add"), sys).await,
        ok
    );
}

async fn assert_recovered(http: &reqwest::Client, api: &str) {
    let listed: Value = http
        .get(format!("{api}/user/systemuids"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!(["robot"]));
    let resp = http
        .get(format!("{api}/user/sessions?uid=keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_deleted_view_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = start_node(dir.path()).await;
    populate(&http, &node.api).await;
    node.sigterm_and_wait().await;
    for name in ["view.sqlite", "view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let node = start_node(dir.path()).await;
    assert_recovered(&http, &node.api).await;
    let said = node.stderr.lock().join("\n");
    assert!(
        said.contains("the SQL view is empty; rebuilding it from the log"),
        "{said}"
    );
    node.sigterm_and_wait().await;
    let log = wkuser::ops::open_stopped_log(dir.path()).await.unwrap();
    let verdict = wkuser::ops::replay::verify(&log, &dir.path().join("view.sqlite"))
        .await
        .unwrap();
    log.close().await;
    assert!(verdict.differences.is_empty(), "{:#?}", verdict.differences);
}

#[tokio::test]
async fn a_corrupt_view_is_set_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let node = start_node(dir.path()).await;
    populate(&http, &node.api).await;
    node.sigterm_and_wait().await;
    for name in ["view.sqlite-wal", "view.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::fs::write(dir.path().join("view.sqlite"), vec![0x5a; 64 * 1024]).unwrap();
    let node = start_node(dir.path()).await;
    assert_recovered(&http, &node.api).await;
    let said = node.stderr.lock().join("\n");
    assert!(said.contains("is unreadable; moved it to"), "{said}");
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("view.sqlite.corrupt-")
        });
    assert!(aside, "the corrupt view is kept aside for inspection");
    node.sigterm_and_wait().await;
}
