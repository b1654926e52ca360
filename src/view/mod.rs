//! The SQL view: users, tokens (hashes only), device sessions, system uids and node lifetimes,
//! projected from the log.
//!
//! Owns the [`ViewStore`] trait (one implementation per engine: [`sqlite`], the embedded
//! default, and [`postgres`], the view several nodes share) and the [`projector`] that feeds
//! it. Promises: a batch of events and the checkpoint
//! that accounts for them are written in one transaction, so the view is exactly-once in effect
//! and always equals a replay of the log up to its checkpoint. Must never: call out (no
//! sockets, no kicks) while projecting, so that replaying is always safe.

mod columns;
pub mod postgres;
pub mod projector;
pub mod rows;
pub mod sqlite;

use async_trait::async_trait;

use crate::domain::{
    CloseReason, DeviceFlag, DeviceId, DeviceLevel, NodeId, OpenSession, RecordedEvent, Seq,
    SessionId, TokenSlot, Uid,
};

pub use postgres::PostgresView;
pub use sqlite::{SqliteView, StateRows};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("SQL view: {0}")]
    Sql(sqlx::Error),
    /// The view's database cannot be reached right now (refused, cut, restarting, or no
    /// connection free in time): nothing was changed, and the same call may succeed later.
    #[error("SQL view: storage unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("SQL view migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("SQL view holds a row this build cannot read: {0}")]
    Malformed(String),
    #[error("no SQL view at {0}; start the server once to build it")]
    Missing(std::path::PathBuf),
    #[error(
        "the SQL view at {path} has schema version {found}, older than this wkuser's \
         {expected}: start the server once to bring it up to date (a read-only look never \
         migrates a view)"
    )]
    SchemaOlder {
        path: std::path::PathBuf,
        found: i64,
        expected: i64,
    },
    #[error(
        "the SQL view at {path} has schema version {found}, newer than this wkuser's \
         {expected}: use the wkuser that wrote it"
    )]
    SchemaNewer {
        path: std::path::PathBuf,
        found: i64,
        expected: i64,
    },
}

/// SQLite's primary result codes for a damaged file: the low byte of every extended code
/// (SQLITE_CORRUPT_INDEX is 779, say) is its primary code.
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;

impl ViewError {
    /// Whether the view itself is damaged, so that setting it aside and rebuilding it from the
    /// log is the cure: SQLite says the file is not a database or is corrupt, or it holds a row
    /// this build cannot read. Any other error (a lock held past the busy timeout, a permission
    /// refused, a full disk, a schema from a newer build) says nothing against the view, and a
    /// rebuild would throw away a good one. No error PostgreSQL reports counts: a shared view
    /// is never set aside by one node; only a row this build cannot read (`Malformed`, or a
    /// value of another type than the schema's) says the view itself is wrong, on either
    /// engine.
    pub fn is_damage(&self) -> bool {
        match self {
            ViewError::Malformed(_) => true,
            ViewError::Sql(e) => sql_is_damage(e),
            ViewError::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => sql_is_damage(e),
            ViewError::Migrate(_)
            | ViewError::Unavailable(_)
            | ViewError::Missing(_)
            | ViewError::SchemaOlder { .. }
            | ViewError::SchemaNewer { .. } => false,
        }
    }
}

/// Errors are sorted as they are made, so that every `?` in every engine gives the same kind
/// for the same cause.
impl From<sqlx::Error> for ViewError {
    fn from(e: sqlx::Error) -> Self {
        if sql_is_unavailable(&e) {
            ViewError::Unavailable(e)
        } else {
            ViewError::Sql(e)
        }
    }
}

/// PostgreSQL's SQLSTATEs for a server that is going away or not there yet: class 08
/// (connection exception), and of class 57 the shutdowns and a server still starting.
fn pg_state_is_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Whether `e` says the database cannot be reached, rather than that it refused the request:
/// the socket failed or was cut, no connection was free in time (sqlx keeps trying to connect
/// until the acquire limit), or PostgreSQL says it is shutting down or starting.
pub fn sql_is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|e| pg_state_is_unavailable(e.code())),
        _ => false,
    }
}

