//! A PostgreSQL server of a test's own, for the tests that must kill the database itself: the
//! machine's server at 127.0.0.1:5432 is shared and must never be killed.
//!
//! Owns [`ThrowawayPostgres`]: a temp dir holding a data dir made by `initdb` (or, for a
//! standby, by `pg_basebackup` of another throwaway server) (trust
//! authentication; `--no-sync`, since only the server's processes are ever killed, never the
//! machine, and its sync took seconds per server on a busy disk), run with fsync on, the
//! server's log and its unix sockets, and the postmaster, started
//! from `pg_config --bindir` as a child process of the test on 127.0.0.1 and a free port. As
//! root (CI) the programs run as the `postgres` user, switched to in the child itself, so that
//! the child IS the postmaster: a `runuser` in between forks, waits, and a SIGKILL sent to it
//! would leave the postmaster running as an orphan.
//!
//! Promises:
//! - [`ThrowawayPostgres::kill9`] is a crash: every process of the server is SIGKILLed at once
//!   and reaped, so that [`ThrowawayPostgres::restart`] runs crash recovery on the same data dir
//!   and port. Nothing on these machines reaps an orphan promptly, and a killed postmaster left
//!   unreaped would block its own restart; so the test process makes itself the reaper of the
//!   server's orphans and reaps them by pid.
//! - Every wait is bounded (through [`eventually`]) and fails with the tail of the server's log.
//! - Drop kills and reaps every process of the server and removes the temp dir.
//!
//! Must never: touch the machine's server, daemonise (`pg_ctl`), or let a test pass or skip
//! where the server programs are missing: it fails naming the command that installs them.

use std::fmt;
use std::fs::OpenOptions;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sqlx::Connection;
use tokio::process::{Child, Command};

use super::eventually;
use super::pids::{
    children_of, not_yet_reaped, process_state, processes_naming, reap_orphans_of_killed_servers,
    signal,
};

/// The one command that installs what a fresh Debian machine lacks, named by every failure
/// that a missing program causes.
pub const SETUP_COMMAND: &str = ".ci/setup-postgres";

/// The prefix of every throwaway server's temp dir; with a random suffix, it names the server:
/// its cluster_name, hence every one of its processes' titles.
const DIR_PREFIX: &str = "wk-throwaway-pg-";

/// How many free ports a first start tries before it gives up; another program may bind the
/// chosen port between the probe and the server's own bind.
const PORT_ATTEMPTS: u32 = 5;

/// How long one connection attempt of the readiness probe may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many lines of the server's log a failure shows.
const LOG_TAIL_LINES: usize = 40;

/// A PostgreSQL server of one test, killed and removed when dropped.
pub struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    run_as: Option<ServerUser>,
    port: u16,
    postmaster: Option<Child>,
}

/// The user the server's programs run as when the tests run as root.
#[derive(Clone, Copy)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

impl ThrowawayPostgres {
    /// A new server, accepting connections: `initdb` into a new temp dir, then the postmaster
    /// on a free port of 127.0.0.1.
    pub async fn start() -> ThrowawayPostgres {
        let mut server = Self::in_new_dir();
        server.initdb().await;
        server.listen().await;
        server
    }

    /// A hot standby of `primary`, accepting connections: a base backup of it into a new temp
    /// dir (`pg_basebackup --write-recovery-conf`), started on a free port; it streams the
    /// primary's WAL from then on.
    pub async fn standby_of(primary: &ThrowawayPostgres) -> ThrowawayPostgres {
        let mut server = Self::in_new_dir();
        server.base_backup_of(primary).await;
        server.listen().await;
        server
    }

