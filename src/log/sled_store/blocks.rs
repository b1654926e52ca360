//! The log's events packed 16 to a sled key (tree `event_blocks`): sled keeps about 180 B of
//! bookkeeping per page for the whole life of the log and makes a page per 9 keys appended in
//! order, so a key per event cost about 20 B of memory per event forever (docs/performance.md,
//! "A packed log: one key per 16 events").
//!
//! Owns the block format. Block `n` holds seqs `16n + 1 ..= 16n + 16`; its key is `n` as a
//! big-endian u64 (key order is seq order). Its value: the offset within the block of its first
//! seq present (a u8: after an archive the live log may start mid-block), the number of events
//! present (a u8), then each event, in seq order, as its length (a LEB128 varint, postcard's
//! encoding of a u32) and its bytes. Seqs are dense, so an event's place gives its seq.
//! Promises: a block decodes only if its header and its events agree to the last byte; the
//! block being filled ([`OpenBlock`]) is held in memory and written whole when full (or at a
//! write-ahead roll, see [`super::pending`]), a full one never again.
//! Must never: hold a seq outside its block's range, or leave a gap inside a block.

use crate::domain::Seq;
use crate::log::LogError;

/// Events per block: sled splits a leaf past 16 keys, and at 16 events a key the memory that
/// grows per event all but stops (docs/performance.md).
pub const SEQS_PER_BLOCK: u64 = 16;

const HEADER: usize = 2;

/// The number of the block that holds `seq` (from 1).
pub fn number_of(seq: Seq) -> u64 {
    (seq.0 - 1) / SEQS_PER_BLOCK
}

pub fn key_of(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

pub fn number_from_key(key: &[u8]) -> Result<u64, LogError> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        LogError::storage(format_args!("an event block's key of {} bytes", key.len()))
    })?))
}

fn malformed(number: u64, what: &str) -> LogError {
    LogError::storage(format_args!("event block {number} is malformed: {what}"))
}

/// Appends `len` as a varint.
fn push_len(out: &mut Vec<u8>, len: usize) {
    let mut buf = [0u8; 5];
    let len = u32::try_from(len).expect("an event is far below 4 GiB");
    let used = postcard::to_slice(&len, &mut buf).expect("a u32 fits in 5 bytes");
    out.extend_from_slice(used);
}

/// One stored block, decoded: the seq of its first event and each event's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Block<'a> {
    pub first: Seq,
    pub events: Vec<&'a [u8]>,
}

impl<'a> Block<'a> {
    /// Decodes block `number`'s stored `value`.
    pub fn decode(number: u64, value: &'a [u8]) -> Result<Self, LogError> {
        let [offset, count] = *value
            .first_chunk::<HEADER>()
            .ok_or_else(|| malformed(number, "no header"))?;
        if u64::from(offset) + u64::from(count) > SEQS_PER_BLOCK || count == 0 {
            return Err(malformed(number, "its header counts no events or too many"));
        }
        let mut rest = &value[HEADER..];
        let mut events = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (len, after) = postcard::take_from_bytes::<u32>(rest)
                .map_err(|_| malformed(number, "an event's length is cut"))?;
            let bytes = after
                .get(..len as usize)
                .ok_or_else(|| malformed(number, "an event is cut"))?;
            events.push(bytes);
            rest = &after[len as usize..];
        }
        if !rest.is_empty() {
            return Err(malformed(number, "bytes after its last event"));
        }
        Ok(Block {
            first: Seq(number * SEQS_PER_BLOCK + 1 + u64::from(offset)),
            events,
        })
    }

    /// The seq of its last event.
    pub fn last(&self) -> Seq {
        Seq(self.first.0 + self.events.len() as u64 - 1)
    }

    /// The bytes of `seq`, if the block holds it.
    pub fn get(&self, seq: Seq) -> Option<&'a [u8]> {
        let at = seq.0.checked_sub(self.first.0)?;
        self.events.get(at as usize).copied()
    }

    /// Each event with its seq.
    pub fn iter(&self) -> impl Iterator<Item = (Seq, &'a [u8])> + '_ {
        (self.first.0..).map(Seq).zip(self.events.iter().copied())
    }
}

/// The seq after the last event of a stored block, read from its header alone.
pub fn last_seq(number: u64, value: &[u8]) -> Result<Seq, LogError> {
    let [offset, count] = *value
        .first_chunk::<HEADER>()
        .ok_or_else(|| malformed(number, "no header"))?;
    if count == 0 || u64::from(offset) + u64::from(count) > SEQS_PER_BLOCK {
        return Err(malformed(number, "its header counts no events or too many"));
    }
    Ok(Seq(number * SEQS_PER_BLOCK
        + u64::from(offset)
        + u64::from(count)))
}

/// Encodes events from `first` on, all in one block, as a stored value.
pub fn encode<'b>(first: Seq, events: impl IntoIterator<Item = &'b [u8]>) -> Vec<u8> {
    let mut block = OpenBlock::new(number_of(first));
    for (seq, bytes) in (first.0..).map(Seq).zip(events) {
        block
            .push(seq, bytes)
            .expect("events of one block, in order");
    }
    block.bytes
}

/// The block being filled, as its stored value: the writer appends a batch's events to it and
/// writes it whole, without reading it back from sled.
#[derive(Debug, Clone)]
pub struct OpenBlock {
    number: u64,
    bytes: Vec<u8>,
}

impl OpenBlock {
    /// Block `number`, empty.
    pub fn new(number: u64) -> Self {
        let mut bytes = Vec::with_capacity(2048);
        bytes.extend_from_slice(&[0, 0]);
        OpenBlock { number, bytes }
    }

