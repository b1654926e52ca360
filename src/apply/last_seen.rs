//! Last seen (protocol.md section 8): when each uid's sessions on each flag last ended, in
//! memory, for `POST /user/lastseen`.
//!
//! Owns a sharded map from a uid to the time its latest session of each flag ended (the
//! `recorded_at` of that `Disconnected`, in ms). It is a subscriber: [`LastSeen::apply`] runs
//! for every committed event, in seq order, whatever its source; at start-up it is loaded from
//! the SQL view's `last_seen` table (as of the view's checkpoint) and the log after the
//! checkpoint moves it on, like the rest of memory. Promises: the latest end in log order wins;
//! a reader waits at most for a writer of the same shard. Must never: do I/O, or block (it runs
//! on the log writer's thread).

use crate::domain::{DeviceFlag, Event, RecordedEvent, Uid};
use crate::presence::uid_map::{MapValue, UidMap};

#[derive(Default)]
pub struct LastSeen {
    users: UidMap<SeenFlags>,
}

/// When one uid's sessions on each flag last ended, by flag ascending. Most users have one
/// flag: it is held inline, the others (if any) behind a pointer that is `None` otherwise.
/// 24 bytes, with no allocation of its own for one flag.
#[derive(Debug)]
struct SeenFlags {
    /// The lowest flag's end, when `held`.
    first_at: i64,
    first: DeviceFlag,
    held: bool,
    /// The flags above `first`, ascending. Boxed on purpose: one pointer (8 bytes, none when
    /// `None`) in every user's entry, where a vector would be 24.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<(DeviceFlag, i64)>>>,
}

impl Default for SeenFlags {
    fn default() -> Self {
        SeenFlags {
            first_at: 0,
            first: DeviceFlag(0),
            held: false,
            more: None,
        }
    }
}

impl MapValue for SeenFlags {
    fn is_empty(&self) -> bool {
        !self.held
    }
}

impl SeenFlags {
    fn set(&mut self, flag: DeviceFlag, at: i64) {
        if !self.held || flag == self.first {
            (self.first, self.first_at, self.held) = (flag, at, true);
            return;
        }
        // A lower flag takes the inline place; the one there moves to the others.
        let (flag, at) = if flag < self.first {
            let moved = (self.first, self.first_at);
            (self.first, self.first_at) = (flag, at);
            moved
        } else {
            (flag, at)
        };
        let more = self.more.get_or_insert_with(Default::default);
        match more.binary_search_by_key(&flag, |(f, _)| *f) {
            Ok(i) => more[i].1 = at,
            Err(i) => {
                // Room for exactly what is held: a vector's first push makes room for four.
                more.reserve_exact(1);
                more.insert(i, (flag, at));
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (DeviceFlag, i64)> + '_ {
        let first = self.held.then_some((self.first, self.first_at));
        let more = self.more.as_deref().map_or(&[][..], |m| &m[..]);
        first.into_iter().chain(more.iter().copied())
    }

    fn len(&self) -> usize {
        usize::from(self.held) + self.more.as_deref().map_or(0, Vec::len)
    }
}

impl LastSeen {
    /// Loads the rows of the view's `last_seen` table.
    pub fn load(&self, rows: impl IntoIterator<Item = (Uid, DeviceFlag, i64)>) {
        for (uid, flag, at) in rows {
            self.set(&uid, flag, at);
        }
    }

    /// Moves past a committed event.
    pub fn apply(&self, r: &RecordedEvent) {
        if let Event::Disconnected(d) = &r.event {
            self.set(&d.uid, d.device_flag, r.recorded_at);
        }
    }

    fn set(&self, uid: &Uid, flag: DeviceFlag, at: i64) {
        self.users.update(uid, |flags| flags.set(flag, at));
    }

    /// Calls `f(flag, ended_at)` for each flag of `uid` that has had a session end, ascending.
    pub fn for_each(&self, uid: &str, mut f: impl FnMut(DeviceFlag, i64)) {
        self.users.read(uid, |flags| {
            for (flag, at) in flags.into_iter().flat_map(SeenFlags::iter) {
                f(flag, at);
            }
        })
    }

    /// Forgets everything (memory rebuilt from the whole log at start-up).
    pub fn clear(&self) {
        self.users.clear();
    }

    /// (uid, flag) pairs held.
    pub fn len(&self) -> usize {
        let mut pairs = 0;
        self.users.for_each(|_, flags| pairs += flags.len());
        pairs
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::Disconnected;
    use crate::domain::{CloseReason, NodeId, Seq, SessionId};

    fn ended(uid: &str, flag: u8, at: i64) -> RecordedEvent {
        RecordedEvent {
            seq: Seq(1),
            event_id: uuid::Uuid::now_v7(),
            recorded_at: at,
            node_id: NodeId(1),
            event: Event::Disconnected(Disconnected {
                session_id: SessionId::new(),
                uid: Uid::parse(uid).unwrap(),
                device_flag: DeviceFlag(flag),
                reason: CloseReason::ClientClosed,
            }),
        }
    }

    #[test]
    fn the_latest_end_of_each_flag_is_kept_flags_ascending() {
        let seen = LastSeen::default();
        seen.load([(Uid::parse("u").unwrap(), DeviceFlag(3), 100)]);
        for r in [ended("u", 2, 200), ended("u", 3, 300), ended("v", 1, 50)] {
            seen.apply(&r);
        }
        let mut u = Vec::new();
        seen.for_each("u", |f, at| u.push((f.0, at)));
        assert_eq!(u, [(2, 200), (3, 300)]);
        assert_eq!(seen.len(), 3);
        let mut nobody = 0;
        seen.for_each("w", |_, _| nobody += 1);
        assert_eq!(nobody, 0);
    }

    /// Whichever order the flags end in, they read ascending, the latest end of each kept;
    /// one flag takes no allocation of its own.
    #[test]
    fn flags_read_ascending_whichever_is_held_inline() {
        assert_eq!(std::mem::size_of::<SeenFlags>(), 24);
        let seen = LastSeen::default();
        for (flag, at) in [(5u8, 1), (9, 2), (2, 3), (5, 4), (0, 5), (9, 6)] {
            seen.apply(&ended("u", flag, at));
        }
        let mut u = Vec::new();
        seen.for_each("u", |f, at| u.push((f.0, at)));
        assert_eq!(u, [(0, 5), (2, 3), (5, 4), (9, 6)]);
        assert_eq!(seen.len(), 4);
        seen.apply(&ended("v", 3, 7));
        seen.users.read("v", |f| assert!(f.unwrap().more.is_none()));
    }
}
