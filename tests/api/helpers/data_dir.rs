//! What a run leaves in its data directory, searched byte for byte: every file under it, and
//! the files that hold a given byte string (a secret that must never be stored).
//!
//! Owns nothing. Promises: a file that goes away during the search (SQLite removes its `-wal`
//! and `-shm` when its last connection closes) is not an error. Must never write.

use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("data dir readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files under `dir` whose raw bytes contain `needle`. A file removed between the listing
/// and the read (SQLite's `-wal` and `-shm` go when the last connection closes) holds nothing.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| match std::fs::read(p) {
            Ok(bytes) => bytes.windows(needle.len()).any(|w| w == needle),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("{}: {e}", p.display()),
        })
        .collect()
}
