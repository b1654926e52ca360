//! The event log's memory under steady churn (issue 22, point 2): which bytes grow per event
//! appended, and whether the allocator or the log's engine holds them.
//!
//! `write` appends events through the real log (`EventLog` over `SledStore`, as the server
//! does) in the soak's mix: a token for each of `--users` users, `--held` sessions opened, then
//! one session closed and one opened at a time over the users until `EVENTS` events, `--batch`
//! events per append, the log read behind the writer as the view's projector reads it. Every
//! `--every` events it prints the process's RSS beside the bytes live on the heap, counted by
//! the global allocator (mimalloc, the server's, underneath): live bytes that grow are data
//! some structure keeps; RSS that grows past them is the allocator's. At the end it closes the
//! log and prints both again (what the log's engine held is then freed), then once more after
//! `mi_collect` (mimalloc returning what it can).
//!
//! `open` is a restart: it opens the log in `DIR` with nothing else and prints the same two
//! figures, once opened and after reading every event once.
//!
//! `packed` writes the same events to a sled database of the log's settings with one key per
//! `K` events in each tree (`K` 1: the log's layout before it was packed, `K` 16 about the
//! packed one), to show what the number of keys per event costs, apart from their bytes.
//!
//! ```sh
//! cargo run --release --example log_memory -- write /tmp/logmem 2000000 [--users 11000]
//!     [--held 10000] [--batch 8] [--every 250000] [--cache-mb 32] [--leave-open]
//! cargo run --release --example log_memory -- open /tmp/logmem [--cache-mb 32]
//! cargo run --release --example log_memory -- packed /tmp/logmem-k 2000000 16 [--batch 8 ...]
//! ```
//!
//! `LOG_MEMORY_ALLOC=system` puts the system allocator under the counter instead of mimalloc,
//! so that heaptrack (which sees malloc, not mimalloc) can tell which call sites hold the bytes;
//! `--leave-open` exits with the log still open, so that heaptrack lists what it holds as never
//! freed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::log::{EventLog, SledStore};

/// mimalloc or the system allocator (chosen once, before the first allocation), counting the
/// bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// 0: not chosen yet; 1: mimalloc; 2: the system allocator.
static UNDER: AtomicU8 = AtomicU8::new(0);

fn under() -> u8 {
    match UNDER.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: getenv with a NUL-terminated name; it allocates nothing, and the
            // allocator's first call comes before any thread that could change the environment.
            let value = unsafe { libc::getenv(c"LOG_MEMORY_ALLOC".as_ptr()) };
            let system = !value.is_null()
                // SAFETY: getenv returned a NUL-terminated string.
                && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"system";
            let chosen = if system { 2 } else { 1 };
            UNDER.store(chosen, Ordering::Relaxed);
            chosen
        }
        chosen => chosen,
    }
}

// SAFETY: every call is passed on unchanged to the one allocator chosen before the first
// allocation; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = if under() == 2 {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if under() == 2 {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if under() == 2 {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = if under() == 2 {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        };
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

