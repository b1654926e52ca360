//! The presence path, measured on a state of 1,000,000 users of which 10% are online on one or
//! two flags: onlinestatus lookups (1, 100, 10,000 uids, hits and misses mixed), the parsing
//! of a 100-uid body (the scanner beside serde), the token
//! check of a connect, decide + evolve of a connect and a disconnect, the event encoding round
//! trip, and the onlinestatus route called in-process (the server's whole API service, its
//! front door and router, through tower's `oneshot`) beside an axum route that answers the
//! same bytes from a constant (the ceiling of the stack, in the same run).
//!
//! `cargo bench --bench presence`. Setup prints the memory per known user and per online
//! session (RSS before and after building the state), and per (uid, flag) of last seen.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::routing::post;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use tower::ServiceExt;
use uuid::Uuid;
use wkuser::apply::Subscribers;
use wkuser::domain::event::*;
use wkuser::domain::*;
use wkuser::gateway::{Gateway, GatewaySettings};
use wkuser::http::{onlinestatus, ApiContext, ApiLimits, ApiState};
use wkuser::log::{EventLog, SledStore};
use wkuser::presence::Presence;
use wkuser::view::SqliteView;
use wkuser::write::WritePath;

const USERS: u64 = 1_000_000;

fn uid(i: u64) -> Uid {
    Uid::parse(&format!("user_{i}")).unwrap()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Every user has a token on flag 1; every tenth is online on flag 1, every twentieth on flag
/// 2 as well. Built event by event, as a running server builds it, so that the RSS growth is
/// what the state costs.
fn build_presence() -> Presence {
    let presence = Presence::new();
    let hash = Token::parse("t").unwrap().hash();
    let before = rss_bytes();
    for i in 0..USERS {
        presence.apply(&Event::TokenUpdated(TokenUpdated {
            uid: uid(i),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Slave,
            token_hash: hash,
        }));
    }
    let with_users = rss_bytes();
    let mut sessions = 0u64;
    for i in (0..USERS).step_by(10) {
        for flag in if i % 20 == 0 {
            &[1u8, 2][..]
        } else {
            &[1u8][..]
        } {
            presence.apply(&connected(i, *flag));
            sessions += 1;
        }
    }
    let with_sessions = rss_bytes();
    eprintln!(
        "memory: {:.0} bytes per known user ({USERS} users), {:.0} bytes per online session ({sessions} sessions)",
        (with_users - before) as f64 / USERS as f64,
        (with_sessions - with_users) as f64 / sessions as f64
    );
    presence
}

fn connected(i: u64, flag: u8) -> Event {
    Event::Connected(Connected {
        session_id: SessionId::new(),
        uid: uid(i),
        device_flag: DeviceFlag(flag),
        device_level: DeviceLevel::Slave,
        device_id: DeviceId::parse(&format!("web_{i:08x}")).unwrap(),
        node_id: NodeId(1),
        peer: "127.0.0.1:40000".into(),
    })
}

/// `n` uids spread over the whole population (about 10% online), a few unknown ones mixed in.
fn request_uids(n: u64, salt: u64) -> Vec<String> {
    (0..n)
        .map(|k| {
            if k % 17 == 16 {
                format!("nobody_{k}")
            } else {
                format!("user_{}", (k * 7_919 + salt * 104_729) % USERS)
            }
        })
        .collect()
}

/// Runs `op` `iters` times in all, split over two threads started together; the wall time.
fn on_two_threads(iters: u64, op: impl Fn(usize) -> usize + Sync) -> std::time::Duration {
    let start = std::sync::Barrier::new(2);
    let began = std::time::Instant::now();
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let (op, start) = (&op, &start);
            scope.spawn(move || {
                start.wait();
                for k in (t..iters).step_by(2) {
                    op(k as usize);
                }
            });
        }
    });
    began.elapsed()
}

