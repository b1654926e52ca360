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

use dashmap::DashMap;

use crate::domain::{DeviceFlag, Event, RecordedEvent, Uid};

#[derive(Default)]
pub struct LastSeen {
    /// Per uid, by flag ascending: a user has a handful of flags at most.
    users: DashMap<Uid, Vec<(DeviceFlag, i64)>, ahash::RandomState>,
}

impl LastSeen {
    /// Loads the rows of the view's `last_seen` table.
    pub fn load(&self, rows: impl IntoIterator<Item = (Uid, DeviceFlag, i64)>) {
        for (uid, flag, at) in rows {
            self.set(uid, flag, at);
        }
    }

    /// Moves past a committed event.
    pub fn apply(&self, r: &RecordedEvent) {
        if let Event::Disconnected(d) = &r.event {
            self.set(d.uid.clone(), d.device_flag, r.recorded_at);
        }
    }

    fn set(&self, uid: Uid, flag: DeviceFlag, at: i64) {
        let mut flags = self.users.entry(uid).or_default();
        match flags.binary_search_by_key(&flag, |(f, _)| *f) {
            Ok(i) => flags[i].1 = at,
            Err(i) => {
                // Most users have one flag: room for exactly what is held (a vector's first
                // push would make room for four).
                flags.reserve_exact(1);
                flags.insert(i, (flag, at));
            }
        }
    }

    /// Calls `f(flag, ended_at)` for each flag of `uid` that has had a session end, ascending.
    pub fn for_each(&self, uid: &str, mut f: impl FnMut(DeviceFlag, i64)) {
        if let Some(flags) = self.users.get(uid) {
            for (flag, at) in flags.iter() {
                f(*flag, *at);
            }
        }
    }

    /// Forgets everything (memory rebuilt from the whole log at start-up).
    pub fn clear(&self) {
        self.users.clear();
    }

    /// (uid, flag) pairs held.
    pub fn len(&self) -> usize {
        self.users.iter().map(|e| e.value().len()).sum()
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
}