    /// A server not made yet: its temp dir, given to the server's user.
    fn in_new_dir() -> ThrowawayPostgres {
        crate::watchdog::arm();
        reap_orphans_of_killed_servers();
        let bindir = server_binaries("pg_config").unwrap_or_else(|missing| panic!("{missing}"));
        let run_as = server_user().unwrap_or_else(|missing| panic!("{missing}"));
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("a temp dir for a throwaway PostgreSQL");
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .expect("the throwaway PostgreSQL's temp dir given to the postgres user");
        }
        ThrowawayPostgres {
            dir,
            bindir,
            run_as,
            port: 0,
            postmaster: None,
        }
    }

    /// Starts the postmaster on a free port of 127.0.0.1 and waits until it accepts
    /// connections, on another port if the one chosen was taken meanwhile.
    async fn listen(&mut self) {
        let server = self;
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            let log_before = server.log_len();
            server.postmaster = Some(server.spawn_postmaster());
            let Err(status) = server.wait_until_accepting().await else {
                return;
            };
            server.postmaster = None;
            let port_taken = server
                .log_since(log_before)
                .contains("Address already in use");
            if !(port_taken && attempt < PORT_ATTEMPTS) {
                server.fail(&format!("exited at its start ({status})"));
            }
        }
        unreachable!("the last attempt returns or fails")
    }

    /// The URL of the server's `postgres` database, as its superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir that holds everything of this server; its name is in every one of the
    /// server's process titles.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of the running postmaster.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.postmaster.as_ref().and_then(Child::id)
    }

    /// SIGKILLs every process of the server at once, as a crash would, and reaps them all. The
    /// postmaster is stopped first, so that it forks no process while its children are listed.
    pub async fn kill9(&mut self) {
        let mut postmaster = self
            .postmaster
            .take()
            .expect("kill9 of a throwaway PostgreSQL that is not running");
        let pid = postmaster.id().expect("the postmaster not reaped yet");
        signal(pid, libc::SIGSTOP);
        let log = self.log_path();
        eventually(
            &format!("the postmaster {pid} to stop (SIGSTOP)"),
            async || WithLog::new(process_state(pid), &log),
            |state| matches!(state.seen, Some('T' | 'Z') | None),
        )
        .await;
        let children = children_of(pid);
        signal(pid, libc::SIGKILL);
        for &child in &children {
            signal(child, libc::SIGKILL);
        }
        eventually(
            &format!("the killed postmaster {pid} reaped"),
            async || WithLog::new(postmaster.try_wait().map_err(|e| e.to_string()), &log),
            |exited| matches!(exited.seen, Ok(Some(_))),
        )
        .await;
        eventually(
            &format!("the killed server processes {children:?} reaped"),
            async || WithLog::new(not_yet_reaped(&children), &log),
            |left| left.seen.is_empty(),
        )
        .await;
    }

    /// Stops the server with a fast shutdown (SIGINT): open transactions are rolled back,
    /// connections closed, and a checkpoint written.
    pub async fn stop(&mut self) {
        let mut postmaster = self
            .postmaster
            .take()
            .expect("stop of a throwaway PostgreSQL that is not running");
        let pid = postmaster.id().expect("the postmaster not reaped yet");
        signal(pid, libc::SIGINT);
        let log = self.log_path();
        let exited = eventually(
            &format!("the postmaster {pid} to shut down (SIGINT)"),
            async || WithLog::new(postmaster.try_wait().map_err(|e| e.to_string()), &log),
            |exited| matches!(exited.seen, Ok(Some(_))),
        )
        .await;
        if let Ok(Some(status)) = exited.seen {
            if !status.success() {
                self.fail(&format!("shut down with {status}"));
            }
        }
    }

    /// Starts the server again on the same data dir and port, after [`Self::kill9`] or
    /// [`Self::stop`], and waits until it accepts connections (after crash recovery, if any).
    pub async fn restart(&mut self) {
        assert!(
            self.postmaster.is_none(),
            "restart of a throwaway PostgreSQL that is running: kill9 or stop it first"
        );
        self.postmaster = Some(self.spawn_postmaster());
        if let Err(status) = self.wait_until_accepting().await {
            self.postmaster = None;
            self.fail(&format!("exited at its restart ({status})"));
        }
    }

    /// The pids of the live processes of this server: those whose command line names its
    /// temp dir (the postmaster's `-D`, the others' title through `cluster_name`).
    pub fn processes(&self) -> Vec<u32> {
        processes_naming(&self.name())
    }

    async fn base_backup_of(&self, primary: &ThrowawayPostgres) {
        let mut backup = Command::new(self.bindir.join("pg_basebackup"));
        backup
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--host=127.0.0.1", "--username=postgres"])
            .arg(format!("--port={}", primary.port))
            .args(["--write-recovery-conf", "--checkpoint=fast", "--no-sync"])
            .current_dir(self.dir())
            .stdin(Stdio::null());
        self.run_as_server_user(&mut backup);
        let out = backup.output().await.unwrap_or_else(|e| {
            panic!(
                "pg_basebackup in {} could not run: {e}",
                self.dir().display()
            )
        });
        assert!(
            out.status.success(),
            "pg_basebackup of the server on port {} into {} failed ({}):\n{}{}",
            primary.port,
            self.dir().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn initdb(&self) {
        let mut initdb = Command::new(self.bindir.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--username=postgres", "--auth=trust"])
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
            .current_dir(self.dir())
            .stdin(Stdio::null());
        self.run_as_server_user(&mut initdb);
        let out = initdb
            .output()
            .await
            .unwrap_or_else(|e| panic!("initdb in {} could not run: {e}", self.dir().display()));
        assert!(
            out.status.success(),
            "initdb in {} failed ({}):\n{}{}",
            self.dir().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_postmaster(&self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the throwaway PostgreSQL's log file");
        let mut postgres = Command::new(self.bindir.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir())
            .args([
                "-c",
                "fsync=on",
                "-c",
                &format!("cluster_name={}", self.name()),
            ])
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file shared by stdout"))
            .stderr(log)
            .kill_on_drop(true);
        self.run_as_server_user(&mut postgres);
        postgres
            .spawn()
            .unwrap_or_else(|e| panic!("postgres in {} could not start: {e}", self.dir().display()))
    }

    /// Waits until the server accepts a connection; `Err` with its status if it exited first.
    async fn wait_until_accepting(&mut self) -> Result<(), ExitStatus> {
        let url = self.url();
        let log = self.log_path();
        let postmaster = self.postmaster.as_mut().expect("a postmaster started");
        let seen = eventually(
            &format!("PostgreSQL at {url} to accept connections"),
            async || WithLog::new(probe(postmaster, &url).await, &log),
            |startup| !matches!(startup.seen, Startup::NotYet(_)),
        )
        .await;
        match seen.seen {
            Startup::Accepting => Ok(()),
            Startup::Exited(status) => Err(status),
            Startup::NotYet(_) => unreachable!("eventually returns a value that holds"),
        }
    }

    fn run_as_server_user(&self, command: &mut Command) {
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "the throwaway PostgreSQL in {} on port {} {what}; its log ends with:\n{}",
            self.dir().display(),
            self.port,
            log_tail(&self.log_path())
        )
    }

    fn name(&self) -> String {
        let name = self.dir().file_name().expect("a temp dir has a name");
        name.to_string_lossy().into_owned()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    fn log_since(&self, offset: u64) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }
}

impl Drop for ThrowawayPostgres {
    /// Kills and reaps every process of the server, then the temp dir goes. Waits a bounded
    /// time and never panics: a drop may run while a failed test unwinds, and then the tail of
    /// the server's log is printed first, beside the failure.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the throwaway PostgreSQL in {} on port {} (the test failed); its log ends with:\n{}",
                self.dir().display(),
                self.port,
                log_tail(&self.log_path())
            );
        }
        let Some(mut postmaster) = self.postmaster.take() else {
            return;
        };
        let Some(pid) = postmaster.id() else {
            return;
        };
        let deadline = std::time::Instant::now() + super::PATIENCE;
        let pause = || std::thread::sleep(Duration::from_millis(10));
        signal(pid, libc::SIGSTOP);
        while !matches!(process_state(pid), Some('T' | 'Z') | None)
            && std::time::Instant::now() < deadline
        {
            pause();
        }
        let children = children_of(pid);
        signal(pid, libc::SIGKILL);
        for &child in &children {
            signal(child, libc::SIGKILL);
        }
        while !matches!(postmaster.try_wait(), Ok(Some(_)) | Err(_))
            && std::time::Instant::now() < deadline
        {
            pause();
        }
        while !not_yet_reaped(&children).is_empty() && std::time::Instant::now() < deadline {
            pause();
        }
    }
}

