//! The build history and the durable queue, in SQLite (`<state_dir>/master.db`).
//!
//! The core's [`Record`]s are written here, all records of one core event in
//! one transaction, before any client hears of them: a request id that
//! `force-build` prints is already on disk. WAL mode with
//! `synchronous=FULL` makes every commit survive a crash of the master and
//! of the machine.
//!
//! This file holds the [`Store`] trait (what the master loop needs from
//! storage) and [`SqliteStore`], which opens the database and implements
//! it; the SQL lives in `schema.rs` (schema and migrations), `writes.rs`,
//! `restore.rs` and `queries.rs`. History reads do not go through the
//! loop's connection: `reader.rs` answers them on read-only connections
//! of their own, off the loop.

mod queries;
mod reader;
mod restore;
mod schema;
mod writes;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::daemon::core::{Record, Restored};
use crate::protocol::{ArtifactInfo, BuildId, BuildSummary, RequestId, RequestInfo};

pub use queries::MAX_LIST;
pub use reader::{HistoryReader, ReadError, SqliteReader};
pub use schema::SCHEMA_VERSION;

/// What the master loop needs from storage, once it is open (opening and
/// migrating are each implementation's constructor): write a batch of
/// records in one transaction and read back the state at start. Questions
/// about the history are not asked here but of a [`HistoryReader`], off
/// the loop.
///
/// [`SqliteStore`] implements it today; this is the seam a PostgreSQL store
/// will fill later. The master loop still names [`SqliteStore`]: nothing is
/// generic over this trait yet.
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
    /// file alone is a full backup.
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

/// A storage failure, naming the database file.
#[derive(Debug, thiserror::Error)]
#[error("database {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// The open SQLite database: the [`Store`] the master runs on.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed), check and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        // Never through a symlink planted at the database's name.
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        // A small WAL, checkpointed often and then reused from its start
        // rather than grown: once it reached its size, commits need no new
        // disk space, so a disk filled by logs still takes the records of
        // builds ending (docs/durability.md).
        conn.pragma_update(None, "wal_autocheckpoint", 100)
            .map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(wrap)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(wrap)?;
        schema::check_integrity(&conn).map_err(wrap)?;
        schema::migrate(&mut conn).map_err(wrap)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }
}

impl Store for SqliteStore {
    type Error = StoreError;

    fn apply_batch(
        &mut self,
        records: &[&Record],
        artifacts: &[(BuildId, &ArtifactInfo)],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let outcomes =
            writes::apply(&mut self.conn, records, artifacts).map_err(|e| self.err(e))?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.map_err(|e| self.err(e)))
            .collect())
    }

    fn restore(&mut self, now_ms: u64) -> Result<Restored, StoreError> {
        restore::restore(&mut self.conn, now_ms).map_err(|e| self.err(e))
    }

    /// SQLite folds the WAL in by itself when its last connection closes,
    /// but the history readers may outlive this one, and a read-only
    /// connection never does: so the writer does it, and empties the WAL.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        // The first column says whether a reader kept it from finishing.
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if busy != 0 {
            return Err(self.err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("a reader kept the checkpoint from finishing".into()),
            )));
        }
        Ok(())
    }

    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, StoreError> {
        queries::request(&self.conn, id).map_err(|e| self.err(e))
    }

    fn build_summary(&self, id: BuildId) -> Result<Option<BuildSummary>, StoreError> {
        queries::build_summary(&self.conn, id).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests;