extern "C" {
    /// mimalloc's own: returns the memory it can to the OS (linked through the mimalloc crate).
    fn mi_collect(force: bool);
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

/// Reports RSS and live bytes at `n` events, and their growth per event since the first report
/// at or past `every` events (`mark`: that report's events, RSS and live bytes).
fn report_growth(what: &str, n: u64, every: u64, mark: &mut Option<(u64, f64, f64)>) {
    let (rss, live) = report(what);
    match *mark {
        Some((m, rss0, live0)) => println!(
            "  since {m} events: {:.1} B of RSS and {:.1} B live per event",
            (rss - rss0) / (n - m) as f64,
            (live - live0) / (n - m) as f64
        ),
        None if n >= every => *mark = Some((n, rss, live)),
        None => {}
    }
}

fn report(what: &str) -> (f64, f64) {
    let (rss, live) = (rss_bytes(), LIVE.load(Ordering::Relaxed) as f64);
    println!(
        "{what}: RSS {:.1} MiB, live heap {:.1} MiB, RSS above live {:.1} MiB",
        mib(rss),
        mib(live),
        mib(rss - live)
    );
    (rss, live)
}

struct Options {
    users: u64,
    held: u64,
    batch: usize,
    every: u64,
    cache_mb: u64,
    leave_open: bool,
}

fn uid(i: u64) -> Uid {
    Uid::parse(&format!("user_{i:07}")).unwrap()
}

fn connected(i: u64) -> Connected {
    Connected {
        session_id: SessionId::new(),
        uid: uid(i),
        device_flag: DeviceFlag(1),
        device_level: DeviceLevel::Slave,
        device_id: DeviceId::parse(&format!("web_{i:08x}")).unwrap(),
        node_id: NodeId(1),
        peer: format!("127.0.0.1:{}", 20000 + i % 40000),
    }
}

/// The soak's events, one at a time: the tokens, the held sessions opened, then a close and an
/// open in turn over the users (the session of the user closed longest ago reopens first).
fn events(o: &Options) -> impl Iterator<Item = Event> {
    let (users, held) = (o.users, o.held.max(1));
    let mut k = 0u64;
    let mut open: std::collections::VecDeque<(u64, SessionId)> = Default::default();
    let mut next_user = 0u64;
    std::iter::from_fn(move || {
        k += 1;
        if k <= users {
            return Some(Event::TokenUpdated(TokenUpdated {
                uid: uid(k - 1),
                device_flag: DeviceFlag(1),
                device_level: DeviceLevel::Slave,
                token_hash: Token::parse(&format!("t{k}")).unwrap().hash(),
            }));
        }
        if open.len() as u64 >= held && (k - users).is_multiple_of(2) {
            let (i, session_id) = open.pop_front().expect("held sessions are open");
            return Some(Event::Disconnected(Disconnected {
                session_id,
                uid: uid(i),
                device_flag: DeviceFlag(1),
                reason: CloseReason::ClientClosed,
            }));
        }
        let i = next_user % users;
        next_user += 1;
        let c = connected(i);
        open.push_back((i, c.session_id));
        Some(Event::Connected(c))
    })
}

async fn write(dir: &std::path::Path, total: u64, o: &Options) {
    report("before opening the log");
    let store = Arc::new(SledStore::open_with_cache(dir, o.cache_mb).unwrap());
    let log = EventLog::start(store, NodeId(1)).unwrap();
    let start_seq = log.last_durable();
    report("the log opened");
    let started = Instant::now();
    let mut source = events(o);
    let (mut n, mut read_to) = (0u64, start_seq);
    let mut mark: Option<(u64, f64, f64)> = None;
    while n < total {
        let batch: Vec<Event> = source.by_ref().take(o.batch).collect();
        n += batch.len() as u64;
        log.append(batch).await.unwrap();
        // The projector's read behind the writer, 2,048 events at a time.
        if log.last_durable().0 - read_to.0 >= 2048 {
            let read = log.read_after(read_to, 2048).unwrap();
            read_to = read.last().map_or(read_to, |r| r.seq);
        }
        if n % o.every < o.batch as u64 {
            let what = format!(
                "{n} events ({:.0}/s)",
                n as f64 / started.elapsed().as_secs_f64()
            );
            report_growth(&what, n, o.every, &mut mark);
        }
    }
    if o.leave_open {
        // For heaptrack: what the open log holds is reported as never freed, by call site.
        std::process::exit(0);
    }
    log.close().await;
    drop(log);
    // The writer's thread is joined; sled's own threads let go of the tree moments later.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    report("the log closed");
    // SAFETY: mimalloc's collect takes no pointer; harmless under the system allocator.
    unsafe { mi_collect(true) };
    report("after mi_collect");
}

/// The same events in a sled database of the log's settings, `k` events to a key: each tree
/// gets one key per `k` events (the events' 72 B on average each, as the binary envelope
/// stores them; `k` seqs of one uid to an index key), one transaction and flush per `--batch`
/// events as the writer does. With `k` 1 it is the log's layout before it was packed; a larger
/// `k` shows what fewer keys per event would hold (sled's leaves split at 17 keys, whatever
/// their size). Its trees are its own, not the log's (`src/log/sled_store`).
fn packed(dir: &std::path::Path, total: u64, k: u64, o: &Options) {
    use sled::Transactional;
    report("before opening the log");
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(o.cache_mb.max(1) * 1024 * 1024)
        .open()
        .unwrap();
    let (events_tree, by_uid) = (
        db.open_tree("events").unwrap(),
        db.open_tree("by_uid").unwrap(),
    );
    report("the log opened");
    let value = vec![0x5au8; 72 * k as usize];
    let mut per_uid: std::collections::HashMap<Uid, u64> = Default::default();
    let mut source = events(o);
    let mut mark: Option<(u64, f64, f64)> = None;
    let mut n = 0u64;
    while n < total {
        let (mut ev, mut ix) = (sled::Batch::default(), sled::Batch::default());
        for e in source.by_ref().take(o.batch) {
            n += 1;
            if n.is_multiple_of(k) {
                ev.insert(&(n / k).to_be_bytes(), value.as_slice());
            }
            for uid in e.uids() {
                let count = per_uid.entry(uid.clone()).or_default();
                *count += 1;
                if count.is_multiple_of(k) {
                    let mut key = uid.as_str().as_bytes().to_vec();
                    key.push(0);
                    key.extend_from_slice(&n.to_be_bytes());
                    ix.insert(key, vec![0u8; 4 * k as usize]);
                }
            }
        }
        (&events_tree, &by_uid)
            .transaction(|(a, b)| {
                a.apply_batch(&ev)?;
                b.apply_batch(&ix)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        db.flush().unwrap();
        if n % o.every < o.batch as u64 {
            report_growth(&format!("{n} events, {k} to a key"), n, o.every, &mut mark);
        }
    }
    if o.leave_open {
        std::process::exit(0);
    }
}

fn open(dir: &std::path::Path, o: &Options) {
    report("before opening the log");
    let store = SledStore::open_with_cache(dir, o.cache_mb).unwrap();
    report("the log opened");
    if o.leave_open {
        std::process::exit(0);
    }
    let mut after = Seq(0);
    let mut n = 0usize;
    loop {
        let read = wkuser::log::LogStore::read_after(&store, after, 4096).unwrap();
        let Some((last, _)) = read.last() else { break };
        after = *last;
        n += read.len();
    }
    report(&format!("every event read once ({n})"));
    // SAFETY: as above.
    unsafe { mi_collect(true) };
    report("after mi_collect");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let o = Options {
        users: flag("--users", 11_000),
        held: flag("--held", 10_000),
        batch: flag("--batch", 8) as usize,
        every: flag("--every", 250_000),
        cache_mb: flag("--cache-mb", wkuser::config::DEFAULT_LOG_CACHE_MB),
        leave_open: args.iter().any(|a| a == "--leave-open"),
    };
    let usage = "log_memory write DIR EVENTS [--users N] [--held N] [--batch N] [--every N] [--cache-mb N] | log_memory open DIR [--cache-mb N] | log_memory packed DIR EVENTS K [same options as write]";
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("write"), Some(dir)) => {
            let total: u64 = args.get(2).expect(usage).parse().expect("EVENTS: a number");
            write(std::path::Path::new(dir), total, &o).await;
        }
        (Some("open"), Some(dir)) => open(std::path::Path::new(dir), &o),
        (Some("packed"), Some(dir)) => {
            let total: u64 = args.get(2).expect(usage).parse().expect("EVENTS: a number");
            let k: u64 = args.get(3).expect(usage).parse().expect("K: a number");
            packed(std::path::Path::new(dir), total, k.max(1), &o);
        }
        _ => panic!("{usage}"),
    }
}
