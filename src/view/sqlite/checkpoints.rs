//! The view's WAL checkpoints: on a thread of their own, at the idle IO priority, in small
//! steps.
//!
//! Left to SQLite, a checkpoint runs inside the commit that takes the WAL past
//! `wal_autocheckpoint` pages (1,000): it syncs the WAL, writes up to a thousand scattered
//! pages into the database file and syncs that. Under churn that is a burst of a few MB every
//! fraction of a second, and the event log's write-ahead syncs, which every connect and close
//! waits for, queue behind it on the device (docs/performance.md, "The view's checkpoints
//! off the event log's way").
//!
//! Owns one connection to the view, on a thread whose IO class is idle (Linux; elsewhere the
//! thread runs at the default class), and checkpoints every [`INTERVAL`] in SQLite's passive
//! mode, which never waits for the projector or a reader. The connection's own worker thread,
//! which does the IO, is started from this thread and so inherits its IO class. Promises:
//! every sync of the view's files happens here, unless this thread falls behind by
//! [`super::FALLBACK_AUTOCHECKPOINT`] pages, when SQLite's own checkpoint takes over; it stops
//! when the view closes or is dropped. Must never: write a row, or hold the view's writers
//! back.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;

/// How often the WAL is checkpointed: about a tenth of a second of churn's pages at a time.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The checkpointing thread, stopped when dropped.
pub struct Checkpoints {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Stop {
    asked: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn ask(&self) {
        *self.asked.lock() = true;
        self.wake.notify_all();
    }

    /// Waits `interval` or until asked to stop; whether asked.
    fn wait(&self, interval: Duration) -> bool {
        let mut asked = self.asked.lock();
        if !*asked {
            self.wake.wait_for(&mut asked, interval);
        }
        *asked
    }
}

impl Checkpoints {
    /// Starts checkpointing the view at `path` (which must exist, in WAL mode).
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let stop = Arc::new(Stop::default());
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false);
        let thread = std::thread::Builder::new()
            .name("wkuser-view-ckpt".into())
            .spawn({
                let stop = stop.clone();
                move || run(options, &stop)
            })?;
        Ok(Checkpoints {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one checkpoint's time).
    pub async fn stop(mut self) {
        self.stop.ask();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.stop.ask();
    }
}

fn run(options: SqliteConnectOptions, stop: &Stop) {
    if let Err(e) = lower_io_priority() {
        tracing::warn!(error = %e, "the view's checkpoints run at the default IO priority");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the view's checkpoints left to SQLite");
            return;
        }
    };
    runtime.block_on(async {
        let mut conn = match SqliteConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(error = %e, "the view's checkpoints left to SQLite");
                return;
            }
        };
        while !stop.wait(INTERVAL) {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(error = %e, "a checkpoint of the view failed; trying again");
            }
        }
        let _ = conn.close().await;
    });
}

/// The calling thread (and the threads it starts) into the idle IO class: the device serves
/// its requests when no others wait.
#[cfg(target_os = "linux")]
fn lower_io_priority() -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: a plain system call; with `who` 0 it changes the calling thread only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_io_priority() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::SqliteView;
    use crate::view::ViewStore;

    /// Rows committed reach the database file without a commit ever checkpointing (far fewer
    /// pages than SQLite's fallback): the thread checkpointed them.
    #[tokio::test]
    async fn commits_reach_the_database_file_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sqlite");
        let view = SqliteView::open(&path).await.unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for i in 0..2_000 {
            sqlx::query("INSERT INTO users (uid, created_seq, created_at) VALUES (?1, ?2, 0)")
                .bind(format!("user-{i:06}-{}", "x".repeat(40)))
                .bind(i)
                .execute(&view.pool)
                .await
                .unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() <= before {
            assert!(
                Instant::now() < deadline,
                "the database file never grew: nothing checkpointed the WAL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        view.close().await;
    }

    /// The checkpointing thread, and the connection worker it starts (which does the IO), are
    /// in the idle IO class.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_checkpoints_run_in_the_idle_io_class() {
        let dir = tempfile::tempdir().unwrap();
        let view = SqliteView::open(&dir.path().join("v.sqlite"))
            .await
            .unwrap();
        // The thread opens its connection after the view is open: looked for until it has.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let (ours, idle_workers) = loop {
            let found = idle_threads();
            if (found.0 >= 1 && found.1 >= 1) || Instant::now() >= deadline {
                break found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(ours >= 1, "no checkpointing thread found");
        assert!(idle_workers >= 1, "no connection worker in the idle class");
        view.close().await;
    }

    /// The checkpointing threads (each asserted to be in the idle class), and the connection
    /// workers in the idle class, of this process.
    #[cfg(target_os = "linux")]
    fn idle_threads() -> (usize, usize) {
        let idle = 3 << 13;
        let mut ours = 0;
        let mut idle_workers = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap();
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            let tid: libc::c_long = task.file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: a plain system call reading a thread's IO priority.
            let class = unsafe { libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, tid) };
            if name.trim() == "wkuser-view-ckp" {
                assert_eq!(class, idle, "the checkpointing thread's IO priority");
                ours += 1;
            } else if name.starts_with("sqlx-sqlite") && class == idle {
                idle_workers += 1;
            }
        }
        (ours, idle_workers)
    }
}
