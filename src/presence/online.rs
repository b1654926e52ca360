//! The online users and the flags each is online on: the index `/user/onlinestatus` reads.
//!
//! Owns a map from uid to [`OnlineFlags`] split into [`SHARDS`] shards, each a hash table
//! behind its own reader-writer lock. A request's uids are read shard by shard: each uid is
//! hashed once, the uids are grouped by shard, and each shard's read lock is taken once for
//! all of its uids. Taking a lock is an atomic write to a line of memory that the other core's
//! readers write too: locked per uid, that bouncing is paid a hundred times per request of a
//! hundred uids; locked per shard, at most once per shard (`benches/presence.rs` compares the
//! two from two threads). Within a shard the entries are found from the table's tag bytes
//! first and their memory asked for at once, then the keys compared, so that the entries'
//! cache misses overlap rather than follow one another. A uid asked twice is answered once:
//! within a chunk a bitmap of hash bits finds the candidates for a repeat, with no
//! allocation. Promises: a reader waits only for a writer of the same shard, for the length
//! of one insert or removal; only online uids are held (flags never empty). Must never: call
//! out while holding a lock, or allocate on the read path of a request of one chunk.

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::domain::{OnlineFlags, Uid};

const SHARD_BITS: u32 = 2;
/// Few enough that a 100-uid request takes each lock for several uids, enough that writers
/// (connects and closes) rarely meet readers in the same shard.
pub const SHARDS: usize = 1 << SHARD_BITS;
/// Uids looked up per round: the scratch space lives on the stack.
pub const CHUNK: usize = 256;
/// The most room reserved up front for the online uids of one request (a large request that
/// finds more grows it).
const MAX_REPORTED_CAPACITY: usize = 1024;

/// One shard, alone on its cache lines, so that locking it does not disturb its neighbours.
#[repr(align(128))]
#[derive(Default)]
struct Shard(RwLock<HashTable<(Uid, OnlineFlags)>>);

pub struct OnlineIndex {
    hasher: ahash::RandomState,
    shards: Box<[Shard]>,
}

