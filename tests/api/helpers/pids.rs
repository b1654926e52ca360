//! The machine's processes as the throwaway PostgreSQL's tests see them, read from `/proc`:
//! signalling a pid, its state, its children, and reaping the orphans of a killed server.
//!
//! Owns nothing but these reads and signals. Promises: a pid that is gone reads as gone (never
//! a panic), and this process becomes the reaper of its descendants' orphans at most once.
//! Must never signal a pid it was not given.

use std::sync::Once;

/// Makes this process the reaper of the orphans of its descendants, once: a killed
/// postmaster's children are then reaped here, by pid, instead of lingering as zombies.
pub(super) fn reap_orphans_of_killed_servers() {
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
        let done = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(done, 0, "prctl(PR_SET_CHILD_SUBREAPER) failed");
    });
}

pub(super) fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory preconditions; a process already gone is ESRCH, ignored.
    unsafe { libc::kill(pid, signal) };
}

/// The state letter of process `pid` (`R`, `S`, `T` for stopped, `Z` for a zombie...), or
/// `None` once it is gone.
pub(super) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    after_comm(&stat)?.split_whitespace().next()?.chars().next()
}

/// The pids whose parent is `parent`.
pub(super) fn children_of(parent: u32) -> Vec<u32> {
    all_pids()
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let ppid = after_comm(&stat).and_then(|rest| rest.split_whitespace().nth(1));
            ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

/// The live processes whose command line contains `needle`.
pub fn processes_naming(needle: &str) -> Vec<u32> {
    all_pids()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .filter(|&pid| std::process::id() != pid)
        .collect()
}

/// Reaps those of `pids` that have died and are this process's own (reparented here); returns
/// those still there. One that is not ours counts as gone once it is dead, a zombie or none.
pub(super) fn not_yet_reaped(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|&pid| {
            let Ok(raw) = libc::pid_t::try_from(pid) else {
                return false;
            };
            let mut status = 0;
            // SAFETY: `status` is a valid place for waitpid to write to.
            let reaped = unsafe { libc::waitpid(raw, &mut status, libc::WNOHANG) };
            match reaped {
                r if r == raw => false,
                0 => true,
                _ => !matches!(process_state(pid), Some('Z') | None),
            }
        })
        .collect()
}

fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The fields of a `/proc/PID/stat` after the command name, which may hold spaces and parens.
fn after_comm(stat: &str) -> Option<&str> {
    Some(&stat[stat.rfind(')')? + 1..])
}
