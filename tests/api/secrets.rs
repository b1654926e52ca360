//! Tokens are never stored (`protocol.md` section 2): after a run that registers tokens,
//! connects with them and with a wrong one, no file of the data directory holds a token's
//! bytes, nor does any event of the log as it reads back (its files are compressed), while the
//! SHA-256 of each is there (so the search does look where data is written).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::*;

const MANAGER: &str = "MaNaGeR-5ecret-b9e04c7d";

#[tokio::test]
async fn no_token_reaches_the_data_directory() {
    let mut app = spawn_app_with(&["--manager-token", MANAGER]).await;
    let long = format!("LoNg-t0ken-{}", "Kx9".repeat(1300));
    let tokens = [
        ("alice", "SeCrEt-alice-1f0e8d2c-ios", 1, 1),
        ("alice", "SeCrEt-alice-77aa31b0-web", 3, 0),
        ("bob", "SeCrEt-bob-c4d5e6f7-android", 2, 0),
        ("carol", long.as_str(), 4, 1),
    ];
    for (uid, token, flag, level) in tokens {
        let body = json!({"uid": uid, "token": token, "device_flag": flag, "device_level": level});
        let answer = app
            .request(
                Method::POST,
                "/user/token",
                Some(body.to_string().into_bytes()),
                &[("token", MANAGER)],
            )
            .await;
        assert_eq!(answer.pair(), (200, json!({"status": 200})), "{uid}");
    }
    let mut sockets = Vec::new();
    for (uid, token, flag, _) in tokens {
        let (ws, answer) = app
            .ws_connect(uid, token, flag, &format!("{uid}-{flag}"))
            .await;
        assert_connected(&answer);
        sockets.push(ws);
    }
    let wrong = "WrOnG-guess-0badc0de";
    let (_ws, answer) = app.ws_connect("bob", wrong, 2, "intruder").await;
    assert_eq!(answer, auth_fail("c-intruder"));
    // A quit and a re-registration, so cleared and replaced tokens are covered too.
    let answer = app
        .request(
            Method::POST,
            "/user/device_quit",
            Some(br#"{"uid":"bob","device_flag":2}"#.to_vec()),
            &[("token", MANAGER)],
        )
        .await;
    assert_eq!(answer.pair(), (200, json!({"status": 200})));

    app.view_caught_up().await;
    let dump = format!("{:?}", app.server().view().dump().await.expect("dump"));
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("stop within 20 s");
    drop(sockets);

    let files = files_under(&app.data_dir);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(app.data_dir.join("log"))),
        "no log files found: {files:?}"
    );
    // The log's files are compressed: its values are searched too, as sled reads them back.
    let values: Vec<Vec<u8>> = {
        use wkuser::log::LogStore;
        let log = wkuser::log::SledStore::open(&app.data_dir.join("log")).expect("the log opens");
        let raw = log
            .read_after(wkuser::domain::Seq(0), 100_000)
            .expect("the log reads");
        raw.into_iter().map(|(_, bytes)| bytes).collect()
    };
    let in_values = |needle: &[u8]| {
        values
            .iter()
            .filter(|v| v.windows(needle.len()).any(|w| w == needle))
            .count()
    };
    let mut secrets: Vec<&str> = tokens.iter().map(|t| t.1).collect();
    secrets.extend([wrong, MANAGER]);
    for secret in secrets {
        let found = files_containing(&app.data_dir, secret.as_bytes());
        assert!(found.is_empty(), "{}… found in {found:?}", &secret[..20]);
        assert_eq!(
            in_values(secret.as_bytes()),
            0,
            "{}… in the log",
            &secret[..20]
        );
    }
    // The hashes are where the tokens would have been: in the view and in the log.
    for (uid, token, _, _) in &tokens[..3] {
        let hex = hex::encode(Sha256::digest(token.as_bytes()));
        // Bob's token was cleared by the quit, so the view no longer holds its hash.
        if *uid != "bob" {
            assert!(dump.contains(&hex), "{uid}'s token hash is not in the view");
        }
        let found = files_containing(&app.data_dir, hex.as_bytes());
        // The log stores the hash's 32 bytes.
        assert!(
            in_values(&Sha256::digest(token.as_bytes())) > 0,
            "{uid}'s token hash not found in the log"
        );
        if *uid != "bob" {
            assert!(
                found.iter().any(|f| f
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("view.sqlite"))),
                "{uid}'s token hash not found in the view's files: {found:?}"
            );
        }
    }
}