impl Default for OnlineIndex {
    fn default() -> Self {
        OnlineIndex {
            hasher: ahash::RandomState::new(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl OnlineIndex {
    #[inline]
    fn hash(&self, uid: &str) -> u64 {
        self.hasher.hash_one(uid)
    }

    /// The shard of a hash: bits below the top seven, which the tables use inside a shard.
    fn shard(hash: u64) -> usize {
        ((hash >> (64 - 7 - SHARD_BITS)) as usize) & (SHARDS - 1)
    }

    /// Records `uid`'s flags; empty flags remove it.
    pub fn set(&self, uid: &Uid, flags: OnlineFlags) {
        let hash = self.hash(uid.as_str());
        let mut table = self.shards[Self::shard(hash)].0.write();
        match table.find_entry(hash, |(u, _)| u == uid) {
            Ok(mut entry) if !flags.is_empty() => entry.get_mut().1 = flags,
            Ok(entry) => {
                entry.remove();
            }
            Err(_) if !flags.is_empty() => {
                table.insert_unique(hash, (uid.clone(), flags), |(u, _)| {
                    self.hasher.hash_one(u.as_str())
                });
            }
            Err(_) => {}
        }
    }

    /// The flags `uid` is online on (empty when offline).
    pub fn get(&self, uid: &str) -> OnlineFlags {
        let hash = self.hash(uid);
        let table = self.shards[Self::shard(hash)].0.read();
        table
            .find(hash, |(u, _)| u.as_str() == uid)
            .map_or_else(OnlineFlags::default, |(_, f)| *f)
    }

    /// Calls `f(i, flags)` for every distinct online uid of `uids`, at its first position `i`,
    /// `i` ascending: a uid listed twice is reported once.
    pub fn for_each_online_once<S: AsRef<str>>(
        &self,
        uids: &[S],
        mut f: impl FnMut(usize, OnlineFlags),
    ) {
        let mut found = [OnlineFlags::default(); CHUNK];
        let mut hashes = [0u64; CHUNK];
        if uids.len() <= CHUNK {
            let n = uids.len();
            let hits = self.read_chunk(uids, &mut found[..n], &mut hashes[..n]);
            report_once_in_chunk(uids, &found[..n], &hashes[..n], hits, f);
            return;
        }
        // Several chunks: repeats are found through a set of the positions reported so far,
        // keyed by the hashes the lookups computed anyway.
        let mut reported: HashTable<usize> = HashTable::new();
        reported.reserve(uids.len().min(MAX_REPORTED_CAPACITY), |&j| {
            self.hash(uids[j].as_ref())
        });
        for (c, chunk) in uids.chunks(CHUNK).enumerate() {
            let n = chunk.len();
            let hits = self.read_chunk(chunk, &mut found[..n], &mut hashes[..n]);
            for i in hits {
                let (at, uid, flags) = (c * CHUNK + i, chunk[i].as_ref(), &found[i]);
                if reported
                    .find(hashes[i], |&j| uids[j].as_ref() == uid)
                    .is_none()
                {
                    reported.insert_unique(hashes[i], at, |&j| self.hash(uids[j].as_ref()));
                    f(at, *flags);
                }
            }
        }
    }

    /// Fills `hashes[i]` with the hash of `uids[i]` and, for each online one, `found[i]` with
    /// its flags (the others are left as they were); returns the positions of the online ones.
    /// One read lock per shard touched.
    fn read_chunk<S: AsRef<str>>(
        &self,
        uids: &[S],
        found: &mut [OnlineFlags],
        hashes: &mut [u64],
    ) -> Hits {
        debug_assert!(uids.len() <= CHUNK && found.len() == uids.len());
        debug_assert!(hashes.len() == uids.len());
        let mut hits = Hits::default();
        let mut starts = [0u16; SHARDS + 1];
        for (i, uid) in uids.iter().enumerate() {
            hashes[i] = self.hash(uid.as_ref());
            starts[Self::shard(hashes[i]) + 1] += 1;
        }
        for s in 0..SHARDS {
            starts[s + 1] += starts[s];
        }
        // The positions of the uids, grouped by shard (a counting sort).
        let mut order = [0u16; CHUNK];
        let mut next = starts;
        for (i, hash) in hashes.iter().enumerate() {
            let s = Self::shard(*hash);
            order[next[s] as usize] = i as u16;
            next[s] += 1;
        }
        // Each group in two passes. The first finds where each uid's entry would be from the
        // tag bytes alone (the table keeps them apart from the entries, few and in cache) and
        // asks for that entry's memory without waiting for it; the second compares the keys.
        // Looked up in one pass, an entry's key was read right after a branch no predictor
        // can guess (is this uid online?), so each entry's cache miss waited for the one before.
        for s in 0..SHARDS {
            let group = &order[starts[s] as usize..starts[s + 1] as usize];
            if group.is_empty() {
                continue;
            }
            let table = self.shards[s].0.read();
            let mut candidates: [Option<&(Uid, OnlineFlags)>; CHUNK] = [None; CHUNK];
            for (candidate, &i) in candidates.iter_mut().zip(group) {
                *candidate = table.find(hashes[i as usize], |_| true);
                if let Some(entry) = candidate {
                    prefetch(*entry);
                }
            }
            for (candidate, &i) in candidates.iter().zip(group) {
                let (i, uid) = (i as usize, uids[i as usize].as_ref());
                let entry = match candidate {
                    // No entry bears the uid's tag: it is not online.
                    None => continue,
                    Some(entry) if entry.0.as_str() == uid => Some(*entry),
                    // Another uid's entry with the same tag (one probe in 128): look again,
                    // comparing every key.
                    Some(_) => table.find(hashes[i], |(u, _)| u.as_str() == uid),
                };
                if let Some((_, flags)) = entry {
                    found[i] = *flags;
                    hits.insert(i);
                }
            }
        }
        hits
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every online uid.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.0.write().clear();
        }
    }
}

/// Asks for the cache line of `entry` to be loaded, without waiting for it.
#[inline(always)]
fn prefetch<T>(entry: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline, so the instruction exists on every processor
    // this code is built for; a prefetch reads nothing into the program and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(entry).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = entry;
}

/// Reports each online uid of one chunk once, at its first position, without allocating: a
/// bitmap of hash bits says which uids may repeat an earlier one, and only those are compared
/// with the earlier ones (most requests repeat nothing, and pay one bit test per online uid).
fn report_once_in_chunk<S: AsRef<str>>(
    uids: &[S],
    found: &[OnlineFlags],
    hashes: &[u64],
    hits: Hits,
    mut f: impl FnMut(usize, OnlineFlags),
) {
    let mut seen = [0u64; 64];
    for i in hits {
        let bit = (hashes[i] >> 16) as usize % (64 * 64);
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if seen[word] & mask != 0 {
            let uid = uids[i].as_ref();
            let repeat = hits
                .below(i)
                .any(|j| hashes[j] == hashes[i] && uids[j].as_ref() == uid);
            if repeat {
                continue;
            }
        }
        seen[word] |= mask;
        f(i, found[i]);
    }
}

/// The positions of a chunk's online uids, a bit each; iterated in ascending order. Reading the
/// answer through these bits rather than testing each uid's flags saves a branch per uid that
/// no predictor can guess (whether a uid is online is as good as random): the lookup itself
/// already took that branch once.
#[derive(Default, Clone, Copy)]
struct Hits([u64; CHUNK / 64]);

impl Hits {
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// The positions below `end`.
    fn below(mut self, end: usize) -> Hits {
        for (w, word) in self.0.iter_mut().enumerate() {
            let start = w * 64;
            if end <= start {
                *word = 0;
            } else if end < start + 64 {
                *word &= (1u64 << (end - start)) - 1;
            }
        }
        self
    }
}

impl Iterator for Hits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let w = self.0.iter().position(|&word| word != 0)?;
        let bits = self.0[w];
        self.0[w] = bits & (bits - 1);
        Some(w * 64 + bits.trailing_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceFlag, OnlineFlags};

    fn flags(of: &[u8]) -> OnlineFlags {
        OnlineFlags::from_flags(of.iter().map(|f| DeviceFlag(*f)))
    }

    #[test]
    fn a_batch_answers_like_one_lookup_each_once_per_uid_across_chunks_and_shards() {
        let index = OnlineIndex::default();
        let uids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
        for (i, uid) in uids.iter().enumerate() {
            if i % 3 != 0 {
                index.set(&Uid::parse(uid).unwrap(), flags(&[(i % 7) as u8 + 1]));
            }
        }
        // Offline ones, duplicates, and more than a chunk.
        let asked: Vec<String> = uids
            .iter()
            .chain(uids.iter().rev())
            .cloned()
            .chain(["nobody".to_owned()])
            .collect();
        let mut seen = Vec::new();
        index.for_each_online_once(&asked, |i, f| seen.push((i, f)));
        // Each online uid once, at its first position: the first thousand positions.
        let expected: Vec<(usize, OnlineFlags)> = asked[..1000]
            .iter()
            .enumerate()
            .map(|(i, u)| (i, index.get(u)))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(seen.len(), 666);
        assert_eq!(index.len(), 666);
        // One chunk, with repeats near and far, offline ones among them.
        let asked: Vec<String> = [2, 1, 2, 3, 1, 200, 4, 3, 200, 2, 998, 998]
            .iter()
            .map(|i| format!("u{i}"))
            .collect();
        let mut seen = Vec::new();
        index.for_each_online_once(&asked, |i, f| seen.push((i, f)));
        let positions: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(positions, [0, 1, 5, 6, 10]);
        assert!(seen.iter().all(|(i, f)| *f == index.get(&asked[*i])));
    }

    /// With 20,000 uids online, hundreds of lookups meet another uid's entry under their tag
    /// before their own (a tag is 7 bits: one occupied slot in 128 shares it), online uids
    /// and offline ones alike: each must still be answered as one lookup would answer it.
    #[test]
    fn a_tag_shared_with_another_uid_is_looked_up_again() {
        let index = OnlineIndex::default();
        let online: Vec<String> = (0..20_000).map(|i| format!("on{i}")).collect();
        for uid in &online {
            index.set(&Uid::parse(uid).unwrap(), flags(&[2]));
        }
        let asked: Vec<String> = online
            .iter()
            .cloned()
            .chain((0..20_000).map(|i| format!("off{i}")))
            .collect();
        let mut seen = Vec::new();
        for chunk in asked.chunks(CHUNK) {
            index.for_each_online_once(chunk, |i, f| seen.push((chunk[i].clone(), f)));
        }
        let expected: Vec<(String, OnlineFlags)> =
            online.iter().map(|u| (u.clone(), flags(&[2]))).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn hits_iterate_ascending_and_cut_below_a_position_across_words() {
        let mut hits = Hits::default();
        for i in [255, 0, 64, 63, 200, 65] {
            hits.insert(i);
        }
        assert_eq!(hits.collect::<Vec<_>>(), [0, 63, 64, 65, 200, 255]);
        assert_eq!(hits.below(64).collect::<Vec<_>>(), [0, 63]);
        assert_eq!(hits.below(65).collect::<Vec<_>>(), [0, 63, 64]);
        assert_eq!(hits.below(255).collect::<Vec<_>>(), [0, 63, 64, 65, 200]);
        assert_eq!(hits.below(0).count(), 0);
        assert_eq!(Hits::default().count(), 0);
    }

    #[test]
    fn empty_flags_remove_the_uid() {
        let index = OnlineIndex::default();
        let uid = Uid::parse("u").unwrap();
        index.set(&uid, flags(&[1]));
        index.set(&uid, flags(&[1, 3]));
        assert_eq!(index.get("u"), flags(&[1, 3]));
        index.set(&uid, OnlineFlags::default());
        assert!(index.get("u").is_empty());
        assert!(index.is_empty());
        index.set(&uid, OnlineFlags::default());
        assert!(index.is_empty());
    }
}
