//! Reading the history off the master loop: [`HistoryReader`] (the
//! questions `builds`, `build`, `request`, `artifacts` and followers ask)
//! and [`SqliteReader`], which answers them on read-only connections of
//! its own.
//!
//! The master loop owns the one writing connection; these readers never
//! touch it. In WAL mode a reader sees every transaction committed before
//! its query began and never blocks the writer, nor the writer it, so a
//! slow history query cannot stall dispatch (docs/architecture.md, "The
//! store"). The SQL is the one of `queries.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::queries;
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, ChangeInfo, RequestId, RequestInfo,
};

/// Read connections a [`SqliteReader`] keeps: two, so that one slow
/// query does not hold up a follower's snapshot.
const CONNECTIONS: usize = 2;

/// How long a read waits for a lock SQLite needs briefly (a checkpoint,
/// a recovery) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a history read failed: the implementation's own error, in its own
/// words (for SQLite, "database PATH: ...").
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReadError(pub(in crate::daemon::store) Box<dyn std::error::Error + Send + Sync>);

/// The history's read-only questions: what the front door answers
/// without the master loop. Blocking calls: callers run them on a
/// blocking thread. [`SqliteReader`] implements it; a PostgreSQL store
/// would fill it with a connection pool of its own.
pub trait HistoryReader: Send + Sync {
    /// Builds, newest first, at most `limit` (capped at
    /// [`super::MAX_LIST`]), of one builder or of all.
    fn builds(&self, builder: Option<&str>, limit: u32) -> Result<Vec<BuildSummary>, ReadError>;

    /// One build with its steps (log sizes left at 0); `None` if there is
    /// no such build.
    fn build(&self, id: BuildId) -> Result<Option<BuildDetail>, ReadError>;

    /// One request; `None` if there is no such request.
    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, ReadError>;

    /// One request and its latest build, read together (one consistent
    /// view, as a follower needs); `None` if there is no such request.
    fn request_and_build(
        &self,
        id: RequestId,
    ) -> Result<Option<(RequestInfo, Option<BuildDetail>)>, ReadError>;

    /// A build's artifacts, by name.
    fn artifacts(&self, build: BuildId) -> Result<Vec<ArtifactInfo>, ReadError>;

    /// The most recently started build.
    fn latest_build(&self) -> Result<Option<BuildId>, ReadError>;

    /// A poller's cursors: the last revision seen, by branch.
    fn poller_cursors(&self, poller: &str) -> Result<BTreeMap<String, String>, ReadError>;

    /// Changes, newest first, at most `limit` (capped at
    /// [`super::MAX_LIST`]), with the requests and builds of each.
    fn changes(&self, limit: u32) -> Result<Vec<ChangeInfo>, ReadError>;
}

/// Read-only connections to `master.db`, each behind a lock: the
/// [`HistoryReader`] of a master on SQLite.
pub struct SqliteReader {
    /// The connections (tests check that they cannot write).
    pub(super) conns: Vec<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteReader {
    /// Open read-only connections to the database at `path`, which the
    /// writer (`SqliteStore::open`) has already created, migrated and put
    /// in WAL mode.
    pub fn open(path: &Path) -> Result<Self, super::StoreError> {
        let wrap = |source| super::StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conns = (0..CONNECTIONS)
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(wrap)?;
        Ok(SqliteReader {
            conns,
            path: path.to_path_buf(),
        })
    }

    /// Run `query` on a free connection, or wait for the first one.
    fn with<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ReadError> {
        let guard = self
            .conns
            .iter()
            .find_map(|c| c.try_lock().ok())
            .unwrap_or_else(|| self.conns[0].lock().unwrap_or_else(|e| e.into_inner()));
        query(&guard).map_err(|source| {
            ReadError(Box::new(super::StoreError::Sqlite {
                path: self.path.clone(),
                source,
            }))
        })
    }
}

impl HistoryReader for SqliteReader {
    fn builds(&self, builder: Option<&str>, limit: u32) -> Result<Vec<BuildSummary>, ReadError> {
        self.with(|c| queries::builds(c, builder, limit))
    }

    fn build(&self, id: BuildId) -> Result<Option<BuildDetail>, ReadError> {
        self.with(|c| queries::build(c, id))
    }

    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, ReadError> {
        self.with(|c| queries::request(c, id))
    }

    fn request_and_build(
        &self,
        id: RequestId,
    ) -> Result<Option<(RequestInfo, Option<BuildDetail>)>, ReadError> {
        self.with(|c| {
            // One read transaction: both answers from the same commit.
            let tx = c.unchecked_transaction()?;
            let Some(info) = queries::request(&tx, id)? else {
                return Ok(None);
            };
            let build = match info.build {
                Some(b) => queries::build(&tx, b)?,
                None => None,
            };
            tx.finish()?;
            Ok(Some((info, build)))
        })
    }

    fn artifacts(&self, build: BuildId) -> Result<Vec<ArtifactInfo>, ReadError> {
        self.with(|c| queries::artifacts(c, build))
    }

    fn latest_build(&self) -> Result<Option<BuildId>, ReadError> {
        self.with(queries::latest_build)
    }

    fn poller_cursors(&self, poller: &str) -> Result<BTreeMap<String, String>, ReadError> {
        self.with(|c| queries::poller_cursors(c, poller))
    }

    fn changes(&self, limit: u32) -> Result<Vec<ChangeInfo>, ReadError> {
        self.with(|c| queries::changes(c, limit))
    }
}
