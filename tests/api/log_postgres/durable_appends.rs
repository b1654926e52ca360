//! An append of the shared log is answered only once the WAL on disk holds its batch. Its
//! commit does not wait for the flush (so that the append lock goes at once); the same CALL
//! flushes it in a second transaction before it answers.
//!
//! The test runs its own PostgreSQL, whose WAL writer (which flushes commits made without a
//! flush by itself, every `wal_writer_delay`) is slowed to 10 s, so that only the append's own
//! flush can make its batch durable in time. It kills every process of the server with SIGKILL
//! as soon as the appends are answered: the WAL buffers in shared memory die with them, and
//! after the restart every batch answered must be there.

use sqlx::{Connection, PgConnection};
use wkuser::domain::RecordedEvent;

use super::*;
use crate::helpers::ThrowawayPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_append_survives_a_crash_of_postgresql_right_after() {
    crate::watchdog::arm();
    let mut server = ThrowawayPostgres::start().await;
    let url = server.url();
    let mut admin = PgConnection::connect(&url).await.expect("a connection");
    slow_wal_writer(&mut admin).await;
    admin.close().await.ok();
    let store = postgres_store(&url).await;
    let log = start_log(store.clone(), 1).await;
    // The first commit made without a flush wakes the WAL writer if it hibernates (it has
    // nothing to do for a while after the start), and it may flush that commit at once: the
    // appends that count come after it, once it sleeps its 10 s again.
    let mut acked: Vec<RecordedEvent> = log
        .append(vec![token("early", 1)])
        .await
        .expect("the first append is recorded");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for n in 0..5 {
        acked.extend(
            log.append(vec![token(&format!("crash_{n}"), 1)])
                .await
                .expect("the append is recorded"),
        );
    }

    server.kill9().await;
    log.close().await;
    drop(store);
    server.restart().await;

    let held = held_in_database(&url).await;
    let told = as_told(&acked);
    assert_eq!(
        held, told,
        "every answered append is in the log after the crash, once, at its seq"
    );
}
