//! The packed store as a whole: batches written, taken back and replayed read back as a plain
//! list would; a log of the layout before, or its conversion cut short, opens packed; the
//! golden encodings of a block and a run still decode.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::domain::Uid;

fn conf(dir: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(dir.join("conf")).unwrap()).into_owned()
}

#[test]
fn a_new_log_is_not_compressed_and_a_compressed_one_keeps_its_setting() {
    let new = tempfile::tempdir().unwrap();
    drop(SledStore::open(new.path()).unwrap());
    assert!(conf(new.path()).contains("use_compression: false"));
    drop(SledStore::open(new.path()).expect("reopens with its own setting"));

    let old = tempfile::tempdir().unwrap();
    let made = sled::Config::new().path(old.path()).use_compression(true);
    drop(made.open().unwrap());
    let store = SledStore::open(old.path()).expect("a log made with compression opens");
    store
        .write(&[EncodedRecord {
            seq: Seq(1),
            bytes: b"x".to_vec(),
            uids: vec![],
        }])
        .unwrap();
    store.flush().unwrap();
    drop(store);
    assert!(conf(old.path()).contains("use_compression: true"));
    let again = SledStore::open(old.path()).unwrap();
    assert_eq!(again.last_seq().unwrap(), Seq(1));
}

fn record(seq: u64, bytes: Vec<u8>, uids: &[&str]) -> EncodedRecord {
    EncodedRecord {
        seq: Seq(seq),
        bytes,
        uids: uids.iter().map(|u| Uid::parse(u).unwrap()).collect(),
    }
}

const UIDS: [&str; 4] = ["ann", "an", "bob", "cy"];

