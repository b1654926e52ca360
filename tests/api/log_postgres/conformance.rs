//! The same appends and reads, through the log, on sled and on PostgreSQL: both stores give the
//! same answers, seqs dense from 1, and the same again after a restart (the log closed and its
//! store opened anew).

use std::future::Future;
use std::sync::Arc;

use wkuser::domain::{RecordedEvent, Seq};
use wkuser::log::{LogStore, SledStore};

use super::*;

/// Everything the script saw, in order: what each step was and the events it answered.
type Transcript = Vec<(String, Vec<(u64, u64, Event)>)>;

/// Appends and reads through a log over the store `open` gives, closes it, opens the store again
/// and reads and appends once more.
async fn script<F, Fut>(open: F) -> Transcript
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LogStore>>,
{
    let mut seen = Transcript::new();
    let log = start_log(open().await, 1).await;
    assert_eq!(log.last_durable(), Seq(0), "a new log is empty");
    let batches = [
        vec![token("ann", 1)],
        vec![token("bob", 1), token("ann", 2)],
        vec![system_uids(&["ann", "cy", "dee"])],
        vec![node_started(1)],
        // a uid named twice by one event is indexed under it once
        vec![system_uids(&["dee", "dee"])],
        // a uid that is a prefix of another must not read the other's events
        vec![token("an", 1), token("cy", 1), token("ann", 3)],
    ];
    for batch in batches {
        let recorded = log.append(batch).await.expect("the append is recorded");
        seen.push(("append".into(), comparable(&recorded)));
    }
    let reads = |log: &EventLog, seen: &mut Transcript| {
        let mut read = |what: String, events: Result<Vec<RecordedEvent>, _>| {
            seen.push((what, comparable(&events.expect("the log reads"))));
        };
        read("after 0".into(), log.read_after(Seq(0), 1000));
        read("after 2, 3 of them".into(), log.read_after(Seq(2), 3));
        read(
            "after the last".into(),
            log.read_after(log.last_durable(), 10),
        );
        for (name, after, limit) in [
            ("ann", 0, 100),
            ("ann", 2, 1),
            ("ann", 3, 100),
            ("an", 0, 100),
            ("cy", 0, 100),
            ("dee", 5, 100),
            ("nobody", 0, 100),
        ] {
            read(
                format!("{name} after {after}, {limit} of them"),
                log.read_uid(name, Seq(after), limit),
            );
        }
    };
    reads(&log, &mut seen);
    let all = log.read_after(Seq(0), 1000).expect("the log reads");
    let seqs: Vec<u64> = all.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>(), "seqs are dense from 1");
    log.close().await;

    let log = start_log(open().await, 2).await;
    seen.push((format!("restarted at {}", log.last_durable().0), Vec::new()));
    reads(&log, &mut seen);
    let recorded = log
        .append(vec![token("bob", 2), token("dee", 1)])
        .await
        .expect("the append after the restart is recorded");
    seen.push(("append after the restart".into(), comparable(&recorded)));
    let tail = log.read_after(Seq(8), 100).expect("the log reads");
    seen.push(("after 8, restarted".into(), comparable(&tail)));
    log.close().await;
    seen
}

#[tokio::test]
async fn postgres_answers_what_sled_answers_for_the_same_appends_and_reads_across_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let sled_dir = dir.path().join("log");
    let on_sled = script(|| {
        let dir = sled_dir.clone();
        async move {
            let store = tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .expect("the opening task ends")
                .expect("sled opens");
            Arc::new(store) as Arc<dyn LogStore>
        }
    })
    .await;

    let db = database().await;
    let on_postgres = script(|| {
        let url = db.url.clone();
        async move { postgres_store(&url).await as Arc<dyn LogStore> }
    })
    .await;

    assert_eq!(on_postgres, on_sled);
    // The transcript has something to compare: the restart kept all 9 events, and the first
    // append after it is seq 10.
    assert!(on_sled.iter().any(|(what, _)| what == "restarted at 9"));
    let after = on_sled
        .iter()
        .find(|(what, _)| what == "append after the restart");
    assert_eq!(
        after.map(|(_, e)| e.iter().map(|r| r.0).collect::<Vec<_>>()),
        Some(vec![10, 11])
    );
}