/// Where PostgreSQL's server programs are, as `pg_config` (the program named) says; the error
/// names the command that installs them.
pub fn server_binaries(pg_config: &str) -> Result<PathBuf, String> {
    let bindir = match std::process::Command::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => {
            return Err(missing(&format!(
                "`{pg_config} --bindir` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
        Err(e) => return Err(missing(&format!("`{pg_config}` could not run: {e}"))),
    };
    server_programs_in(&bindir, pg_config)?;
    Ok(bindir)
}

/// Checks that `bindir` holds the programs a throwaway server needs.
pub fn server_programs_in(bindir: &Path, pg_config: &str) -> Result<(), String> {
    for program in ["initdb", "postgres"] {
        if !bindir.join(program).is_file() {
            return Err(missing(&format!(
                "`{pg_config} --bindir` names {}, which has no `{program}`",
                bindir.display()
            )));
        }
    }
    Ok(())
}

fn missing(why: &str) -> String {
    format!(
        "PostgreSQL's server programs are missing for a throwaway PostgreSQL: {why}. As root, \
         run `{SETUP_COMMAND}` (it installs Debian's postgresql-15)"
    )
}

/// The user to run the server as: none (this user) unless the tests run as root, which
/// PostgreSQL refuses to run as; then `postgres`, which Debian's package creates.
fn server_user() -> Result<Option<ServerUser>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut strings = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, and `strings` is as long as said.
    let error = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            strings.as_mut_ptr(),
            strings.len(),
            &mut found,
        )
    };
    if error != 0 || found.is_null() {
        return Err(missing(
            "the tests run as root, and this machine has no `postgres` user to run the server as",
        ));
    }
    Ok(Some(ServerUser {
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    }))
}