/// What the log should read: each seq's bytes and uids.
type Model = BTreeMap<u64, (Vec<u8>, Vec<&'static str>)>;

fn check_reads(store: &SledStore, model: &Model, after: u64, limit: usize) {
    let last = model.keys().last().copied().unwrap_or(0);
    assert_eq!(store.last_seq().unwrap(), Seq(last));
    let want: Vec<(Seq, Vec<u8>)> = model
        .range(after + 1..)
        .take(limit)
        .map(|(s, (b, _))| (Seq(*s), b.clone()))
        .collect();
    assert_eq!(store.read_after(Seq(after), limit).unwrap(), want);
    for uid in UIDS {
        let want: Vec<(Seq, Vec<u8>)> = model
            .range(after + 1..)
            .filter(|(_, (_, uids))| uids.contains(&uid))
            .take(limit)
            .map(|(s, (b, _))| (Seq(*s), b.clone()))
            .collect();
        assert_eq!(
            store.read_uid(uid, Seq(after), limit).unwrap(),
            want,
            "{uid}"
        );
    }
}

/// An event of the property: its length and the indexes in [`UIDS`] of the uids it names.
type EventShape = (usize, Vec<usize>);

/// One batch of the property: events of 0 to 300 bytes naming 0 to 3 of [`UIDS`] (perhaps one
/// twice), and whether it is taken back after it was written.
fn batches() -> impl Strategy<Value = Vec<(Vec<EventShape>, bool)>> {
    let event = (0usize..300, prop::collection::vec(0usize..UIDS.len(), 0..4));
    prop::collection::vec(
        (
            prop::collection::vec(event, 1..40),
            prop::bool::weighted(0.2),
        ),
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random batches written and flushed, some taken back instead, the write-ahead file
    /// rolled over after any of them (its held-back block and runs into sled), the log closed
    /// without its last flush of sled (its write-ahead file replayed at the next open) and
    /// opened again: every read, after each batch and at the end, from any `after` at any
    /// limit, is what a plain list holds.
    #[test]
    fn batches_taken_back_and_replayed_read_back(
        batches in batches(),
        after in 0u64..600,
        limit in 1usize..100,
        roll_at in prop::option::of(1u64..20_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        if let Some(bytes) = roll_at {
            store.wal.lock().roll_at = bytes;
        }
        let mut model = Model::new();
        let mut next = 1u64;
        for (events, take_back) in batches {
            let batch: Vec<EncodedRecord> = events
                .iter()
                .enumerate()
                .map(|(i, (len, uids))| {
                    let seq = next + i as u64;
                    let uids: Vec<&str> = uids.iter().map(|u| UIDS[*u]).collect();
                    record(seq, vec![(seq % 251) as u8; *len], &uids)
                })
                .collect();
            store.write(&batch).unwrap();
            if take_back {
                store.discard(&batch).unwrap();
            } else {
                store.flush().unwrap();
                for r in &batch {
                    let uids = r.uids.iter().map(|u| *UIDS.iter().find(|x| **x == u.as_str()).unwrap()).collect();
                    model.insert(r.seq.0, (r.bytes.clone(), uids));
                }
                next += batch.len() as u64;
            }
            check_reads(&store, &model, after, limit);
        }
        check_reads(&store, &model, after, limit);
        // A crash: the store is leaked with sled unflushed... sled cannot be left open twice,
        // so the closest a unit test gets is the write-ahead file replayed over a whole log.
        // The files are read once the checkpoint running (if any) has removed what it removes.
        store.wal.lock().stop_checkpoints();
        let wal_files: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal."))
            .map(|p| { let b = std::fs::read(&p).unwrap(); (p, b) })
            .collect();
        drop(store);
        for (path, bytes) in &wal_files {
            std::fs::write(path, bytes).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        check_reads(&store, &model, after, limit);
        check_reads(&store, &model, 0, 10_000);
    }
}

#[test]
fn a_batch_taken_back_mid_block_leaves_the_block_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let first: Vec<EncodedRecord> = (1..=10).map(|s| record(s, vec![1; 5], &["ann"])).collect();
    store.write(&first).unwrap();
    store.flush().unwrap();
    let second: Vec<EncodedRecord> = (11..=40)
        .map(|s| record(s, vec![2; 5], &["ann", "bob"]))
        .collect();
    store.write(&second).unwrap();
    assert_eq!(store.last_seq().unwrap(), Seq(40));
    store.discard(&second).unwrap();
    assert_eq!(store.last_seq().unwrap(), Seq(10));
    assert_eq!(store.blocks.len(), 1);
    assert!(store.read_uid("bob", Seq(0), 100).unwrap().is_empty());
    let third: Vec<EncodedRecord> = (11..=12).map(|s| record(s, vec![3; 5], &["cy"])).collect();
    store.write(&third).unwrap();
    store.flush().unwrap();
    let all = store.read_after(Seq(0), 100).unwrap();
    assert_eq!(all.len(), 12);
    assert_eq!(all[11].1, vec![3; 5]);
    assert_eq!(store.read_uid("ann", Seq(0), 100).unwrap().len(), 10);
}

/// Writes the layout before the packed one into `dir` with sled itself, as the build before
/// wrote it: `events` (seq -> bytes) and `by_uid` (uid ++ 0 ++ seq -> empty).
fn old_layout(dir: &Path, events: u64) -> Model {
    let db = open_waiting_for_release(&sled::Config::new().path(dir)).unwrap();
    let (ev, ix) = (
        db.open_tree("events").unwrap(),
        db.open_tree("by_uid").unwrap(),
    );
    let mut model = Model::new();
    for seq in 1..=events {
        let uids: Vec<&'static str> = match seq % 3 {
            0 => vec!["ann", "bob"],
            1 => vec!["cy"],
            _ => vec![],
        };
        let bytes = format!("event {seq}").into_bytes();
        ev.insert(seq.to_be_bytes(), bytes.clone()).unwrap();
        for uid in &uids {
            let mut k = uid.as_bytes().to_vec();
            k.push(0);
            k.extend_from_slice(&seq.to_be_bytes());
            ix.insert(k, &[][..]).unwrap();
        }
        model.insert(seq, (bytes, uids));
    }
    db.flush().unwrap();
    model
}

fn tree_names(dir: &Path) -> Vec<String> {
    let db = open_waiting_for_release(&sled::Config::new().path(dir)).unwrap();
    db.tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[test]
fn a_log_of_the_layout_before_is_converted_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let model = old_layout(dir.path(), 1000);
    let store = SledStore::open(dir.path()).unwrap();
    check_reads(&store, &model, 0, 10_000);
    check_reads(&store, &model, 333, 17);
    assert_eq!(store.blocks.len(), 63, "1000 events, 16 to a block");
    drop(store);
    let names = tree_names(dir.path());
    assert!(
        !names.iter().any(|n| n == "events" || n == "by_uid"),
        "{names:?}"
    );
    let store = SledStore::open(dir.path()).unwrap();
    check_reads(&store, &model, 990, 100);
}

#[test]
fn a_conversion_cut_short_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let model = old_layout(dir.path(), 500);
    {
        // Cut short: the packed trees half filled (and wrong), no marker.
        let db = open_waiting_for_release(&sled::Config::new().path(dir.path())).unwrap();
        let blocks_tree = db.open_tree(BLOCKS_TREE).unwrap();
        blocks_tree
            .insert(blocks::key_of(0), blocks::encode(Seq(1), [&b"stale"[..]]))
            .unwrap();
        blocks_tree
            .insert(
                blocks::key_of(40),
                blocks::encode(Seq(641), [&b"beyond"[..]]),
            )
            .unwrap();
        let runs = db.open_tree(RUNS_TREE).unwrap();
        runs.insert(
            uid_runs::key("ann", Seq(999)),
            uid_runs::encode(&[Seq(999)]),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    check_reads(&store, &model, 0, 10_000);
    check_reads(&store, &model, 100, 30);
    drop(store);

    // Cut short after the marker, before the old trees were dropped: they are dropped.
    let dir = tempfile::tempdir().unwrap();
    let model = old_layout(dir.path(), 40);
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = open_waiting_for_release(&sled::Config::new().path(dir.path())).unwrap();
        db.open_tree("by_uid")
            .unwrap()
            .insert(b"zed\0\0\0\0\0\0\0\0\x01", &[][..])
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    check_reads(&store, &model, 0, 100);
    drop(store);
    assert!(!tree_names(dir.path()).iter().any(|n| n == "by_uid"));
}

#[test]
fn a_layout_this_build_does_not_know_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = open_waiting_for_release(&sled::Config::new().path(dir.path())).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("layout", &[3u8])
            .unwrap();
        db.flush().unwrap();
    }
    let refused = SledStore::open(dir.path()).err().expect("refused");
    assert!(refused.to_string().contains("newer build"), "{refused}");
}

fn golden(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/log")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

/// The stored formats cannot change by accident: the golden files decode to what they hold,
/// and what they hold encodes to them.
#[test]
fn the_golden_block_and_run_decode_and_encode_the_same() {
    let value = golden("block.n3.hex");
    let block = blocks::Block::decode(3, &value).unwrap();
    assert_eq!(block.first, Seq(62));
    let events: Vec<&[u8]> = vec![b"first", &[], &[0xab; 130]];
    assert_eq!(block.events, events);
    assert_eq!(blocks::encode(Seq(62), events), value);

    let key = golden("run.key.hex");
    let value = golden("run.value.hex");
    let (uid, first) = uid_runs::split_key(&key).unwrap();
    assert_eq!((uid, first), (&b"user-7"[..], Seq(300)));
    let seqs: Vec<Seq> = [300, 301, 445, 70_000].map(Seq).to_vec();
    assert_eq!(uid_runs::decode(first, &value).unwrap(), seqs);
    assert_eq!(uid_runs::encode(&seqs), value);
    assert_eq!(uid_runs::key("user-7", Seq(300)), key);
}

fn write_flushed(store: &SledStore, seqs: std::ops::RangeInclusive<u64>, uids: &[&str]) {
    let batch: Vec<EncodedRecord> = seqs.map(|s| record(s, vec![7; 40], uids)).collect();
    store.write(&batch).unwrap();
    store.flush().unwrap();
}

/// The roll over of the write-ahead file puts the block being filled and every run changed
/// since the last roll into sled before its checkpoint removes the older file: read from
/// sled's trees alone (what a crash right after the checkpoint leaves, its file gone), every
/// event and every uid's seq is there.
#[test]
fn a_roll_puts_the_held_back_block_and_runs_into_sled_before_the_old_file_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    write_flushed(&store, 1..=2, &["ann"]);
    write_flushed(&store, 3..=5, &["ann", "bob"]);
    assert!(
        store.blocks.is_empty() && store.runs.is_empty(),
        "held back until the roll"
    );
    store.wal.lock().roll_at = 1;
    write_flushed(&store, 6..=7, &["cy"]);
    // Waits for the checkpoint the roll started: sled flushed, the first file removed.
    store.wal.lock().stop_checkpoints();
    assert!(
        !dir.path().join(format!("wal.{:020}", 0)).exists(),
        "the checkpoint removed the file of the batches"
    );
    let (number, value) = store.blocks.last().unwrap().unwrap();
    let block = blocks::Block::decode(blocks::number_from_key(&number).unwrap(), &value).unwrap();
    assert_eq!((block.first, block.last()), (Seq(1), Seq(7)));
    let in_sled = |uid| uid_runs::seqs_after(&store.runs, uid, Seq(0), 100, None).unwrap();
    assert_eq!(in_sled("ann"), [1, 2, 3, 4, 5].map(Seq));
    assert_eq!(in_sled("bob"), [3, 4, 5].map(Seq));
    assert_eq!(in_sled("cy"), [6, 7].map(Seq));
    // What follows the roll is held back again; a full block goes to sled at once.
    store.wal.lock().roll_at = u64::MAX;
    write_flushed(&store, 8..=9, &["ann"]);
    assert_eq!(in_sled("ann"), [1, 2, 3, 4, 5].map(Seq));
    write_flushed(&store, 10..=16, &["dee"]);
    assert_eq!(store.blocks.len(), 1);
    assert_eq!(
        blocks::last_seq(0, &store.blocks.get(blocks::key_of(0)).unwrap().unwrap()).unwrap(),
        Seq(16),
        "the full block is in sled"
    );
    assert_eq!(
        store.read_uid("ann", Seq(0), 100).unwrap().len(),
        7,
        "readers see the held-back run"
    );
}

/// A reader beside the writer never misses an event it could see before: whatever moves from
/// memory to sled meanwhile (full blocks, full runs, rolls), each read holds every event up to
/// the last seq read before it, and each uid's history every one of its seqs.
#[test]
fn a_reader_beside_the_writer_sees_every_event_written_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    store.wal.lock().roll_at = 4096;
    const LAST: u64 = 3000;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut next = 1u64;
            while next <= LAST {
                let end = (next + next % 3).min(LAST);
                write_flushed(&store, next..=end, &["ann"]);
                next = end + 1;
            }
        })
    };
    let mut seen = Seq(0);
    loop {
        let done = writer.is_finished();
        let all = store.read_after(Seq(0), usize::MAX).unwrap();
        assert!(
            all.len() as u64 >= seen.0,
            "{} events after {seen} was seen",
            all.len()
        );
        let ann = store.read_uid("ann", Seq(0), usize::MAX).unwrap();
        assert!(
            ann.len() as u64 >= seen.0,
            "ann's {} after {seen} was seen",
            ann.len()
        );
        assert!(all.iter().zip(1..).all(|((s, _), want)| s.0 == want));
        assert!(ann.iter().zip(1..).all(|((s, _), want)| s.0 == want));
        if let Some((last, _)) = all.last() {
            seen = seen.max(*last);
        }
        let tail = store.read_after(seen, 10).unwrap();
        assert!(tail.first().is_none_or(|(s, _)| *s == seen.next()));
        if done {
            break;
        }
    }
    writer.join().unwrap();
    assert_eq!(seen, Seq(LAST));
}

