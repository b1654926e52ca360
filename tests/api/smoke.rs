//! The shortest path through both edges: a token, a connect, online, a close, offline.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn token_connect_online_close_offline() {
    let app = spawn_app().await;
    app.set_token("u1", "t1", 1, 0).await;
    let (mut ws, answer) = app
        .ws_connect("u1", "t1", 1, "web_1a2b3c4d_1700000000000")
        .await;
    assert_eq!(answer["result"]["reasonCode"], 1, "{answer}");
    assert_eq!(
        app.online(&["u1", "u2"]).await,
        json!([{"uid": "u1", "device_flag": 1, "online": 1}])
    );
    ws.close(None).await.unwrap();
    let _ = close_code(&mut ws).await;
    // The close is recorded after the socket's end.
    app.wait_offline("u1").await;
}
