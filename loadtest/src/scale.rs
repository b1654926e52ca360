//! The figures of a server at scale: its resident memory per known user (from `/stats`), and,
//! given its data directory (`--data-dir`), the log's bytes on disk per event and the SQL
//! view's bytes on disk.
//!
//! Bytes on disk are counted as `du` counts them (blocks allocated, sparse holes left out),
//! over every file under `log/` and the `view.sqlite*` files (the view's WAL included), where
//! `wkuser serve --data-dir` keeps them. Promises: reads only; a figure it cannot read is
//! said to be missing, never guessed. Must never: write in the server's data directory.

use std::io;
use std::path::{Path, PathBuf};

use crate::run::ServerStats;

/// The server's files on disk, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Disk {
    pub log: u64,
    pub view: u64,
}

/// Reads the sizes of the log and the view under `data_dir`.
pub fn disk(data_dir: &Path) -> io::Result<Disk> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} holds no log/ directory (is it the server's --data-dir, and its log not in PostgreSQL?)",
                data_dir.display()
            ),
        ));
    }
    let mut view = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("view.sqlite")
        {
            view += allocated(&entry.path())?;
        }
    }
    Ok(Disk {
        log: allocated(&log_dir)?,
        view,
    })
}

/// Bytes allocated to `path` and, for a directory, everything under it (symlinks not
/// followed).
fn allocated(path: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            // The server may delete a file (a sled segment, a WAL) while we walk.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total += on_disk(&meta);
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(total)
}

#[cfg(unix)]
fn on_disk(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // st_blocks counts 512-byte units whatever the file system's block size.
    meta.blocks() * 512
}

#[cfg(not(unix))]
fn on_disk(meta: &std::fs::Metadata) -> u64 {
    meta.len()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One line: the server's RSS, and per known user (and per user above `baseline`, the RSS of
/// the server before they were added).
pub fn memory_line(what: &str, now: &ServerStats, baseline: Option<&ServerStats>) -> String {
    let Some(rss) = now.rss_bytes else {
        return format!("{what}: the server reports no RSS (no /proc)");
    };
    let mut line = format!(
        "{what}: server RSS {:.1} MiB with {} known users and {} sessions open",
        mib(rss),
        now.known_users,
        now.online_sessions
    );
    if now.known_users > 0 {
        line += &format!(
            ": {:.0} B per known user",
            rss as f64 / now.known_users as f64
        );
    }
    if let Some((b, rss_before)) = baseline.and_then(|b| b.rss_bytes.map(|r| (b, r))) {
        let added = now.known_users.saturating_sub(b.known_users);
        if added > 0 {
            line += &format!(
                " ({:.0} B per user above the {:.1} MiB of {} users before)",
                (rss as f64 - rss_before as f64) / added as f64,
                mib(rss_before),
                b.known_users
            );
        }
    }
    line
}

/// One line: the log's bytes per event and the view's size, or why they are missing.
pub fn disk_line(data_dir: Option<&Path>, now: &ServerStats) -> String {
    let Some(dir) = data_dir else {
        return "disk: pass --data-dir (the server's) for the log's bytes per event".into();
    };
    match disk(dir) {
        Err(e) => format!("disk: cannot read {}: {e}", dir.display()),
        Ok(d) => {
            let per_event = if now.last_seq > 0 {
                format!("{:.0} B per event", d.log as f64 / now.last_seq as f64)
            } else {
                "no event yet".into()
            };
            let per_user = if now.known_users > 0 {
                format!(
                    " ({:.0} B per known user)",
                    d.view as f64 / now.known_users as f64
                )
            } else {
                String::new()
            };
            format!(
                "disk: log {:.1} MiB for {} events, {per_event}; view {:.1} MiB{per_user}",
                mib(d.log),
                now.last_seq,
                mib(d.view)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_and_the_view_are_counted_apart_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::create_dir_all(log.join("blobs")).unwrap();
        std::fs::write(log.join("db"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(log.join("blobs/1"), vec![1u8; 8 * 1024]).unwrap();
        std::fs::write(dir.path().join("view.sqlite"), vec![1u8; 16 * 1024]).unwrap();
        std::fs::write(dir.path().join("view.sqlite-wal"), vec![1u8; 4 * 1024]).unwrap();
        std::fs::write(dir.path().join("other"), vec![1u8; 1024 * 1024]).unwrap();
        let d = disk(dir.path()).unwrap();
        // Blocks allocated: at least the bytes written, and the 1 MiB file left out.
        assert!(d.log >= 72 * 1024 && d.log < 1024 * 1024, "{d:?}");
        assert!(d.view >= 20 * 1024 && d.view < 1024 * 1024, "{d:?}");
        let err = disk(&log).unwrap_err();
        assert!(err.to_string().contains("no log/ directory"), "{err}");
    }

    #[test]
    fn memory_per_known_user_and_above_a_baseline() {
        let before = ServerStats {
            known_users: 0,
            rss_bytes: Some(10 << 20),
            ..ServerStats::default()
        };
        let after = ServerStats {
            known_users: 1000,
            online_sessions: 10,
            rss_bytes: Some((10 << 20) + 500_000),
            ..ServerStats::default()
        };
        let line = memory_line("seeded", &after, Some(&before));
        assert!(
            line.contains("with 1000 known users and 10 sessions open"),
            "{line}"
        );
        assert!(line.contains(": 10986 B per known user"), "{line}");
        assert!(
            line.contains("(500 B per user above the 10.0 MiB of 0 users before)"),
            "{line}"
        );
        let none = ServerStats::default();
        assert!(memory_line("x", &none, None).contains("no RSS"));
    }
}
