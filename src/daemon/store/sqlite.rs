//! [`SqliteStore`]: the embedded default, `<state_dir>/master.db`, opened,
//! checked and migrated; the SQL lives in `schema.rs`, `writes.rs`,
//! `restore.rs` and `queries.rs`.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{Store, StoreError, queries, restore, schema, writes};
use crate::daemon::core::{Record, Restored};
use crate::protocol::{ArtifactInfo, BuildId, BuildSummary, RequestId, RequestInfo};

/// The open SQLite database: the [`Store`] the master runs on.
pub struct SqliteStore {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed), check and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::Sqlite {
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
        StoreError::Sqlite {
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