/// A port of 127.0.0.1 that is free now, outside the kernel's range of ephemeral ports: no
/// client connection of the tests, and no server bound to port 0, is handed it meanwhile.
fn free_port() -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = ephemeral_from.saturating_sub(10_000).max(1);
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u32.. {
        let port = 10_000 + (random.hash_one(attempt) % u64::from(span)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(
            attempt < 1000,
            "no free port of 127.0.0.1 below {ephemeral_from}"
        );
    }
    unreachable!()
}

/// What a probe of a starting server saw.
#[derive(Debug)]
enum Startup {
    Accepting,
    NotYet(String),
    Exited(ExitStatus),
}

async fn probe(postmaster: &mut Child, url: &str) -> Startup {
    match postmaster.try_wait() {
        Ok(Some(status)) => return Startup::Exited(status),
        Ok(None) => {}
        Err(e) => return Startup::NotYet(format!("the postmaster cannot be waited on: {e}")),
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(url)).await {
        Ok(Ok(connection)) => {
            connection.close().await.ok();
            Startup::Accepting
        }
        Ok(Err(e)) => Startup::NotYet(e.to_string()),
        Err(_) => Startup::NotYet(format!("no answer to a connect in {CONNECT_TIMEOUT:?}")),
    }
}

/// A probe's value with the server's log, so that a wait that fails shows what the server said.
struct WithLog<T> {
    seen: T,
    log: PathBuf,
}

impl<T> WithLog<T> {
    fn new(seen: T, log: &Path) -> Self {
        WithLog {
            seen,
            log: log.to_path_buf(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for WithLog<T> {
    /// Reads the log when formatted, which is only when a wait fails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}; the server's log ends with:\n{}",
            self.seen,
            log_tail(&self.log)
        )
    }
}

fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("({} unreadable: {e})", log.display()),
    }
}
