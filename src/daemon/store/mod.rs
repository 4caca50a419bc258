//! The build history and the durable queue: in SQLite
//! (`<state_dir>/master.db`, the default) or in PostgreSQL (`[master]
//! store = { postgres = ... }`, docs/postgres.md).
//!
//! The core's [`Record`]s are written here, all records of one core event in
//! one transaction, before any client hears of them: a request id that
//! `force-build` prints is already on disk. On SQLite, WAL mode with
//! `synchronous=FULL` makes every commit survive a crash of the master and
//! of the machine; on PostgreSQL the server's defaults (`fsync`,
//! `synchronous_commit`) do.
//!
//! This file holds the [`Store`] trait (what the master loop needs from
//! storage), [`StoreError`], and [`open`], the one place that picks the
//! backend. [`SqliteStore`] (`sqlite.rs`) keeps its SQL in `schema.rs`
//! (schema and migrations), `writes.rs`, `restore.rs` and `queries.rs`;
//! [`pg::PgStore`] has files of the same names under `pg/`, so that each
//! behaviour is found by name in both; `rows.rs` is what they share (JSON
//! encodings, rows to structs). History reads do not go through the
//! loop's connection: `reader.rs` ([`SqliteReader`]) and `pg/reader.rs`
//! answer them on connections of their own, off the loop.

pub mod pg;
mod queries;
mod reader;
mod restore;
mod rows;
mod schema;
mod sqlite;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{MasterSettings, PostgresSettings, StoreSettings};
use crate::daemon::core::{Record, Restored};
use crate::protocol::{ArtifactInfo, BuildId, BuildSummary, RequestId, RequestInfo};

pub use queries::MAX_LIST;
pub use reader::{HistoryReader, ReadError, SqliteReader};
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

/// What the master loop needs from storage, once it is open (opening and
/// migrating are each implementation's constructor): write a batch of
/// records in one transaction and read back the state at start. Questions
/// about the history are not asked here but of a [`HistoryReader`], off
/// the loop.
///
/// [`SqliteStore`] and [`pg::PgStore`] implement it; the master loop
/// holds a [`BoxedStore`] and never knows which.
pub trait Store {
    /// A storage failure, naming where the data lives.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Write a batch in one transaction before anyone hears of it: the
    /// core's records, all or nothing (`Err`: nothing of the batch is
    /// written), and the artifacts uploads stored, each kept or refused
    /// on its own (the inner results, in order).
    #[allow(clippy::type_complexity)]
    fn apply_batch(
        &mut self,
        records: &[&Record],
        artifacts: &[(BuildId, &ArtifactInfo)],
    ) -> Result<Vec<Result<(), Self::Error>>, Self::Error>;

    /// Write records alone, all or nothing.
    fn apply(&mut self, records: &[&Record]) -> Result<(), Self::Error> {
        self.apply_batch(records, &[]).map(|_| ())
    }

    /// Read back what a restart needs: queued requests in their original
    /// order, and the builds that were running, with the definition they
    /// started with. A running build that cannot be resumed ends as
    /// `retry` and its request is queued again.
    fn restore(&mut self, now_ms: u64) -> Result<Restored, Self::Error>;

    /// At a clean stop: leave the database whole in its own file (for
    /// SQLite, fold the write-ahead log into it), so that a copy of the
    /// file alone is a full backup. PostgreSQL has nothing to do.
    fn checkpoint(&mut self) -> Result<(), Self::Error>;

    /// One request; `None` if there is no such request. A lookup of one
    /// row by its key, for the loop's own answers (`cancel` of a request
    /// no longer queued says what it became); history queries go to a
    /// [`HistoryReader`].
    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, Self::Error>;

    /// One build without its steps; `None` if there is no such build. A
    /// lookup of one row by its key, for the loop's own answers (`stop`
    /// names the build's request, or says how it finished).
    fn build_summary(&self, id: BuildId) -> Result<Option<BuildSummary>, Self::Error>;
}

/// The store the master loop holds, whichever the backend.
pub type BoxedStore = Box<dyn Store<Error = StoreError> + Send>;

/// A storage failure, naming where the data lives.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed on the database file.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL (or the way to it) failed.
    #[error("{what}: {}", pg::message(source))]
    Postgres {
        /// The database and what was being done (never the password).
        what: String,
        /// What the driver said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database cannot be used as it is (a schema from a newer
    /// program, an unreadable password file, a bad connection string).
    #[error("{what}: {reason}")]
    Refused {
        /// The database, or the file.
        what: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Another master took the leadership (the epoch in `bb_leader` is
    /// no longer this master's): nothing of the write was committed, and
    /// this master must stop writing (docs/standby.md).
    #[error(
        "this master lost the leadership: it writes as epoch {mine}, but the database is at \
         epoch {current} (another master took over); nothing of this write was committed"
    )]
    Fenced {
        /// The epoch this master was given when it became the leader.
        mine: u64,
        /// The epoch in the database.
        current: u64,
    },
}

impl StoreError {
    /// Whether this is [`StoreError::Fenced`]: the master lost the
    /// leadership, rather than the database failing.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// Where a master's history lives, for the parts that open connections
/// of their own (retention) and for messages (the start check).
#[derive(Debug, Clone)]
pub enum Database {
    /// `master.db` in the state dir.
    Sqlite(PathBuf),
    /// A PostgreSQL database, and the epoch this master writes as (the
    /// fence; `None` for a master that does not campaign).
    Postgres(PostgresSettings, Option<u64>),
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(settings, _) => f.write_str(&pg::describe_settings(settings)),
        }
    }
}

/// The open store: the loop's writer and the front door's reader.
pub struct Opened {
    /// The master loop's store.
    pub store: BoxedStore,
    /// History reads, off the loop.
    pub reader: Arc<dyn HistoryReader>,
    /// Where it lives.
    pub database: Database,
}

/// Open the store `[master] store` names: `<state_dir>/master.db`, or the
/// PostgreSQL database, writing as `fence` (the epoch of this master's
/// leadership; see [`pg::PgStore::open`]). The one place that picks the
/// backend.
pub fn open(
    master: &MasterSettings,
    state_dir: &Path,
    fence: Option<u64>,
) -> Result<Opened, StoreError> {
    match &master.store {
        StoreSettings::Sqlite => {
            let db = state_dir.join("master.db");
            let store = SqliteStore::open(&db)?;
            // Read-only connections of their own, once the writer has
            // created and migrated the file.
            let reader = Arc::new(SqliteReader::open(&db)?);
            Ok(Opened {
                store: Box::new(store),
                reader,
                database: Database::Sqlite(db),
            })
        }
        StoreSettings::Postgres(settings) => {
            let store = pg::PgStore::open(settings, fence)?;
            let reader = Arc::new(pg::PgReader::open(settings)?);
            Ok(Opened {
                store: Box::new(store),
                reader,
                database: Database::Postgres(settings.clone(), fence),
            })
        }
    }
}

#[cfg(test)]
mod tests;
