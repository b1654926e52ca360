//! The errors a newcomer met at the command line, each as they meet it: the real binary, its
//! whole stderr. A wrong value from the environment.

use crate::cli::{stderr, wkuser, wkuser_with_env};

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
    assert!(
        stderr(&run)
            .contains("--slow-reader-limit (WK_SLOW_READER_LIMIT) must be longer than zero"),
        "{}",
        stderr(&run)
    );
    assert!(
        !data.path().join("data").exists(),
        "a refused start made its data dir"
    );
}