/// A uid's seqs as a reader of the store finds them: sled's runs before the held-back one, then
/// that one (as [`SledStore::read_uid`] reads them).
fn seqs_of(pending: &pending::Pending, runs: &sled::Tree, uid: &str) -> Vec<u64> {
    let run = pending.snapshot(Some(uid)).run;
    let below = run.as_ref().map(|r| r[0]);
    let mut seqs = uid_runs::seqs_after(runs, uid, Seq(0), usize::MAX, below).unwrap();
    seqs.extend(run.unwrap_or_default());
    seqs.into_iter().map(|s| s.0).collect()
}

fn append(
    pending: &mut pending::Pending,
    store: &SledStore,
    seqs: std::ops::RangeInclusive<u64>,
    uid: &str,
) {
    let batch: Vec<EncodedRecord> = seqs.map(|s| record(s, vec![1; 8], &[uid])).collect();
    pending.append(&store.blocks, &store.runs, &batch).unwrap();
}

/// The runs a roll hands over reach sled on the checkpoint thread, later: meanwhile a reader
/// still finds every seq, and an append goes on from the handed-over run; a run filled since
/// goes to sled at once, without waiting for the checkpoint, and the checkpoint then leaves it
/// alone (its older copy would overwrite it) but stores the others; a hand-over that never ran
/// is stored by the next spill, but for the runs held back since.
#[test]
fn runs_handed_over_at_a_roll_are_read_and_appended_to_before_they_reach_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut pending = pending::Pending::stored(None);
    let full = uid_runs::SEQS_PER_RUN as u64;
    let in_sled = |uid| -> Vec<u64> {
        uid_runs::seqs_after(&store.runs, uid, Seq(0), 100, None)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect()
    };
    append(&mut pending, &store, 1..=3, "ann");
    append(&mut pending, &store, 4..=5, "bob");
    append(&mut pending, &store, 6..=6, "dee");
    let job = pending.hand_over(&store.blocks, &store.runs).unwrap();
    assert!(
        store.runs.is_empty(),
        "not stored until the checkpoint runs it"
    );
    assert_eq!(seqs_of(&pending, &store.runs, "ann"), [1, 2, 3]);
    append(&mut pending, &store, 7..=7, "ann");
    assert_eq!(seqs_of(&pending, &store.runs, "ann"), [1, 2, 3, 7]);

    // bob's run fills up and the next starts while the checkpoint has not run: the append
    // finishes without it (the checkpoint runs only after, to unblock an append that waits).
    let last = 7 + full;
    let (appended, append_ended) = std::sync::mpsc::channel();
    let job = std::thread::scope(|scope| {
        let pending = &mut pending;
        let store = &store;
        scope.spawn(move || {
            append(pending, store, 8..=last, "bob");
            appended.send(()).unwrap();
        });
        let ended = append_ended.recv_timeout(std::time::Duration::from_secs(10));
        let job = if ended.is_err() {
            job.run().unwrap();
            None
        } else {
            Some(job)
        };
        assert!(ended.is_ok(), "the append waited for the checkpoint");
        job.unwrap()
    });
    let bob: Vec<u64> = (4..=5).chain(8..=last).collect();
    assert_eq!(
        in_sled("bob"),
        bob[..full as usize],
        "bob's full run, at once"
    );
    job.run().unwrap();
    assert_eq!(seqs_of(&pending, &store.runs, "bob"), bob);
    assert_eq!(
        in_sled("bob"),
        bob[..full as usize],
        "bob's full run, not the checkpoint's older copy"
    );
    assert_eq!(in_sled("dee"), [6], "the checkpoint stores the others");
    pending.spill(&store.blocks, &store.runs).unwrap();
    assert_eq!(in_sled("ann"), [1, 2, 3, 7]);
    assert_eq!(in_sled("bob"), bob);

    // A hand-over the checkpoint never ran (its thread gone): the next spill stores it, all
    // but the runs changed since.
    append(&mut pending, &store, last + 1..=last + 1, "cy");
    append(&mut pending, &store, last + 2..=last + 2, "ann");
    drop(pending.hand_over(&store.blocks, &store.runs).unwrap());
    append(&mut pending, &store, last + 3..=last + 3, "ann");
    assert!(in_sled("cy").is_empty());
    assert_eq!(seqs_of(&pending, &store.runs, "cy"), [last + 1]);
    pending.spill(&store.blocks, &store.runs).unwrap();
    assert_eq!(in_sled("cy"), [last + 1]);
    assert_eq!(in_sled("ann"), [1, 2, 3, 7, last + 2, last + 3]);
}
