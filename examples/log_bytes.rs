//! Where a log's bytes on disk go: the encoded values, the keys and the `(uid, seq)` index,
//! against what sled's files take (`docs/performance.md`, "Bytes per event").
//!
//! `cargo run --release --example log_bytes -- DATA_DIR` on a stopped server's data directory
//! (sled locks it). Reads only; prints one table. `scripts/bytes-per-event.sh` runs it after a
//! load-tool run.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use wkuser::domain::{RecordedEvent, Seq};
use wkuser::log::SledStore;

/// Bytes of the files under `dir`: as long as they are, and as allocated on disk (what `du`
/// counts).
fn files(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            let (len, blocks) = files(&entry.path());
            total = (total.0 + len, total.1 + blocks);
        } else {
            total = (total.0 + meta.len(), total.1 + meta.blocks() * 512);
        }
    }
    total
}

#[derive(Default)]
struct Tally {
    count: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: usize) {
        self.count += 1;
        self.bytes += bytes as u64;
    }

    fn mean(&self) -> f64 {
        self.bytes as f64 / self.count.max(1) as f64
    }
}

fn main() {
    let data_dir = std::env::args()
        .nth(1)
        .expect("usage: log_bytes DATA_DIR (of a stopped server)");
    let log_dir = Path::new(&data_dir).join("log");
    let (len, on_disk) = files(&log_dir);
    let store = SledStore::open(&log_dir).unwrap_or_else(|e| panic!("{e}"));
    let db = store.db();

    let mut by_type: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut values, mut json, mut binary) = (Tally::default(), Tally::default(), Tally::default());
    let events = db.open_tree("events").unwrap();
    for item in events.iter() {
        let (key, value) = item.unwrap();
        let seq = Seq::from_key(&key).expect("an 8-byte key");
        let rec = RecordedEvent::decode(seq, &value).unwrap_or_else(|e| panic!("{seq}: {e}"));
        let tally = by_type.entry(rec.event.kind().to_owned()).or_default();
        tally.add(value.len());
        values.add(value.len());
        if value.first() == Some(&b'{') {
            json.add(value.len());
        } else {
            binary.add(value.len());
        }
    }
    let mut index = Tally::default();
    for item in db.open_tree("by_uid").unwrap().iter() {
        let (key, value) = item.unwrap();
        index.add(key.len() + value.len());
    }
    let n = values.count.max(1) as f64;
    println!("log {}", log_dir.display());
    println!("events                 {:>12}", values.count);
    println!(
        "on disk (du)           {:>12} B  {:>7.1} B/event",
        on_disk,
        on_disk as f64 / n
    );
    println!(
        "files' length          {:>12} B  {:>7.1} B/event",
        len,
        len as f64 / n
    );
    println!(
        "values                 {:>12} B  {:>7.1} B/event  (json {} at {:.1} B, binary {} at {:.1} B)",
        values.bytes,
        values.mean(),
        json.count,
        json.mean(),
        binary.count,
        binary.mean()
    );
    println!(
        "event keys             {:>12} B  {:>7.1} B/event",
        values.count * 8,
        8.0
    );
    println!(
        "by_uid entries         {:>12} B  {:>7.1} B/event  ({} entries of {:.1} B)",
        index.bytes,
        index.bytes as f64 / n,
        index.count,
        index.mean()
    );
    let payload = values.bytes + values.count * 8 + index.bytes;
    println!(
        "sled's own (du - kv)   {:>12} B  {:>7.1} B/event  (du is {:.2}x the keys and values)",
        on_disk.saturating_sub(payload),
        on_disk.saturating_sub(payload) as f64 / n,
        on_disk as f64 / payload.max(1) as f64
    );
    for (kind, tally) in &by_type {
        println!(
            "  {kind:<20} {:>12} events, value {:>6.1} B",
            tally.count,
            tally.mean()
        );
    }
}
