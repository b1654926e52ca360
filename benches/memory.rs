//! What memory holds per known user and per online session, counted by the allocator.
//!
//! A counting global allocator (the system allocator underneath) keeps the bytes live at every
//! moment; each figure is the growth of that count while the state is built event by event, as
//! a running server builds it, divided by what was added:
//! - a known user: a token on one flag, offline, in the presence state (1,000,000 users);
//! - last seen: one (uid, flag) whose session ended, for each of those users;
//! - an online session: one session on one flag for every tenth user (100,000 sessions), in
//!   the presence state and its online index;
//! - what is left once every session closed again (nothing should be).
//!
//! The counts are the bytes asked for; an allocator rounds small blocks up to its size classes,
//! so the RSS growth is printed beside them (with the system allocator; the server uses
//! mimalloc). Then criterion times the token lookup of a connect in the million users, against
//! a plain `HashMap<String, _>` of the same users read without any lock (the ceiling, in the
//! same run).
//!
//! `cargo bench --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use wkuser::apply::last_seen::LastSeen;
use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::presence::Presence;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const USERS: u64 = 1_000_000;
/// Every tenth user is online.
const ONLINE_EVERY: u64 = 10;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn uid(i: u64) -> Uid {
    Uid::parse(&format!("user_{i}")).unwrap()
}

fn hash(i: u64) -> TokenHash {
    Token::parse(&format!("token-{i}")).unwrap().hash()
}

/// Counted bytes and RSS growth while `build` runs, per `per` things.
struct Growth {
    counted: f64,
    rss: f64,
}

fn measure(per: u64, build: impl FnOnce()) -> Growth {
    let (live0, rss0) = (live(), rss_bytes());
    build();
    Growth {
        counted: (live() - live0) as f64 / per as f64,
        rss: (rss_bytes() - rss0) as f64 / per as f64,
    }
}

fn recorded(event: Event) -> RecordedEvent {
    RecordedEvent {
        seq: Seq(1),
        event_id: uuid::Uuid::now_v7(),
        recorded_at: 1_795_000_000_000,
        node_id: NodeId(1),
        event,
    }
}

/// Builds the state, printing what each part costs; returns it for the timings.
fn build_and_report() -> Presence {
    let presence = Presence::new();
    let users = measure(USERS, || {
        for i in 0..USERS {
            presence.apply(&Event::TokenUpdated(TokenUpdated {
                uid: uid(i),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Slave,
                token_hash: hash(i),
            }));
        }
    });
    let last_seen = LastSeen::default();
    let seen = measure(USERS, || {
        for i in 0..USERS {
            last_seen.apply(&recorded(Event::Disconnected(Disconnected {
                session_id: SessionId::new(),
                uid: uid(i),
                device_flag: DeviceFlag(1),
                reason: CloseReason::ClientClosed,
            })));
        }
    });
    let online: Vec<u64> = (0..USERS).step_by(ONLINE_EVERY as usize).collect();
    let mut ids = Vec::with_capacity(online.len());
    ids.extend(online.iter().map(|_| SessionId::new()));
    let sessions = measure(online.len() as u64, || {
        for (i, session_id) in online.iter().zip(&ids) {
            presence.apply(&Event::Connected(Connected {
                session_id: *session_id,
                uid: uid(*i),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Slave,
                device_id: DeviceId::parse(&format!("web_{i:08x}")).unwrap(),
                node_id: NodeId(1),
                peer: "127.0.0.1:40000".into(),
            }));
        }
    });
    let closed = measure(USERS, || {
        for (i, session_id) in online.iter().zip(&ids) {
            presence.apply(&Event::Disconnected(Disconnected {
                session_id: *session_id,
                uid: uid(*i),
                device_flag: DeviceFlag(1),
                reason: CloseReason::ClientClosed,
            }));
        }
    });
    assert_eq!(presence.counts(), (USERS as usize, 0));
    println!(
        "memory, counted by the allocator (RSS growth with the system allocator in brackets):"
    );
    println!(
        "  known user, a token on one flag, offline: {:.1} B per user ({:.1} B), {USERS} users",
        users.counted, users.rss
    );
    println!(
        "  last seen, one flag: {:.1} B per user ({:.1} B), {USERS} users",
        seen.counted, seen.rss
    );
    println!(
        "  online session, one flag: {:.1} B per session ({:.1} B), {} sessions",
        sessions.counted,
        sessions.rss,
        online.len()
    );
    println!(
        "  left once every session closed: {:.2} B per user ({:.1} B)",
        closed.counted + sessions.counted * online.len() as f64 / USERS as f64,
        closed.rss + sessions.rss * online.len() as f64 / USERS as f64
    );
    drop(last_seen);
    presence
}

fn memory_benches(c: &mut Criterion) {
    let presence = build_and_report();
    // The ceiling: the same users' token hashes in a plain map, read without any lock.
    let plain: HashMap<String, (DeviceFlag, TokenHash), ahash::RandomState> = (0..USERS)
        .map(|i| (format!("user_{i}"), (DeviceFlag(1), hash(i))))
        .collect();
    let asked: Vec<String> = (0..4096u64)
        .map(|k| format!("user_{}", (k * 7_919) % USERS))
        .collect();
    let mut group = c.benchmark_group("memory");
    let mut k = 0usize;
    group.bench_function("token lookup, 1,000,000 users", |b| {
        b.iter(|| {
            k = (k + 1) % asked.len();
            presence.with_user(black_box(&asked[k]), |s| s.token(DeviceFlag(1)))
        })
    });
    group.bench_function("baseline: plain HashMap lookup, no lock", |b| {
        b.iter(|| {
            k = (k + 1) % asked.len();
            plain
                .get(black_box(asked[k].as_str()))
                .filter(|(f, _)| *f == DeviceFlag(1))
                .map(|(_, h)| *h)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = memory_benches
}
criterion_main!(benches);
