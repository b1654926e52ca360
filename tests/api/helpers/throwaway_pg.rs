//! A PostgreSQL server of a test's own, for tests that kill the database itself.
//!
//! Owns one server: `initdb` into a temporary directory, then `postgres` on a free loopback
//! port, both from `pg_config --bindir`, run as the `postgres` role when the tests run as root
//! (PostgreSQL refuses root). The server is a child the test waits for, never daemonised, so a
//! killed postmaster is reaped and a restart on the same directory finds no stale process.
//! Promises: [`ThrowawayPostgres::kill9`] kills the postmaster itself and reaps it; a restart
//! comes back on the same port with every committed row. Must never: touch the machine's own
//! server, or leave a process behind (dropping it kills the server).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    server: Option<Child>,
}

/// Where the PostgreSQL server binaries are, from `pg_config --bindir`.
fn bindir() -> PathBuf {
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect(
            "pg_config runs: install Debian's PostgreSQL server with \
             `apt-get install -y postgresql` to run the tests that kill a database",
        );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        dir.join("initdb").exists(),
        "no initdb in {}: install Debian's PostgreSQL server with `apt-get install -y postgresql`",
        dir.display()
    );
    dir
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args` as the `postgres` role when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &std::path::Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl ThrowawayPostgres {
    pub async fn start() -> ThrowawayPostgres {
        let bin = bindir();
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the throwaway database's directory");
        }
        let data = dir.path().join("data");
        let init = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pg = ThrowawayPostgres {
            dir,
            bin,
            port,
            server: None,
        };
        pg.run().await;
        pg
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on the directory and waits until it takes connections. Just after a
    /// kill, the old server's backends may still hold its shared memory for a moment, and the
    /// new postmaster exits at once: it is started again until one stays.
    async fn run(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = self.spawn_postmaster();
            let url = self.url();
            let up = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return false;
                    }
                    use sqlx::Connection;
                    if let Ok(c) = sqlx::PgConnection::connect(&url).await {
                        let _ = c.close().await;
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            if up == Ok(true) {
                self.server = Some(child);
                return;
            }
            let _ = child.kill().await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "the throwaway PostgreSQL did not start in {} (its log: {})",
                self.dir.path().display(),
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn spawn_postmaster(&self) -> Child {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        // `exec` so that the child is the postmaster itself (its signals and its exit are the
        // server's), as the `postgres` role when we are root.
        let script = format!(
            "exec {} -D {} -p {} -h 127.0.0.1 -k {} -c fsync=on >> {} 2>&1",
            self.bin.join("postgres").display(),
            data.display(),
            self.port,
            self.dir.path().display(),
            log.display()
        );
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts")
    }

    /// The postmaster's pid, from its own file.
    fn postmaster_pid(&self) -> Option<i32> {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// SIGKILL to the postmaster, and waits for it (its children exit when they see it gone).
    pub async fn kill9(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: a plain kill(2) of a pid this helper started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut child) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        // The backends notice the postmaster is gone and exit; a restart waits for them.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Starts the server again on the same directory and port.
    pub async fn restart(&mut self) {
        self.run().await;
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // SAFETY: as in kill9; a server already gone makes this a no-op.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
