//! The server under test, in-process: started on a data directory (a fresh temporary one, or
//! one a test kept) with port 0 for both listeners, stopped gracefully, restarted on the same
//! directory, and its event log read in-process.
//!
//! Owns [`TestApp`] and its lifetime. Promises: every start arms the watchdog, so that a hung
//! test fails fast; a temporary data directory lives as long as its `TestApp`. Must never pick
//! a fixed port (the tests run in parallel) or keep a server running past [`TestApp::stop`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use wkuser::app::Server;
use wkuser::config::Config;
use wkuser::domain::event::Connected;
use wkuser::domain::{CloseReason, Event, RecordedEvent, Seq};
use wkuser::log::LogStore;

pub struct TestApp {
    /// `None` only while restarting.
    pub server: Option<Server>,
    pub api: String,
    pub ws: String,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// Extra flags the app was started with (kept across restarts).
    pub flags: Vec<String>,
    _dir: Option<TempDir>,
}

/// Starts the server on a fresh temporary data directory, with `flags` added to the defaults.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let mut app = start_on(&data_dir, flags.iter().map(|s| s.to_string()).collect()).await;
    app._dir = Some(dir);
    app
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the server on an existing data directory.
pub async fn start_on(data_dir: &Path, flags: Vec<String>) -> TestApp {
    let config = test_config(data_dir, &flags);
    let server = Server::start(config).await.expect("server starts");
    TestApp::new(server, data_dir, flags)
}

/// Starts the server on a fresh temporary data directory over a log store the test built
/// (`make_store` gets the log directory), for tests that make storage fail on demand.
pub async fn spawn_app_on_store(
    flags: &[&str],
    make_store: impl FnOnce(&Path) -> Arc<dyn LogStore>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    let config = test_config(dir.path(), &flags);
    let store = make_store(&config.log_dir());
    let server = Server::start_with_log(config, store)
        .await
        .expect("server starts");
    let mut app = TestApp::new(server, dir.path(), flags);
    app._dir = Some(dir);
    app
}

/// The configuration of a test server on `data_dir`: both listeners on port 0 of loopback,
/// then `flags`. Arms the watchdog, as every start goes through here.
fn test_config(data_dir: &Path, flags: &[String]) -> Config {
    crate::watchdog::arm();
    let mut args = vec![
        "--data-dir".to_string(),
        data_dir.display().to_string(),
        "--api-addr".into(),
        "127.0.0.1:0".into(),
        "--ws-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(flags.iter().cloned());
    Config::from_args(args).expect("test config parses")
}

impl TestApp {
    fn new(server: Server, data_dir: &Path, flags: Vec<String>) -> TestApp {
        TestApp {
            api: format!("http://{}", server.api_addr()),
            ws: format!("ws://{}", server.ws_addr()),
            server: Some(server),
            http: reqwest::Client::new(),
            data_dir: data_dir.to_path_buf(),
            flags,
            _dir: None,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// Stops gracefully and starts again on the same data directory (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let fresh = start_on(&self.data_dir, self.flags.clone()).await;
        self.server = fresh.server;
        self.api = fresh.api;
        self.ws = fresh.ws;
    }

    /// Stops gracefully; the data directory stays.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// Every event in the log, read in-process.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.server()
            .write_path()
            .log()
            .read_after(Seq(0), 100_000)
            .expect("log readable")
    }

    /// The `Connected` events of `uid`, in log order.
    pub fn connected_events(&self, uid: &str) -> Vec<Connected> {
        self.events()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Connected(c) if c.uid.as_str() == uid => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The reasons of the `Disconnected` events of `uid`, in log order.
    pub fn close_reasons(&self, uid: &str) -> Vec<CloseReason> {
        self.events()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Disconnected(d) if d.uid.as_str() == uid => Some(d.reason),
                _ => None,
            })
            .collect()
    }
}
