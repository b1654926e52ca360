//! A time limit for the whole test binary, so that a hang fails fast and says where it was.
//!
//! Owns one thread, started by the first test that starts a server. Promises: if the binary is
//! still running after [`LIMIT`], it prints every thread's stack, of this process and of its
//! child processes (with gdb, when the machine has it), and aborts, so that CI fails in minutes
//! with the stacks in its log instead of holding the run until CI's own limit with nothing to
//! show. Must never: fire on a healthy run (the limit is far past any healthy run's length) or
//! keep the binary alive (the thread only sleeps).

use std::sync::Once;
use std::time::Duration;

/// How long the whole binary may run.
pub const LIMIT: Duration = Duration::from_secs(600);

/// Starts the watchdog, once per binary.
pub fn arm() {
    static ARMED: Once = Once::new();
    ARMED.call_once(|| {
        std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(|| {
                std::thread::sleep(LIMIT);
                eprintln!(
                    "\nwatchdog: the test binary is still running after {LIMIT:?}; the tests \
                     named above as running for over 60 seconds are hung. Every thread's stack \
                     follows, then this binary aborts."
                );
                for pid in std::iter::once(std::process::id()).chain(children()) {
                    print_stacks(pid);
                }
                std::process::abort();
            })
            .expect("the watchdog thread starts");
    });
}

/// The pids of this process's children (a `wkuser` the test runs as a process).
fn children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn print_stacks(pid: u32) {
    eprintln!("\nwatchdog: the stacks of process {pid}\n{}", stacks(pid));
}

/// Every thread's stack in process `pid`, as gdb prints them (or why there are none).
pub fn stacks(pid: u32) -> String {
    let gdb = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 40",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match gdb {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(gdb could not run: {e}; no stacks)"),
    }
}
