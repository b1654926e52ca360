//! Where a log's bytes on disk go: the encoded values, the blocks' keys and headers and the uid runs,
//! against what sled's files take (`docs/performance.md`, "Bytes per event").
//!
//! `cargo run --release --example log_bytes -- DATA_DIR` on a stopped server's data directory
//! (sled locks it). Reads only; prints one table. `scripts/bytes-per-event.sh` runs it after a
//! load-tool run.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use wkuser::domain::RecordedEvent;
use wkuser::log::sled_store::blocks::Block;
use wkuser::log::sled_store::{BLOCKS_TREE, RUNS_TREE};
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
    // The packed layout (src/log/sled_store): events 16 to a key, each uid's seqs 16 to a key.
    let (mut blocks, mut runs) = (Tally::default(), Tally::default());
    for item in db.open_tree(BLOCKS_TREE).unwrap().iter() {
        let (key, value) = item.unwrap();
        blocks.add(key.len() + value.len());
        let number = u64::from_be_bytes(key.as_ref().try_into().expect("an 8-byte key"));
        let block = Block::decode(number, &value).unwrap_or_else(|e| panic!("{e}"));
        for (seq, bytes) in block.iter() {
            let rec = RecordedEvent::decode(seq, bytes).unwrap_or_else(|e| panic!("{seq}: {e}"));
            let tally = by_type.entry(rec.event.kind().to_owned()).or_default();
            tally.add(bytes.len());
            values.add(bytes.len());
            if bytes.first() == Some(&b'{') {
                json.add(bytes.len());
            } else {
                binary.add(bytes.len());
            }
        }
    }
    for item in db.open_tree(RUNS_TREE).unwrap().iter() {
        let (key, value) = item.unwrap();
        runs.add(key.len() + value.len());
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
        "blocks' keys, headers  {:>12} B  {:>7.1} B/event  ({} blocks of {:.1} B)",
        blocks.bytes - values.bytes,
        (blocks.bytes - values.bytes) as f64 / n,
        blocks.count,
        blocks.mean()
    );
    println!(
        "uid runs               {:>12} B  {:>7.1} B/event  ({} runs of {:.1} B)",
        runs.bytes,
        runs.bytes as f64 / n,
        runs.count,
        runs.mean()
    );
    let payload = blocks.bytes + runs.bytes;
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