fn sql_is_damage(e: &sqlx::Error) -> bool {
    use sqlx::error::DatabaseError as _;
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::sqlite::SqliteError>()
            .and_then(|e| e.code()?.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, SQLITE_CORRUPT | SQLITE_NOTADB)),
        // A stored value of another type than the schema's: a row this build cannot read, as
        // `Malformed` says of the rows it checks itself.
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// What the in-memory projection is rebuilt from at start-up.
#[derive(Debug, Default)]
pub struct ViewState {
    pub checkpoint: Seq,
    pub tokens: Vec<(Uid, DeviceFlag, TokenSlot)>,
    pub open_sessions: Vec<(Uid, OpenSession)>,
    pub system_uids: Vec<Uid>,
    /// When each (uid, flag) last had a session end (ms since the epoch).
    pub last_seen: Vec<(Uid, DeviceFlag, i64)>,
}

/// A session as the webhook counts it ([`crate::webhook`]): whose, on which flag, and the seq of
/// its `Connected` (the entries' connId).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSeq {
    pub session_id: SessionId,
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub connected_seq: Seq,
}

/// One device session as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: SessionId,
    pub uid: Uid,
    pub device_flag: DeviceFlag,
    pub device_level: DeviceLevel,
    pub device_id: DeviceId,
    pub node_id: NodeId,
    pub peer: String,
    pub connected_at: i64,
    pub disconnected_at: Option<i64>,
    pub reason: Option<CloseReason>,
}

/// A page of one user's session history with what it is read against, all from one snapshot
/// of the view (see [`SqliteView::history_snapshot`], [`PostgresView::history_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySnapshot {
    /// The last seq the snapshot accounts for.
    pub checkpoint: Seq,
    /// Newest first.
    pub sessions: Vec<SessionRecord>,
    /// The flags the user has a session open on, ascending, however old the session.
    pub open_flags: Vec<DeviceFlag>,
    /// When each flag of the user last had a session end (ms since the epoch), by flag.
    pub last_seen: Vec<(DeviceFlag, i64)>,
}

/// Every row of the view in a canonical order and text form, the same on every engine: two
/// views, of either engine, are equal exactly when their dumps are. A row is its columns joined
/// by `,`, each as SQLite's `quote()` writes it: an integer in decimal, text in single quotes
/// with each quote doubled, `NULL`; rows are ordered by their key, text compared bytewise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewDump {
    pub tables: Vec<(String, Vec<String>)>,
}

impl ViewDump {
    /// Human-readable differences, at most `max` of them.
    pub fn differences(&self, other: &ViewDump, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for ((name, a), (_, b)) in self.tables.iter().zip(&other.tables) {
            let sa: std::collections::BTreeSet<_> = a.iter().collect();
            let sb: std::collections::BTreeSet<_> = b.iter().collect();
            for row in sa.difference(&sb) {
                out.push(format!("{name}: only in the first: {row}"));
            }
            for row in sb.difference(&sa) {
                out.push(format!("{name}: only in the second: {row}"));
            }
        }
        out.truncate(max);
        out
    }
}

#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    /// The last seq the view accounts for.
    async fn checkpoint(&self) -> Result<Seq, ViewError>;
    /// Applies a batch of consecutive events and moves the checkpoint, in one transaction.
    async fn apply(&self, batch: &[RecordedEvent]) -> Result<(), ViewError>;
    /// Everything the in-memory projection needs, as of the checkpoint.
    async fn load_state(&self) -> Result<ViewState, ViewError>;
    /// A page of one user's sessions, newest first, strictly older than `before` when given.
    async fn sessions(
        &self,
        uid: &Uid,
        before: Option<SessionId>,
        limit: u32,
    ) -> Result<Vec<SessionRecord>, ViewError>;
    /// Every open session with the seq of its `Connected`, and the checkpoint they are read at,
    /// in one snapshot: where the webhook's counts start from.
    async fn open_session_seqs(&self) -> Result<(Seq, Vec<SessionSeq>), ViewError>;
    /// The sessions of `ids` the view holds, open or closed, each with the seq of its
    /// `Connected` (a lookup by primary key).
    async fn session_seqs(&self, ids: &[SessionId]) -> Result<Vec<SessionSeq>, ViewError>;
    /// Every row, for comparing two views.
    async fn dump(&self) -> Result<ViewDump, ViewError>;
    /// Closes the connections (the file stays).
    async fn close(&self);
}
