//! `wkuser audit` and `wkuser events`: a user's session history and the log's events, read from
//! a stopped data directory, the shared database, or a running server's API.
//!
//! Owns their arguments and output; promises the same lines whichever source is read. Must
//! never write to what it reads.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;
use wkuser::domain::{Seq, Uid};
use wkuser::ops::client::{encode, ApiClient};
use wkuser::ops::{across, audit, shared};
use wkuser::view::{SqliteView, ViewStore};

use super::{open_log, ArchivesArg, DataDirArg, RemoteArgs, SharedArg};

#[derive(Args)]
pub struct AuditArgs {
    /// The uid.
    uid: String,
    /// Most sessions shown, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only the events of this uid.
    #[arg(long)]
    uid: Option<String>,
    /// Only events after this seq.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Keep printing new events as they are recorded (needs --api: a stopped log does not grow).
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    archives: ArchivesArg,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    shared: SharedArg,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// What to do about a data directory a server holds.
const EVENTS_IN_USE: &str = "stop it first, or read through its API with --api ADDR";

fn parse_uid(uid: &str) -> anyhow::Result<Uid> {
    Uid::parse(uid).map_err(|e| anyhow::anyhow!("{uid:?} is not a valid uid: it {e}"))
}

pub async fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let uid = parse_uid(&a.uid)?;
    let limit = a.limit.clamp(1, 1000);
    let (history, source) = match &a.remote.api {
        Some(api) => {
            let client = ApiClient::new(api, a.remote.manager_token.clone());
            let path = format!("/user/sessions?uid={}&limit={limit}", encode(uid.as_str()));
            let history: audit::History = client.get(&path).await?;
            (history, format!("running server at {api} (live status)"))
        }
        None => {
            // One snapshot: a server beside may be projecting into the view meanwhile.
            let (snapshot, what) = match &a.shared.database_url {
                Some(url) => {
                    let view = shared::open_shared_view(url).await?;
                    let snapshot = view.history_snapshot(&uid, limit + 1).await;
                    view.close().await;
                    (snapshot?, "shared SQL view in PostgreSQL".to_string())
                }
                None => {
                    let path = a.data.data_dir.join("view.sqlite");
                    let view = SqliteView::open_existing_read_only(&path).await?;
                    let snapshot = view.history_snapshot(&uid, limit + 1).await;
                    view.close().await;
                    (snapshot?, format!("SQL view {}", path.display()))
                }
            };
            let source = format!("{what} as of seq {}", snapshot.checkpoint);
            (audit::from_snapshot(&uid, snapshot, limit), source)
        }
    };
    print!("{}", audit::render(&history, &source));
    Ok(())
}

/// A page of `/events`, its events kept as the server wrote them: printed as they are, they
/// are the lines `events` prints from a data directory, keys in the same order.
#[derive(Deserialize)]
struct EventsPage {
    events: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct EventSeq {
    seq: u64,
}

pub async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let uid = a.uid.as_deref().map(parse_uid).transpose()?;
    if a.remote.api.is_some() && !a.archives.archives.is_empty() {
        bail!("--archive reads a stopped data directory or a shared database: it cannot go with --api");
    }
    match &a.remote.api {
        Some(api) => {
            let client = ApiClient::new(api, a.remote.manager_token.clone());
            events_from_api(&client, uid, a.after, a.follow).await
        }
        None => {
            if a.follow {
                bail!("--follow needs --api: a stopped data directory does not grow, and a shared database is followed through a node's API");
            }
            events_from_log(&a, uid).await
        }
    }
}

async fn events_from_api(
    client: &ApiClient,
    uid: Option<Uid>,
    mut after: u64,
    follow: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    loop {
        let mut path = format!("/events?after={after}&limit=1000");
        if let Some(u) = &uid {
            path.push_str(&format!("&uid={}", encode(u.as_str())));
        }
        let page: EventsPage = client.get(&path).await?;
        for e in &page.events {
            writeln!(out, "{}", e.get())?;
            let seq: EventSeq =
                serde_json::from_str(e.get()).context("an event of /events without a seq")?;
            after = seq.seq.max(after);
        }
        out.flush()?;
        if page.events.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn events_from_log(a: &EventsArgs, uid: Option<Uid>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let log = open_log(&a.shared, &a.data, EVENTS_IN_USE).await?;
    let mut after = Seq(a.after);
    let archives = &a.archives.archives;
    if !archives.is_empty() {
        across::archived_events(&log, archives, uid.as_ref().map(Uid::as_str), after, |e| {
            writeln!(out, "{}", e.to_operator_json())
        })?;
    }
    if let Some(b) = across::boundary_of(&log)? {
        if archives.is_empty() && after < b.seq {
            eprintln!(
                "note: the events up to seq {} are archived, in {}: pass --archive FILE to read them too",
                b.seq,
                b.files()
            );
        }
        after = after.max(b.seq);
    }
    loop {
        let batch = match &uid {
            Some(u) => log.read_uid(u.as_str(), after, 4096)?,
            None => log.read_after(after, 4096)?,
        };
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            writeln!(out, "{}", e.to_operator_json())?;
        }
    }
    out.flush()?;
    log.close().await;
    Ok(())
}
