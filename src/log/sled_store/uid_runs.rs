//! One user's seqs, packed up to 16 to a sled key (tree `uid_runs`): the index that finds a
//! user's history without a scan, at one key per 16 of its events instead of one per event.
//!
//! Owns the run format. A run's key is `uid ++ 0x00 ++ its first seq` (big endian; a uid never
//! holds a control byte, so the separator is unambiguous and a uid's runs are contiguous, in
//! seq order). Its value: the number of seqs (a u8, 1 to [`SEQS_PER_RUN`]), then each seq after
//! the first as its distance from the one before (a LEB128 varint, postcard's encoding of a
//! u64). Promises: a uid's runs hold ascending seqs, each once; appending a seq the runs hold
//! already, or below one they hold, first drops every seq from it on (a write-ahead file
//! replayed over what sled kept). The store holds each uid's last run back from sled while it
//! fills ([`super::pending`]); this module reads and writes sled's runs. Must never: leave an empty run stored, or one past
//! [`SEQS_PER_RUN`] seqs.

use crate::domain::Seq;
use crate::log::LogError;

/// Seqs per run at most.
pub const SEQS_PER_RUN: usize = 16;

/// `uid ++ 0x00`: what every key of the uid's runs starts with.
pub fn prefix(uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(uid.len() + 9);
    k.extend_from_slice(uid.as_bytes());
    k.push(0);
    k
}

/// The key of `uid`'s run that starts at `first`.
pub fn key(uid: &str, first: Seq) -> Vec<u8> {
    let mut k = prefix(uid);
    k.extend_from_slice(&first.to_key());
    k
}

/// The uid and first seq of a run's key.
pub fn split_key(key: &[u8]) -> Result<(&[u8], Seq), LogError> {
    let bad = || LogError::storage("a uid run's key is malformed");
    let at = key.len().checked_sub(9).ok_or_else(bad)?;
    if key[at] != 0 {
        return Err(bad());
    }
    Ok((&key[..at], Seq::from_key(&key[at + 1..]).ok_or_else(bad)?))
}

/// The seqs of the run whose key starts at `first`.
pub fn decode(first: Seq, value: &[u8]) -> Result<Vec<Seq>, LogError> {
    let bad = |what: &str| {
        LogError::storage(format_args!(
            "the uid run from seq {first} is malformed: {what}"
        ))
    };
    let (&count, mut rest) = value.split_first().ok_or_else(|| bad("empty"))?;
    if count == 0 || count as usize > SEQS_PER_RUN {
        return Err(bad("its count"));
    }
    let mut seqs = Vec::with_capacity(count as usize);
    seqs.push(first);
    for _ in 1..count {
        let (delta, after) =
            postcard::take_from_bytes::<u64>(rest).map_err(|_| bad("a seq is cut"))?;
        let prev = seqs.last().expect("the first is there").0;
        if delta == 0 {
            return Err(bad("a seq twice"));
        }
        seqs.push(Seq(prev
            .checked_add(delta)
            .ok_or_else(|| bad("past u64"))?));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(bad("bytes after its last seq"));
    }
    Ok(seqs)
}

/// The value of a run of `seqs` (ascending, 1 to [`SEQS_PER_RUN`]); the first is in the key.
pub fn encode(seqs: &[Seq]) -> Vec<u8> {
    debug_assert!(!seqs.is_empty() && seqs.len() <= SEQS_PER_RUN);
    let mut out = Vec::with_capacity(1 + 3 * seqs.len());
    out.push(seqs.len() as u8);
    let mut buf = [0u8; 10];
    for pair in seqs.windows(2) {
        let used =
            postcard::to_slice(&(pair[1].0 - pair[0].0), &mut buf).expect("a u64 fits in 10");
        out.extend_from_slice(used);
    }
    out
}

/// The uid's last run: its key's first seq and its seqs.
fn last_run(tree: &sled::Tree, prefix: &[u8]) -> Result<Option<(Seq, Vec<Seq>)>, LogError> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("a prefix ends in its separator") = 1;
    match tree.range(prefix..&end[..]).next_back() {
        Some(item) => {
            let (k, v) = item.map_err(LogError::storage)?;
            let (_, first) = split_key(&k)?;
            Ok(Some((first, decode(first, &v)?)))
        }
        None => Ok(None),
    }
}

/// The seqs of `uid`'s last run below `from`, after removing from sled every run that starts
/// at or after it (only a replay, or seqs appended again after a failed write, finds one): the
/// run the next seqs go on, empty if the uid has none.
pub fn last_before(tree: &sled::Tree, uid: &str, from: Seq) -> Result<Vec<Seq>, LogError> {
    let prefix = prefix(uid);
    while let Some((first, mut held)) = last_run(tree, &prefix)? {
        if first >= from {
            tree.remove(key(uid, first)).map_err(LogError::storage)?;
            continue;
        }
        held.retain(|s| *s < from);
        return Ok(held);
    }
    Ok(Vec::new())
}

/// Appends `seqs` (ascending, each once) to `uid`'s runs in sled, writing each run touched (the
/// store holds its last run back instead: [`super::pending`]).
#[cfg(test)]
pub fn append(tree: &sled::Tree, uid: &str, seqs: &[Seq]) -> Result<(), LogError> {
    let Some(&from) = seqs.first() else {
        return Ok(());
    };
    let mut run = last_before(tree, uid, from)?;
    if run.len() == SEQS_PER_RUN {
        run.clear();
    }
    let mut rest = seqs;
    while !rest.is_empty() {
        let room = SEQS_PER_RUN - run.len();
        let (now, later) = rest.split_at(room.min(rest.len()));
        run.extend_from_slice(now);
        tree.insert(key(uid, run[0]), encode(&run))
            .map_err(LogError::storage)?;
        run.clear();
        rest = later;
    }
    Ok(())
}

