//! Seeds a running server with many known users and holds some of them online: for measuring
//! what a server at a million users holds in memory ("Memory at a million users" in
//! docs/performance.md). Until the load tool grows `--known-users`, this is the way to get
//! there.
//!
//! Registers `--users` uids (`{prefix}{i:07}`) each with a token on flag 1 through
//! `/user/token`, `--concurrency` requests in flight; then opens one WebSocket for each of the
//! first `--online` of them, pings each every 30 s, and holds them until stdin closes (or
//! Ctrl-C). Prints the rates and the server's `/stats` on the way.
//!
//! ```sh
//! ulimit -n 65536
//! cargo run --release --example seed_users -- --users 1000000 --online 10000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    api: String,
    ws: String,
    users: u64,
    online: u64,
    concurrency: u64,
    prefix: String,
    /// Register nothing: only open the sessions (the users are there from an earlier run).
    skip_tokens: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        api: "127.0.0.1:5001".into(),
        ws: "127.0.0.1:5200".into(),
        users: 1_000_000,
        online: 10_000,
        concurrency: 128,
        prefix: "known_".into(),
        skip_tokens: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--api" => args.api = value(),
            "--ws" => args.ws = value(),
            "--users" => args.users = value().parse().expect("--users N"),
            "--online" => args.online = value().parse().expect("--online N"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency N"),
            "--prefix" => args.prefix = value(),
            "--skip-tokens" => args.skip_tokens = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn uid(prefix: &str, i: u64) -> String {
    format!("{prefix}{i:07}")
}

async fn stats(http: &reqwest::Client, api: &str) -> String {
    match http.get(format!("http://{api}/stats")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("(no /stats: {e})"),
    }
}

async fn seed_tokens(http: &reqwest::Client, args: &Args) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (http, next, api, prefix, users) = (
            http.clone(),
            next.clone(),
            args.api.clone(),
            args.prefix.clone(),
            args.users,
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return;
                }
                let body = format!(
                    r#"{{"uid":"{}","token":"t{i}","device_flag":1,"device_level":0}}"#,
                    uid(&prefix, i)
                );
                let resp = http
                    .post(format!("http://{api}/user/token"))
                    .body(body)
                    .send()
                    .await
                    .expect("the server answers");
                assert!(resp.status().is_success(), "{}", resp.status());
                if i > 0 && i % 100_000 == 0 {
                    eprintln!(
                        "{i} tokens, {:.0}/s",
                        i as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "registered {} tokens in {:.1} s ({:.0}/s)",
        args.users,
        started.elapsed().as_secs_f64(),
        args.users as f64 / started.elapsed().as_secs_f64()
    );
}

/// Opens a session for `uid`, then pings it every 30 s until the process ends.
async fn hold(ws: String, uid: String, token: String, opened: Arc<AtomicU64>) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{ws}"))
        .await
        .expect("the gateway accepts");
    let frame = format!(
        r#"{{"method":"connect","id":"c","params":{{"uid":"{uid}","token":"{token}","deviceFlag":1}}}}"#
    );
    socket.send(Message::text(frame)).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Text(t))) if t.contains("\"result\"") => {}
        other => panic!("connect of {uid} refused: {other:?}"),
    }
    opened.fetch_add(1, Ordering::Relaxed);
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if socket.send(Message::text(r#"{"method":"ping","id":"p"}"#)).await.is_err() {
                    return;
                }
            }
            frame = socket.next() => match frame {
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()
        .unwrap();
    if !args.skip_tokens {
        seed_tokens(&http, &args).await;
        println!("after the tokens: {}", stats(&http, &args.api).await);
    }
    let opened = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..args.online {
        let (ws, uid, token) = (args.ws.clone(), uid(&args.prefix, i), format!("t{i}"));
        pending.push(tokio::spawn(hold(ws, uid, token, opened.clone())));
        // A few hundred connects in flight at most: the gateway bounds its pending sockets.
        while i + 1 - opened.load(Ordering::Relaxed) > 256 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    while opened.load(Ordering::Relaxed) < args.online {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "{} sessions open in {:.1} s; holding them until stdin closes",
        args.online,
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("holding: {}", stats(&http, &args.api).await);
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
}