/// Requests rotate over 64 different uid sets, so that lookups meet the cache as a server
/// meets it (a real stream of requests rarely repeats its uids), not a warm repeat.
fn lookups(c: &mut Criterion, presence: &Presence) {
    let mut group = c.benchmark_group("onlinestatus_lookup");
    for n in [1u64, 100, 10_000] {
        let sets: Vec<Vec<String>> = (0..64).map(|salt| request_uids(n, salt)).collect();
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &sets, |b, sets| {
            let mut k = 0;
            b.iter(|| {
                k = (k + 1) % sets.len();
                black_box(onlinestatus::render(presence, &sets[k]))
            })
        });
    }
    // The straightforward index, as a baseline in the same run: the same online users in a
    // concurrent map read one locked lookup per uid (what the server used before batching).
    let straightforward: DashMap<Uid, u8, ahash::RandomState> = DashMap::default();
    for i in (0..USERS).step_by(10) {
        straightforward.insert(uid(i), 1);
    }
    let sets: Vec<Vec<String>> = (0..64).map(|salt| request_uids(100, salt)).collect();
    group.throughput(Throughput::Elements(100));
    group.bench_with_input("per_uid_lock_baseline/100", &sets, |b, sets| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % sets.len();
            let online = sets[k]
                .iter()
                .filter(|u| straightforward.get(u.as_str()).is_some())
                .count();
            black_box(online)
        })
    });
    // The same two, from two threads at once (the server's two workers): here the per-uid
    // locks bounce between the cores. Time per request of 100 uids, both threads together.
    let batched = |k: usize| black_box(onlinestatus::render(presence, &sets[k % 64]).len());
    let per_uid = |k: usize| {
        black_box(
            sets[k % 64]
                .iter()
                .filter(|u| straightforward.get(u.as_str()).is_some())
                .count(),
        )
    };
    group.bench_function("two_threads/100", |b| {
        b.iter_custom(|iters| on_two_threads(iters, batched))
    });
    group.bench_function("two_threads/per_uid_lock_baseline/100", |b| {
        b.iter_custom(|iters| on_two_threads(iters, per_uid))
    });
    group.finish();
}

fn write_path(c: &mut Criterion, presence: &Presence) {
    let mut group = c.benchmark_group("write_path");
    let token = "a-token-of-realistic-length-0123456789abcdef";
    let user = uid(424_242);
    let hash = Token::parse(token).unwrap().hash();
    let mut state = UserState::default();
    evolve(
        &mut state,
        &Event::TokenUpdated(TokenUpdated {
            uid: user.clone(),
            device_flag: DeviceFlag(1),
            device_level: DeviceLevel::Master,
            token_hash: hash,
        }),
    );
    let connect = |session_id| Command::Connect {
        session_id,
        uid: user.clone(),
        device_flag: DeviceFlag(1),
        device_id: DeviceId::parse("web_1a2b3c4d_1700000000000").unwrap(),
        presented: hash,
        node_id: NodeId(1),
        peer: "127.0.0.1:40000".into(),
    };
    group.bench_function("token_check_of_a_connect", |b| {
        b.iter(|| {
            let presented = Token::parse(black_box(token)).unwrap().hash();
            presence.with_user(black_box("user_424242"), |s| match s.token(DeviceFlag(1)) {
                Some(TokenSlot::Active { hash, .. }) => hash.matches(&presented),
                _ => false,
            })
        })
    });
    group.bench_function("decide_evolve_connect", |b| {
        b.iter(|| {
            let mut s = state.clone();
            let events = decide(StateOf::User(&s), &connect(SessionId::new())).unwrap();
            for e in &events {
                evolve(&mut s, e);
            }
            black_box(s)
        })
    });
    let mut online = state.clone();
    let session_id = SessionId::new();
    for e in decide(StateOf::User(&online), &connect(session_id)).unwrap() {
        evolve(&mut online, &e);
    }
    let bye = Command::Disconnect {
        uid: user.clone(),
        session_id,
        reason: CloseReason::ClientClosed,
    };
    group.bench_function("decide_evolve_disconnect", |b| {
        b.iter(|| {
            let mut s = online.clone();
            for e in decide(StateOf::User(&s), &bye).unwrap() {
                evolve(&mut s, &e);
            }
            black_box(s)
        })
    });
    let recorded = RecordedEvent {
        seq: Seq(1),
        event_id: Uuid::now_v7(),
        recorded_at: 1_795_000_000_000,
        node_id: NodeId(1),
        event: connected(7, 1),
    };
    group.bench_function("event_encode_decode", |b| {
        b.iter(|| {
            let bytes = recorded.encode();
            black_box(RecordedEvent::decode(Seq(1), &bytes).unwrap())
        })
    });
    group.finish();
}