/// Takes `seqs` (the uid's last ones, ascending) back out of `uid`'s runs.
pub fn remove(tree: &sled::Tree, uid: &str, seqs: &[Seq]) -> Result<(), LogError> {
    let Some(&from) = seqs.first() else {
        return Ok(());
    };
    let prefix = prefix(uid);
    while let Some((first, held)) = last_run(tree, &prefix)? {
        if first >= from {
            tree.remove(key(uid, first)).map_err(LogError::storage)?;
            continue;
        }
        let kept: Vec<Seq> = held.iter().copied().filter(|s| *s < from).collect();
        if kept.len() != held.len() {
            tree.insert(key(uid, first), encode(&kept))
                .map_err(LogError::storage)?;
        }
        break;
    }
    Ok(())
}

/// Up to `limit` seqs of `uid` after `after`, in order: from the run that may hold `after + 1`
/// (the last one starting at or before it) on, up to the run that starts at `below` (if any).
pub fn seqs_after(
    tree: &sled::Tree,
    uid: &str,
    after: Seq,
    limit: usize,
    below: Option<Seq>,
) -> Result<Vec<Seq>, LogError> {
    let prefix = prefix(uid);
    let start = match tree
        .range(&prefix[..]..=&key(uid, after.next())[..])
        .next_back()
    {
        Some(item) => item.map_err(LogError::storage)?.0.to_vec(),
        None => key(uid, after.next()),
    };
    let mut out = Vec::new();
    for item in tree.range(start..) {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item.map_err(LogError::storage)?;
        if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
            break;
        }
        let (_, first) = split_key(&k)?;
        if below.is_some_and(|b| first >= b) {
            break;
        }
        out.extend(
            decode(first, &v)?
                .into_iter()
                .filter(|s| *s > after)
                .take(limit - out.len()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("uid_runs").unwrap()
    }

    fn seqs(v: &[u64]) -> Vec<Seq> {
        v.iter().copied().map(Seq).collect()
    }

    #[test]
    fn a_run_holds_sixteen_then_the_next_one_starts() {
        let t = tree();
        let all: Vec<u64> = (1..=40).map(|i| i * 3).collect();
        append(&t, "ann", &seqs(&all[..5])).unwrap();
        append(&t, "ann", &seqs(&all[5..])).unwrap();
        append(&t, "an", &seqs(&[1, 2])).unwrap();
        append(&t, "anna", &seqs(&[4])).unwrap();
        assert_eq!(
            t.scan_prefix(prefix("ann")).count(),
            3,
            "40 seqs in runs of 16"
        );
        assert_eq!(
            seqs_after(&t, "ann", Seq(0), 100, None).unwrap(),
            seqs(&all)
        );
        assert_eq!(
            seqs_after(&t, "ann", Seq(50), 3, None).unwrap(),
            seqs(&[51, 54, 57])
        );
        assert_eq!(
            seqs_after(&t, "an", Seq(0), 9, None).unwrap(),
            seqs(&[1, 2])
        );
        assert!(seqs_after(&t, "bob", Seq(0), 9, None).unwrap().is_empty());
    }

    #[test]
    fn a_malformed_run_is_refused() {
        assert!(decode(Seq(1), &[]).is_err());
        assert!(decode(Seq(1), &[0]).is_err());
        assert!(decode(Seq(1), &[17]).is_err());
        assert!(decode(Seq(1), &[2]).is_err(), "a seq missing");
        assert!(decode(Seq(1), &[2, 0]).is_err(), "a seq twice");
        assert!(decode(Seq(1), &[1, 1]).is_err(), "a byte too many");
        assert_eq!(decode(Seq(7), &[2, 0x81, 0x01]).unwrap(), seqs(&[7, 136]));
        assert!(split_key(b"ann\x01\0\0\0\0\0\0\0\x01").is_err());
    }

    proptest! {
        /// Batches appended and taken back, then replayed over what is kept: the runs read
        /// back as the plain list would, from any `after`, at any limit.
        #[test]
        fn appends_take_backs_and_replays_read_back(
            batches in prop::collection::vec((prop::collection::vec(1u64..6, 1..20), any::<bool>()), 1..15),
            after in 0u64..400,
            limit in 1usize..50,
            replay_from in 0usize..15,
        ) {
            let t = tree();
            let mut model: Vec<Seq> = vec![];
            let mut next = 1u64;
            let mut kept: Vec<Vec<Seq>> = vec![];
            for (gaps, take_back) in batches {
                let batch: Vec<Seq> = gaps.iter().map(|g| { next += g; Seq(next) }).collect();
                append(&t, "u", &batch).unwrap();
                if take_back {
                    remove(&t, "u", &batch).unwrap();
                    next = batch[0].0 - 1;
                } else {
                    model.extend_from_slice(&batch);
                    kept.push(batch);
                }
            }
            for batch in kept.iter().skip(replay_from) {
                append(&t, "u", batch).unwrap();
            }
            let want: Vec<Seq> = model.iter().copied().filter(|s| s.0 > after).take(limit).collect();
            prop_assert_eq!(seqs_after(&t, "u", Seq(after), limit, None).unwrap(), want);
            for item in t.iter() {
                let (k, v) = item.unwrap();
                let (_, first) = split_key(&k).unwrap();
                prop_assert!(decode(first, &v).unwrap().len() <= SEQS_PER_RUN);
            }
        }
    }
}
