//! A map from uid to a small value, dense enough for a million users and more: how memory
//! keeps what it holds per known user (the presence state, last seen).
//!
//! Owns [`UidMap`]: [`SHARDS`] shards, each behind its own reader-writer lock, each an array of
//! (uid, value) slots in chunks of [`CHUNK`] and a hash table of 4-byte slot numbers. Why not a
//! hash table of (uid, value) pairs: its buckets come in powers of two, at most 7/8 of them
//! full, so between 44% and 88% hold an entry; a bucket of a uid and a user's state is 72
//! bytes, and at a million users half of those would be empty. Here an empty bucket costs 5
//! bytes (the slot number and the table's control byte), the slots stay dense (a freed one is
//! taken again before the array grows), and the array grows a chunk at a time, never copied.
//! Promises: a reader waits only for a writer of the same shard, for the length of one change;
//! a value that a change leaves empty ([`MapValue::is_empty`]) is removed, and one that would
//! start empty is never added. Must never: hold a shard's lock while calling anything but the
//! closure it was handed.

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::domain::Uid;

const SHARD_BITS: u32 = 5;
/// Enough that the log writer's changes rarely meet a reader in the same shard; few enough
/// that a nearly empty map costs little (one chunk's room per shard, reserved as it fills).
pub const SHARDS: usize = 1 << SHARD_BITS;
/// Slots per chunk: a shard's array grows by this many at once.
pub const CHUNK: usize = 1024;

/// A value kept per uid.
pub trait MapValue: Default {
    /// True when nothing is left worth keeping: the uid is then forgotten.
    fn is_empty(&self) -> bool;
}

type Slot<V> = Option<(Uid, V)>;

pub struct UidMap<V> {
    hasher: ahash::RandomState,
    shards: Box<[Shard<V>]>,
}

/// One shard, alone on its cache lines, so that locking it does not disturb its neighbours.
#[repr(align(128))]
struct Shard<V>(RwLock<Slots<V>>);

struct Slots<V> {
    /// Slot numbers, found by the uid's hash.
    index: HashTable<u32>,
    /// Slot `n` is `chunks[n / CHUNK][n % CHUNK]`; each chunk is allocated with room for
    /// `CHUNK` slots and filled in order, and only the last one is ever short.
    chunks: Vec<Vec<Slot<V>>>,
    /// Emptied slots, taken before a new one.
    free: Vec<u32>,
}

impl<V> Default for Slots<V> {
    fn default() -> Self {
        Slots {
            index: HashTable::new(),
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<V> Default for UidMap<V> {
    fn default() -> Self {
        UidMap {
            hasher: ahash::RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(Slots::default())))
                .collect(),
        }
    }
}

/// The uid in slot `n` ("" for an emptied slot, which the index never holds: no uid is empty).
fn key_of<V>(chunks: &[Vec<Slot<V>>], n: u32) -> &str {
    let n = n as usize;
    chunks[n / CHUNK][n % CHUNK]
        .as_ref()
        .map_or("", |(uid, _)| uid.as_str())
}

impl<V> Slots<V> {
    fn slot(&self, n: u32) -> &Slot<V> {
        let n = n as usize;
        &self.chunks[n / CHUNK][n % CHUNK]
    }

    fn slot_mut(&mut self, n: u32) -> &mut Slot<V> {
        let n = n as usize;
        &mut self.chunks[n / CHUNK][n % CHUNK]
    }

    /// Puts `entry` in a free slot, or in a new one; its number.
    fn take_slot(&mut self, entry: (Uid, V)) -> u32 {
        if let Some(n) = self.free.pop() {
            *self.slot_mut(n) = Some(entry);
            return n;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let n = (self.chunks.len() - 1) * CHUNK + self.chunks.last().map_or(0, Vec::len);
        self.chunks
            .last_mut()
            .expect("a chunk with room was just ensured")
            .push(Some(entry));
        u32::try_from(n).expect("fewer than 2^32 uids per shard")
    }
}

impl<V: MapValue> UidMap<V> {
    #[inline]
    fn hash(&self, uid: &str) -> u64 {
        self.hasher.hash_one(uid)
    }

    /// The shard of a hash: bits below the top seven, which the tables use inside a shard.
    fn shard(&self, hash: u64) -> &RwLock<Slots<V>> {
        &self.shards[((hash >> (64 - 7 - SHARD_BITS)) as usize) & (SHARDS - 1)].0
    }

    /// Runs `f` on `uid`'s value (`None` for a uid not held), under its shard's read lock.
    pub fn read<R>(&self, uid: &str, f: impl FnOnce(Option<&V>) -> R) -> R {
        let hash = self.hash(uid);
        let slots = self.shard(hash).read();
        let found = slots
            .index
            .find(hash, |&n| key_of(&slots.chunks, n) == uid)
            .and_then(|&n| slots.slot(n).as_ref())
            .map(|(_, v)| v);
        f(found)
    }

