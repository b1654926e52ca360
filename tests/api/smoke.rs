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

/// The machine's PostgreSQL is reachable and the shared schema applies to an empty database:
/// what every test of several nodes stands on.
#[tokio::test]
async fn the_shared_schema_applies_to_an_empty_postgres_database() {
    let db = TestDatabase::create().await;
    let pool = wkuser::postgres::connect(&db.url, 2).await.unwrap();
    // Applied twice (as two nodes starting at once would): the second run changes nothing.
    wkuser::postgres::MIGRATOR.run(&pool).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, wkuser::postgres::MIGRATOR.iter().count() as i64);
    pool.close().await;
}
