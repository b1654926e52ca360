//! The errors a newcomer met at the command line, each as they meet it: the real binary, its
//! whole stderr. A data directory a server holds, an error's causes, a wrong value from
//! the environment.

use std::path::Path;

use crate::cli::{dir, stderr, stdout, wkuser, wkuser_with_env};
use crate::helpers::*;

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_data_dir_a_server_holds_is_one_line_naming_it_and_what_to_do() {
    let app = spawn_app().await;
    let data = dir(&app);
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("then.sqlite").display().to_string();
    let held = format!("wkuser: data directory {data} is in use: another wkuser process holds it");
    for (args, remedy) in [
        (
            vec![
                "serve",
                "--data-dir",
                &data,
                "--api-addr",
                "127.0.0.1:0",
                "--ws-addr",
                "127.0.0.1:0",
            ],
            "stop it first",
        ),
        (
            vec!["events", "--data-dir", &data],
            "stop it first, or read through its API with --api ADDR",
        ),
        // Neither has --api: the way around the server is a copy.
        (
            vec!["replay", "--data-dir", &data, "--into", &into],
            "stop it first, or replay a copy of the data directory",
        ),
        (
            vec!["verify", "--data-dir", &data],
            "stop it first, or verify a copy of the data directory",
        ),
    ] {
        let run = wkuser(&args).await;
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", stderr(&run));
        assert_eq!(stderr(&run), format!("{held} ({remedy})\n"), "{args:?}");
        assert_eq!(stdout(&run), "", "{args:?}");
    }
    assert_eq!(
        names_in(out.path()),
        Vec::<String>::new(),
        "replay made a file"
    );
    // `audit` reads the view, which a server lets readers share: no error at all.
    let audit = wkuser(&["audit", "u1", "--data-dir", &data]).await;
    assert_eq!(audit.status.code(), Some(0), "{}", stderr(&audit));
}

#[tokio::test]
async fn an_error_and_its_causes_are_each_said_once() {
    // A port nothing listens on: the client's error wraps reqwest's, which wraps hyper's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = closed.local_addr().unwrap().to_string();
    drop(closed);
    let run = wkuser(&["events", "--api", &api]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    let said = stderr(&run);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.starts_with("wkuser: cannot reach http://"), "{said}");
    assert_eq!(
        said.matches("error sending request").count(),
        1,
        "a cause said twice: {said}"
    );
}

#[tokio::test]
async fn a_wrong_value_from_the_environment_is_named_by_its_variable() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data").display().to_string();
    for (variable, value, flag) in [
        ("WK_IDLE_TIMEOUT", "abc", "--idle-timeout"),
        ("WK_MAX_BODY_BYTES", "lots", "--max-body-bytes"),
        ("WK_API_ADDR", "nowhere", "--api-addr"),
        ("WK_NODE_ID", "-1", "--node-id"),
        ("WK_ALLOW_OPEN_API", "maybe", "--allow-open-api"),
    ] {
        let run = wkuser_with_env(&["serve", "--data-dir", &data_dir], &[(variable, value)]).await;
        assert_eq!(run.status.code(), Some(2), "{variable}: {}", stderr(&run));
        let said = stderr(&run);
        assert!(
            said.starts_with(&format!(
                "error: invalid value '{value}' for {variable} ({flag})"
            )),
            "{said}"
        );
        assert!(!said.contains(&format!("'{flag}")), "{said}");
    }
    // Given on the command line, the flag is what is named, as clap names it.
    let run = wkuser(&["serve", "--data-dir", &data_dir, "--idle-timeout", "abc"]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).starts_with("error: invalid value 'abc' for '--idle-timeout <IDLE_TIMEOUT>'"),
        "{}",
        stderr(&run)
    );
    // The command line wins over the environment, and so it is not blamed on it.
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_dir, "--api-addr", "nowhere"],
        &[("WK_API_ADDR", "nowhere")],
    )
    .await;
    assert!(
        stderr(&run).starts_with("error: invalid value 'nowhere' for '--api-addr <API_ADDR>'"),
        "{}",
        stderr(&run)
    );
    // A value that parses but is refused later names the variable too.
    let run = wkuser_with_env(
        &["serve", "--data-dir", &data_dir],
        &[("WK_SLOW_READER_LIMIT", "0s")],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert_eq!(
        stderr(&run),
        "wkuser: --slow-reader-limit (WK_SLOW_READER_LIMIT) must be longer than zero\n"
    );
    assert!(
        !data.path().join("data").exists(),
        "a refused start made its data dir"
    );
}
