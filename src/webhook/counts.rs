//! The entries of the webhook and the fold that numbers them: which sessions are open as of
//! the cursor, how many per uid and flag, and the seq each opened at.
//!
//! Owns [`Counts`], a fold of the log up to the webhook's cursor, and [`Entry`], one string of
//! WuKongIM's `user.onlinestatus` body: `uid-deviceFlag-online-connId-deviceOnlineCount-
//! totalOnlineCount`. Promises: an entry's counts are those of the whole log (every node's
//! sessions) just after its event, whatever the cursor's distance from the log's end; connId
//! is the seq of the session's `Connected`, a decimal integer, the same in its online and its
//! offline entry. Must never: do I/O, or read the server's live memory (which is ahead of the
//! cursor).

use std::collections::HashMap;
use std::fmt;

use crate::domain::{DeviceFlag, Event, RecordedEvent, Seq, SessionId, Uid};
use crate::view::SessionSeq;

/// One entry of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub online: bool,
    /// The seq of the session's `Connected`.
    pub conn_id: Seq,
    /// Open sessions of the uid on this flag, after the change.
    pub device_online_count: u32,
    /// Open sessions of the uid on every flag, after the change.
    pub total_online_count: u32,
}

impl fmt::Display for Entry {
    /// WuKongIM's form, `u1-1-1-4711-1-2`. A uid may hold a `-` itself: receivers split the
    /// last five fields off the right, as WuKongIM's own do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}-{}",
            self.uid,
            self.device_flag.0,
            u8::from(self.online),
            self.conn_id.0,
            self.device_online_count,
            self.total_online_count
        )
    }
}

/// The JSON body of a batch: an array of the entries' strings.
pub fn body(entries: &[Entry]) -> Vec<u8> {
    let strings: Vec<String> = entries.iter().map(Entry::to_string).collect();
    serde_json::to_vec(&strings).expect("an array of strings serializes")
}

/// The open sessions as of one seq of the log.
#[derive(Debug, Default)]
pub struct Counts {
    /// Each open session's connId.
    open: HashMap<SessionId, Seq, ahash::RandomState>,
    /// Open sessions per uid, per flag (a user has a handful of flags at most).
    per_uid: HashMap<Uid, Vec<(DeviceFlag, u32)>, ahash::RandomState>,
}

impl Counts {
    /// The counts of `sessions`, the sessions open at one seq.
    pub fn of(sessions: impl IntoIterator<Item = SessionSeq>) -> Self {
        let mut counts = Counts::default();
        for s in sessions {
            counts.open(s.session_id, &s.uid, s.device_flag, s.connected_seq);
        }
        counts
    }

    /// Sessions open.
    pub fn sessions(&self) -> usize {
        self.open.len()
    }

    /// Moves the fold past `r`; the entry it makes, if it makes one.
    pub fn apply(&mut self, r: &RecordedEvent) -> Option<Entry> {
        match &r.event {
            Event::Connected(c) => {
                let (device, total) = self.open(c.session_id, &c.uid, c.device_flag, r.seq)?;
                Some(Entry {
                    uid: c.uid.clone(),
                    device_flag: c.device_flag,
                    online: true,
                    conn_id: r.seq,
                    device_online_count: device,
                    total_online_count: total,
                })
            }
            Event::Disconnected(d) => {
                let Some(conn_id) = self.open.remove(&d.session_id) else {
                    // Every session ends once, after it started: a close of a session this
                    // fold never saw open would be a fold started at the wrong place.
                    tracing::error!(session = %d.session_id, seq = %r.seq,
                        "webhook: a session ended that was not open at the cursor; no entry for it");
                    return None;
                };
                let (device, total) = self.change(&d.uid, d.device_flag, false);
                Some(Entry {
                    uid: d.uid.clone(),
                    device_flag: d.device_flag,
                    online: false,
                    conn_id,
                    device_online_count: device,
                    total_online_count: total,
                })
            }
            _ => None,
        }
    }

    /// Opens a session (once); the counts after it, `None` when it was open already.
    fn open(&mut self, id: SessionId, uid: &Uid, flag: DeviceFlag, seq: Seq) -> Option<(u32, u32)> {
        if self.open.insert(id, seq).is_some() {
            return None;
        }
        Some(self.change(uid, flag, true))
    }