    /// Block `number` as stored (its value checked).
    pub fn stored(number: u64, value: &[u8]) -> Result<Self, LogError> {
        Block::decode(number, value)?;
        let mut bytes = Vec::with_capacity(value.len().max(2048));
        bytes.extend_from_slice(value);
        Ok(OpenBlock { number, bytes })
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn is_empty(&self) -> bool {
        self.bytes[1] == 0
    }

    /// Whether it holds its last seq (nothing more goes in).
    pub fn is_full(&self) -> bool {
        self.next_seq().is_none()
    }

    /// The stored value (meaningless while empty: an empty block is removed, not stored).
    pub fn value(&self) -> &[u8] {
        &self.bytes
    }

    /// The seq the next event of the block must have, `None` once it is full.
    fn next_seq(&self) -> Option<Seq> {
        let at = u64::from(self.bytes[0]) + u64::from(self.bytes[1]);
        (at < SEQS_PER_BLOCK).then(|| Seq(self.number * SEQS_PER_BLOCK + 1 + at))
    }

    /// Appends `seq`'s bytes. A seq the block holds already (a write-ahead file replayed over
    /// what sled kept, or a batch taken back in memory and not on disk) first cuts the block
    /// back before it; a seq past the next one, or outside the block, is refused.
    pub fn push(&mut self, seq: Seq, bytes: &[u8]) -> Result<(), LogError> {
        if number_of(seq) != self.number {
            return Err(malformed(self.number, "a seq of another block"));
        }
        if self.is_empty() {
            self.bytes[0] = ((seq.0 - 1) % SEQS_PER_BLOCK) as u8;
        } else if self.next_seq() != Some(seq) {
            let first = Seq(self.number * SEQS_PER_BLOCK + 1 + u64::from(self.bytes[0]));
            if seq < first || self.next_seq().is_some_and(|next| seq > next) {
                return Err(LogError::storage(format_args!(
                    "seq {seq} would leave a gap in event block {}",
                    self.number
                )));
            }
            self.truncate(seq)?;
            return self.push(seq, bytes);
        }
        push_len(&mut self.bytes, bytes.len());
        self.bytes.extend_from_slice(bytes);
        self.bytes[1] += 1;
        Ok(())
    }

    /// Cuts every event from `seq` on (all of them when `seq` is at or before the first).
    pub fn truncate(&mut self, seq: Seq) -> Result<(), LogError> {
        if self.is_empty() {
            return Ok(());
        }
        let block = Block::decode(self.number, &self.bytes)?;
        let keep = seq
            .0
            .saturating_sub(block.first.0)
            .min(block.events.len() as u64) as usize;
        if keep == 0 {
            self.bytes.truncate(HEADER);
            self.bytes[..HEADER].copy_from_slice(&[0, 0]);
            return Ok(());
        }
        let end = block.events[keep - 1].as_ptr() as usize + block.events[keep - 1].len()
            - self.bytes.as_ptr() as usize;
        self.bytes.truncate(end);
        self.bytes[1] = keep as u8;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_block_starts_where_its_first_seq_is_and_reads_back() {
        let value = encode(Seq(20), [&b"a"[..], b"bc", &[7u8; 200]]);
        assert_eq!(&value[..5], &[3, 3, 1, b'a', 2]);
        let block = Block::decode(1, &value).unwrap();
        assert_eq!(block.first, Seq(20));
        assert_eq!(block.last(), Seq(22));
        assert_eq!(block.get(Seq(21)), Some(&b"bc"[..]));
        assert_eq!(block.get(Seq(19)), None);
        assert_eq!(last_seq(1, &value).unwrap(), Seq(22));
        assert!(Block::decode(2, &value).is_ok(), "the key gives the number");
        assert!(Block::decode(1, &value[..value.len() - 1]).is_err());
        let mut longer = value.clone();
        longer.push(0);
        assert!(Block::decode(1, &longer).is_err());
    }

    #[test]
    fn a_block_refuses_a_gap_and_a_seq_of_another_block() {
        let mut block = OpenBlock::new(0);
        block.push(Seq(1), b"x").unwrap();
        assert!(block.push(Seq(3), b"x").is_err());
        assert!(block.push(Seq(17), b"x").is_err());
        for s in 2..=16 {
            block.push(Seq(s), b"y").unwrap();
        }
        assert_eq!(block.next_seq(), None, "full");
        assert!(block.push(Seq(17), b"x").is_err());
    }

    proptest! {
        /// Any events appended in batches, any cut back, read back as a plain list would.
        #[test]
        fn pushes_and_cuts_read_back(
            offset in 0u64..16,
            ops in prop::collection::vec((prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6), any::<bool>(), 0u64..17), 1..12),
        ) {
            let number = 5u64;
            let start = number * SEQS_PER_BLOCK + 1 + offset;
            let mut block = OpenBlock::new(number);
            let mut model: Vec<Vec<u8>> = vec![];
            for (batch, cut, to) in ops {
                for bytes in batch {
                    let seq = Seq(start + model.len() as u64);
                    if number_of(seq) != number { break; }
                    block.push(seq, &bytes).unwrap();
                    model.push(bytes);
                }
                if cut {
                    let to = Seq(start + to.min(model.len() as u64));
                    block.truncate(to).unwrap();
                    model.truncate((to.0 - start) as usize);
                }
                if model.is_empty() {
                    prop_assert!(block.is_empty());
                    continue;
                }
                let read = Block::decode(number, block.value()).unwrap();
                prop_assert_eq!(read.first, Seq(start));
                let got: Vec<Vec<u8>> = read.events.iter().map(|e| e.to_vec()).collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(last_seq(number, block.value()).unwrap(), Seq(start + model.len() as u64 - 1));
            }
        }
    }
}