fn routes(c: &mut Criterion, presence: Presence) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, answer) = runtime.block_on(async {
        let store = Arc::new(SledStore::open(&dir.path().join("log")).unwrap());
        let presence = Arc::new(presence);
        let subscribers = Arc::new(Subscribers::new(presence.clone(), wkuser::domain::Seq(0)));
        let log = EventLog::start_with(store, NodeId(1), subscribers.clone()).unwrap();
        let view = Arc::new(
            SqliteView::open(&dir.path().join("view.sqlite"))
                .await
                .unwrap(),
        );
        let write = Arc::new(WritePath::new(log, subscribers));
        let config = wkuser::config::Config::from_args(Vec::<String>::new()).unwrap();
        let gateway = Gateway::new(write.clone(), GatewaySettings::from_config(&config));
        let state = ApiState::new(ApiContext {
            write,
            gateway,
            view,
            limits: ApiLimits {
                max_body_bytes: 1 << 20,
                max_uids_per_request: 10_000,
            },
            manager_token: None,
            ready: Arc::new(AtomicBool::new(true)),
            lease: None,
            storage_reachable: None,
            webhook: None,
            node_id: NodeId(1),
            started_at: String::new(),
        });
        let uids = request_uids(100, 5);
        let answer = Bytes::from(onlinestatus::render(&presence, &uids));
        (wkuser::http::service(state), answer)
    });
    let bodies: Vec<Vec<u8>> = (0..64)
        .map(|salt| serde_json::to_vec(&request_uids(100, salt)).unwrap())
        .collect();
    let body = bodies[5].clone();
    let constant = {
        let answer = answer.clone();
        axum::Router::new().route(
            "/user/onlinestatus",
            post(move |_body: Bytes| {
                let answer = answer.clone();
                async move { ([("content-type", "application/json")], answer) }
            }),
        )
    };
    eprintln!(
        "route: request {} bytes, answer {} bytes",
        body.len(),
        answer.len()
    );
    let mut group = c.benchmark_group("onlinestatus_route_100_uids");
    group.throughput(Throughput::Elements(1));
    group.bench_function("constant_ceiling", |b| {
        b.to_async(&runtime)
            .iter(|| call(constant.clone(), body.clone()))
    });
    let mut k = 0;
    group.bench_function("wkuser", |b| {
        b.to_async(&runtime).iter(|| {
            k = (k + 1) % bodies.len();
            call(router.clone(), bodies[k].clone())
        })
    });
    group.finish();
}

/// One POST of `body` to `/user/onlinestatus` through `service`, read to the end.
async fn call<S>(service: S, body: Vec<u8>) -> Bytes
where
    S: tower::Service<Request<Body>, Response = axum::response::Response>,
    S::Error: std::fmt::Debug,
{
    let request = Request::post("/user/onlinestatus")
        .body(Body::from(body))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
}

/// Reading a body of 100 uids: the scanner the handler takes for plain bodies beside the
/// serde path it falls back to (the straightforward parser, as a baseline in the same run).
fn parsing(c: &mut Criterion) {
    let body = serde_json::to_vec(&request_uids(100, 1)).expect("strings serialize");
    let mut group = c.benchmark_group("onlinestatus_parse_100_uids");
    group.throughput(Throughput::Elements(100));
    group.bench_function("scanner", |b| {
        b.iter(|| black_box(onlinestatus::scan_plain_uids(black_box(&body), 10_000)))
    });
    group.bench_function("serde_baseline", |b| {
        b.iter(|| black_box(onlinestatus::parse_with_serde(black_box(&body), 10_000)))
    });
    group.finish();
}

/// Last seen for every user on flag 1 and every tenth on flag 2 as well, built from
/// `Disconnected` events as a running server builds it; prints its RSS growth per (uid, flag).
fn measure_last_seen() {
    let last_seen = wkuser::apply::last_seen::LastSeen::default();
    let before = rss_bytes();
    let mut pairs = 0u64;
    for i in 0..USERS {
        for flag in if i % 10 == 0 {
            &[1u8, 2][..]
        } else {
            &[1u8][..]
        } {
            last_seen.apply(&RecordedEvent {
                seq: Seq(i + 1),
                event_id: Uuid::now_v7(),
                recorded_at: 1_700_000_000_000 + i as i64,
                node_id: NodeId(1),
                event: Event::Disconnected(Disconnected {
                    session_id: SessionId::new(),
                    uid: uid(i),
                    device_flag: DeviceFlag(*flag),
                    reason: CloseReason::ClientClosed,
                }),
            });
            pairs += 1;
        }
    }
    let after = rss_bytes();
    eprintln!(
        "memory: {:.0} bytes per (uid, flag) of last seen ({pairs} pairs of {USERS} users)",
        (after - before) as f64 / pairs as f64
    );
    assert_eq!(last_seen.len() as u64, pairs);
}

fn presence_benches(c: &mut Criterion) {
    parsing(c);
    let presence = build_presence();
    // After the presence is built and while it is held: its figures are not taken over memory
    // this one freed.
    measure_last_seen();
    lookups(c, &presence);
    write_path(c, &presence);
    routes(c, presence);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = presence_benches
}
criterion_main!(benches);