    /// Changes `uid`'s value (a uid not held starts from `V::default()`), under its shard's
    /// write lock; a value left empty is removed, and one that stays empty is never added.
    pub fn update<R>(&self, uid: &Uid, f: impl FnOnce(&mut V) -> R) -> R {
        let hash = self.hash(uid.as_str());
        let mut guard = self.shard(hash).write();
        let slots = &mut *guard;
        let found = slots
            .index
            .find(hash, |&n| key_of(&slots.chunks, n) == uid.as_str())
            .copied();
        let Some(n) = found else {
            let mut value = V::default();
            let out = f(&mut value);
            if !value.is_empty() {
                let n = slots.take_slot((uid.clone(), value));
                let Slots { index, chunks, .. } = &mut *slots;
                let chunks: &[Vec<Slot<V>>] = chunks;
                index.insert_unique(hash, n, |&m| self.hasher.hash_one(key_of(chunks, m)));
            }
            return out;
        };
        let Some((_, value)) = slots.slot_mut(n).as_mut() else {
            unreachable!("the index holds only filled slots")
        };
        let out = f(value);
        if value.is_empty() {
            if let Ok(entry) = slots.index.find_entry(hash, |&m| m == n) {
                entry.remove();
            }
            // The chunk keeps its room: the slot is taken again by the next new uid.
            *slots.slot_mut(n) = None;
            slots.free.push(n);
        }
        out
    }

    /// Calls `f` for every uid held and its value, one shard at a time (each under its read
    /// lock: a writer of that shard waits until the shard is done).
    pub fn for_each(&self, mut f: impl FnMut(&Uid, &V)) {
        for shard in self.shards.iter() {
            let slots = shard.0.read();
            for (uid, value) in slots.chunks.iter().flatten().flatten() {
                f(uid, value);
            }
        }
    }

    /// Uids held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().index.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every uid, and gives their memory back.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.0.write() = Slots::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Count(u32);

    impl MapValue for Count {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    fn uid(i: usize) -> Uid {
        Uid::parse(&format!("u{i}")).unwrap()
    }

    fn get(map: &UidMap<Count>, i: usize) -> Option<u32> {
        map.read(uid(i).as_str(), |v| v.map(|c| c.0))
    }

    /// Over several chunks per shard, with removals in between: every uid reads what was last
    /// written, removed ones are gone, and freed slots are taken again before the array grows.
    #[test]
    fn answers_like_a_plain_map_through_growth_removal_and_reuse() {
        let map = UidMap::<Count>::default();
        let mut model = std::collections::HashMap::new();
        let n = SHARDS * CHUNK * 3;
        for i in 0..n {
            map.update(&uid(i), |c| c.0 = i as u32 + 1);
            model.insert(i, i as u32 + 1);
        }
        for i in (0..n).step_by(3) {
            map.update(&uid(i), |c| c.0 = 0);
            model.remove(&i);
        }
        let slots_before: usize = map
            .shards
            .iter()
            .map(|s| s.0.read().chunks.iter().map(Vec::len).sum::<usize>())
            .sum();
        // The same uids again (so the same shards): each takes a slot another one freed.
        for i in (0..n).step_by(3) {
            map.update(&uid(i), |c| c.0 = 7);
            model.insert(i, 7);
        }
        let slots_after: usize = map
            .shards
            .iter()
            .map(|s| s.0.read().chunks.iter().map(Vec::len).sum::<usize>())
            .sum();
        assert_eq!(slots_after, slots_before, "freed slots were taken again");
        assert_eq!(map.len(), model.len());
        // And some removed after that, whose slots stay free.
        for i in (1..n).step_by(5) {
            map.update(&uid(i), |c| c.0 = 0);
            model.remove(&i);
        }
        for i in 0..n + 10 {
            assert_eq!(get(&map, i), model.get(&i).copied(), "uid {i}");
        }
        let mut seen = 0;
        map.for_each(|u, c| {
            let i: usize = u.as_str()[1..].parse().unwrap();
            assert_eq!(model.get(&i), Some(&c.0));
            seen += 1;
        });
        assert_eq!(seen, model.len());
        map.clear();
        assert!(map.is_empty());
        assert_eq!(get(&map, 1), None);
    }

    #[test]
    fn a_value_that_stays_empty_is_never_added() {
        let map = UidMap::<Count>::default();
        let answer = map.update(&uid(1), |c| c.0);
        assert_eq!(answer, 0);
        assert!(map.is_empty());
        assert!(map.read("u1", |v| v.is_none()));
    }
}