    /// One more (or one fewer) open session of `uid` on `flag`; the counts after it.
    fn change(&mut self, uid: &Uid, flag: DeviceFlag, up: bool) -> (u32, u32) {
        let flags = self.per_uid.entry(uid.clone()).or_default();
        let at = match flags.iter().position(|(f, _)| *f == flag) {
            Some(i) => i,
            None => {
                flags.push((flag, 0));
                flags.len() - 1
            }
        };
        let n = &mut flags[at].1;
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        let device = *n;
        let total = flags.iter().map(|(_, n)| n).sum();
        flags.retain(|(_, n)| *n > 0);
        if flags.is_empty() {
            self.per_uid.remove(uid);
        }
        (device, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Connected, Disconnected};
    use crate::domain::{CloseReason, DeviceId, DeviceLevel, NodeId};

    fn recorded(seq: u64, event: Event) -> RecordedEvent {
        RecordedEvent {
            seq: Seq(seq),
            event_id: uuid::Uuid::now_v7(),
            recorded_at: 0,
            node_id: NodeId(1),
            event,
        }
    }

    fn connect(seq: u64, uid: &str, flag: u8, id: SessionId) -> RecordedEvent {
        recorded(
            seq,
            Event::Connected(Connected {
                session_id: id,
                uid: Uid::parse(uid).unwrap(),
                device_flag: DeviceFlag(flag),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse("d").unwrap(),
                node_id: NodeId(1),
                peer: String::new(),
            }),
        )
    }

    fn close(seq: u64, uid: &str, flag: u8, id: SessionId) -> RecordedEvent {
        recorded(
            seq,
            Event::Disconnected(Disconnected {
                session_id: id,
                uid: Uid::parse(uid).unwrap(),
                device_flag: DeviceFlag(flag),
                reason: CloseReason::ServerRestart,
            }),
        )
    }

    #[test]
    fn entries_count_devices_per_flag_and_in_total_and_carry_the_connected_seq() {
        let mut counts = Counts::default();
        let (a, b, c) = (SessionId::new(), SessionId::new(), SessionId::new());
        let mut seen = Vec::new();
        for r in [
            connect(10, "u-1", 1, a),
            connect(11, "u-1", 1, b),
            connect(12, "u-1", 2, c),
            close(13, "u-1", 1, a),
            close(14, "u-1", 2, c),
            close(15, "u-1", 1, b),
        ] {
            seen.push(counts.apply(&r).unwrap().to_string());
        }
        assert_eq!(
            seen,
            [
                "u-1-1-1-10-1-1",
                "u-1-1-1-11-2-2",
                "u-1-2-1-12-1-3",
                "u-1-1-0-10-1-2",
                "u-1-2-0-12-0-1",
                "u-1-1-0-11-0-0",
            ]
        );
        assert_eq!(counts.sessions(), 0);
        assert!(counts.per_uid.is_empty(), "nothing kept for users offline");
    }

    #[test]
    fn a_fold_started_from_open_sessions_continues_their_counts() {
        let a = SessionId::new();
        let mut counts = Counts::of([SessionSeq {
            session_id: a,
            uid: Uid::parse("u").unwrap(),
            device_flag: DeviceFlag(3),
            connected_seq: Seq(7),
        }]);
        let b = SessionId::new();
        let on = counts.apply(&connect(20, "u", 3, b)).unwrap();
        assert_eq!(on.to_string(), "u-3-1-20-2-2");
        let off = counts.apply(&close(21, "u", 3, a)).unwrap();
        assert_eq!(off.to_string(), "u-3-0-7-1-1");
        // A close of a session the fold never saw makes no entry, and counts nothing.
        assert_eq!(counts.apply(&close(22, "u", 3, SessionId::new())), None);
        assert_eq!(counts.sessions(), 1);
    }

    #[test]
    fn the_body_is_a_json_array_of_the_entries_strings() {
        let mut counts = Counts::default();
        let e = counts
            .apply(&connect(4711, "u\"q", 1, SessionId::new()))
            .unwrap();
        assert_eq!(body(&[e]), br#"["u\"q-1-1-4711-1-1"]"#.to_vec());
    }
}
