//! The online-status webhook (protocol.md section 7): WuKongIM's `user.onlinestatus`, sent
//! from the log.
//!
//! Owns the delivery of an entry for every session's start and end to the application server
//! ([`post`]), in log order, at least once, never given up. The log is the queue: the only
//! state kept is the durable [`cursor`] (the last seq delivered and the range of the batch in
//! flight), with the log's own sled database on a node alone, in the shared database with
//! several nodes (where one node delivers at a time, [`cursor_pg`]). The entries waiting are
//! read from the log one batch at a time ([`deliver`]); the counts and connIds they carry come
//! from a fold of the log up to the cursor ([`counts`]), rebuilt at each start from the SQL view
//! and the log ([`start`]). It is a subscriber like the projector: woken by the subscribers'
//! published watch, reading the log itself, on a task of its own. Promises: every session's
//! start and end reaches the receiver, in log order, each batch resent until a 2xx; a crash or
//! restart resends at most the batch in flight, exactly as it was (same range, same body), so a
//! receiver drops it by its seq headers; `/stats` reads [`status::WebhookStatus`]. Must never:
//! drop an entry, keep entries waiting in memory, count a batch delivered without a 2xx, or
//! block the log's writer or the subscribers.

pub mod counts;
pub mod cursor;
pub mod cursor_pg;
mod deliver;
pub mod post;
mod start;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::Subscribers;
use crate::domain::Seq;
use crate::log::{EventLog, LogError};
use crate::view::{ViewError, ViewStore};
pub use cursor::{CursorError, CursorStore, SledCursor};
pub use cursor_pg::PgCursor;
pub use deliver::MAX_ENTRIES;
use deliver::{Delivery, Drain};
pub use status::{WebhookFigures, WebhookStatus};

/// Why a delivery stopped short (it is started again from the stored cursor).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error("the log ends at {at}, before seq {expected} that the webhook's cursor names")]
    LogShort { at: Seq, expected: Seq },
    #[error("the SQL view lacks {0} sessions that the log closed")]
    ViewMissesSessions(usize),
    #[error("the server is stopping")]
    Stopped,
    #[error("cannot build the webhook's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the webhook is told to do.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The receiver's URL, as configured (`event=user.onlinestatus` is added to its query).
    pub url: reqwest::Url,
    /// The key of the `X-WK-Signature` HMAC, when set.
    pub secret: Option<String>,
}

/// The running webhook.
pub struct Webhook {
    task: JoinHandle<()>,
    drain: watch::Sender<Option<Drain>>,
    stopping: CancellationToken,
    status: Arc<WebhookStatus>,
}

impl Webhook {
    /// Starts delivering from the stored cursor (from the log's end, the first time).
    pub fn spawn(
        settings: &WebhookSettings,
        log: EventLog,
        view: Arc<dyn ViewStore>,
        subscribers: Arc<Subscribers>,
        cursors: Arc<dyn CursorStore>,
    ) -> Result<Self, WebhookError> {
        let receiver = post::Receiver::new(&settings.url, settings.secret.as_deref())?;
        let status = Arc::new(WebhookStatus::new(subscribers.entries_published()));
        let (drain, stop) = watch::channel(None);
        let stopping = CancellationToken::new();
        let delivery = Delivery {
            log,
            view,
            subscribers,
            receiver,
            cursors,
            status: status.clone(),
            stop,
            stopping: stopping.clone(),
        };
        Ok(Webhook {
            task: tokio::spawn(delivery.supervise()),
            drain,
            stopping,
            status,
        })
    }

    /// The figures of `/stats` and the metrics.
    pub fn status(&self) -> &Arc<WebhookStatus> {
        &self.status
    }

    /// Delivers what the log holds up to `until` (everything recorded before the stop), for at
    /// most `grace`, then stops; what is left is sent after the next start.
    pub async fn stop(self, until: Seq, grace: Duration) {
        self.stopping.cancel();
        self.drain.send_replace(Some(Drain {
            until,
            deadline: Instant::now() + grace,
        }));
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            abort.abort();
            tracing::warn!("webhook: did not stop within its grace");
        }
    }
}
