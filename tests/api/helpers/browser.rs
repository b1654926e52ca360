//! A real browser for the console's tests: Debian's headless Chromium, driven over WebDriver by
//! fantoccini through a chromedriver that each [`Browser`] starts as its child on a free port.
//!
//! Owns [`Browser`], its chromedriver and its Chromium. Promises: the browser is the Debian
//! package's, never one downloaded; a machine without it fails the test with the command that
//! installs it (`.ci/setup-browser`), never skips it; every wait is bounded and, when it fails,
//! leaves a screenshot and says what the page showed; screenshots land in
//! `target/console-screenshots/`. Must never: leave a chromedriver or Chromium running after the
//! test (the process group is killed on drop), or run two browsers at once (one at a time keeps
//! a loaded two-core machine from starving them).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{Mutex, MutexGuard};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait for the page polls before the test fails: far past what a healthy page
/// needs on a loaded machine.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(30);

/// One browser at a time, across the tests of this binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: Child,
    name: String,
    shots: u32,
    _profile: TempDir,
    _turn: MutexGuard<'static, ()>,
}

/// Where the tests' screenshots go: `target/console-screenshots/` of this checkout (or of
/// `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// Fails, naming the script that installs them, when Chromium or chromedriver is missing.
fn require_browser() {
    for program in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(program).exists(),
            "{program} is missing: the console's browser tests need Debian's chromium and \
             chromium-driver packages. Install them with `.ci/setup-browser` (as root); \
             `.ci/run` does it before the tests."
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts chromedriver on a free port, in a process group of its own (so that the Chromium it
/// starts can be killed with it); returns it once it answers.
async fn start_driver() -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = driver.try_wait() {
                break; // the port was taken meanwhile: another one
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return (driver, port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill_group(&mut driver);
    }
    panic!("chromedriver did not start listening (5 tries)");
}

fn kill_group(driver: &mut Child) {
    // SAFETY: a plain kill(2) of the group this child leads (created at spawn).
    unsafe {
        libc::kill(-(driver.id() as i32), libc::SIGKILL);
    }
    let _ = driver.wait();
}

impl Browser {
    /// A fresh headless Chromium at 1280x800; `name` prefixes its screenshots.
    pub async fn start(name: &str) -> Browser {
        require_browser();
        let turn = ONE_AT_A_TIME.lock().await;
        // This run's screenshots replace the last run's, none left over from it.
        if let Ok(old) = std::fs::read_dir(screenshot_dir()) {
            for file in old.flatten() {
                if file
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-"))
                {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let (mut driver, port) = start_driver().await;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // root in CI: Chromium's sandbox refuses to run as root
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--force-device-scale-factor=1",
                    "--lang=en-US",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = match ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => client,
            Err(e) => {
                kill_group(&mut driver);
                panic!("chromedriver could not start Chromium: {e}");
            }
        };
        Browser {
            client,
            driver,
            name: name.to_owned(),
            shots: 0,
            _profile: profile,
            _turn: turn,
        }
    }

    /// Ends the WebDriver session (Chromium quits); the drop then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("page opens");
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window resized");
    }

    /// Writes a screenshot to `target/console-screenshots/<name>-<n>-<step>.png`; returns its
    /// path.
    pub async fn screenshot(&mut self, step: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.expect("screenshot taken");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{}-{:02}-{step}.png", self.name, self.shots));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Runs `script` in the page (its `arguments` are `args`); returns what it returns.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `probe` (a script returning a value, `null` for "not yet") until it returns
    /// something else; fails after [`PAGE_PATIENCE`] with a screenshot, the page's alert and
    /// what was awaited.
    pub async fn wait_for(&mut self, awaited: &str, probe: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + PAGE_PATIENCE;
        loop {
            let value = self.js(probe, args.clone()).await;
            if !value.is_null() {
                return value;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout").await;
                let alert = self
                    .js(
                        "const a = document.getElementById('alert'); return a ? a.textContent : null;",
                        vec![],
                    )
                    .await;
                panic!(
                    "the page did not show {awaited} within {PAGE_PATIENCE:?}; alert: {alert}; \
                     screenshot: {}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css` matches, once it is displayed.
    pub async fn visible(&mut self, css: &str) -> Element {
        let probe = "const e = document.querySelector(arguments[0]); \
                     return e && e.checkVisibility() ? true : null;";
        self.wait_for(&format!("`{css}` displayed"), probe, vec![json!(css)])
            .await;
        self.client
            .find(Locator::Css(css))
            .await
            .expect("element found")
    }

    /// The trimmed text of `css`, once it is displayed.
    pub async fn text_of(&mut self, css: &str) -> String {
        let e = self.visible(css).await;
        e.text().await.expect("element text").trim().to_owned()
    }

    /// Waits until the trimmed text of `css` is `expected`.
    pub async fn wait_text(&mut self, css: &str, expected: &str) {
        let probe = "const e = document.querySelector(arguments[0]); \
                     return e && e.textContent.trim() === arguments[1] ? true : null;";
        self.wait_for(
            &format!("`{css}` saying {expected:?}"),
            probe,
            vec![json!(css), json!(expected)],
        )
        .await;
    }

    /// Types `text` into the field `css` (cleared first), as keystrokes.
    pub async fn type_into(&mut self, css: &str, text: &str) {
        let field = self.visible(css).await;
        field.clear().await.expect("field cleared");
        field.send_keys(text).await.expect("keys typed");
    }

    pub async fn click(&mut self, css: &str) {
        self.visible(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click on `{css}` failed: {e}"));
    }

    /// Sends keystrokes to whatever has the focus.
    pub async fn keys(&self, keys: &str) {
        let focused = self
            .client
            .active_element()
            .await
            .expect("a focused element");
        focused.send_keys(keys).await.expect("keys sent");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
