//! History retention: deleting the builds, logs and artifacts that
//! `keep_builds`/`keep_logs` no longer keep, and measuring the disk the
//! state dir uses, all off the master loop.
//!
//! A pass is given the retention policy in force (the background loop asks
//! the front door for the config, an `Arc` clone, before each pass; `bbctl
//! prune` comes through the front door, which does the same); the
//! reading, deleting and measuring run on a blocking thread
//! with a database connection of their own, in small transactions, so the
//! loop never waits on them for more than a commit. Only finished builds
//! whose request is over (not queued again, not running) are ever
//! touched; running builds and the builds of queued requests are neither
//! deleted nor counted. The newest build of every builder is always kept,
//! so build ids are never handed out twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tracing::{info, warn};

use crate::config::{Config, Retention};
use crate::daemon::store::pg::retention::PgRetention;
use crate::daemon::store::{Database, StoreError};
use crate::paths::now_ms;
use crate::protocol::{BuildId, DiskUsage, PruneReport};

/// How often the background task measures the disk.
pub const MEASURE_INTERVAL: Duration = Duration::from_secs(60);

/// How often the background task prunes (a multiple of the measuring).
pub const PRUNE_EVERY: u32 = 10;

/// Builds deleted per transaction: small, so the master loop's own
/// commits never wait long for the database.
const BATCH: usize = 100;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The database could not be read or written.
    #[error("database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL store failed, or refused a delete (the fence: this
    /// master no longer leads).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master is stopping.
    #[error("the master is shutting down")]
    Gone,
}

/// Where a master's history lives.
#[derive(Debug, Clone)]
pub struct Places {
    /// `master.db`, or the PostgreSQL database (with the fence its
    /// deletes are conditional on).
    pub db: Database,
    /// `<state_dir>/logs`.
    pub logs: PathBuf,
    /// `<state_dir>/artifacts`.
    pub artifacts: PathBuf,
}

/// The retention task's handle: shared by the control connections (for
/// `bbctl prune` and the disk line of `status`) and the background loop.
#[derive(Clone)]
pub struct RetentionHandle {
    inner: Arc<Inner>,
}

struct Inner {
    places: Places,
    usage: Mutex<Option<DiskUsage>>,
    /// One pass at a time (background or `bbctl prune`).
    pass: tokio::sync::Mutex<()>,
}

impl RetentionHandle {
    /// A handle on the history kept at `places`.
    pub fn new(places: Places) -> Self {
        RetentionHandle {
            inner: Arc::new(Inner {
                places,
                usage: Mutex::new(None),
                pass: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The disk usage last measured; `None` before the first measure.
    pub fn usage(&self) -> Option<DiskUsage> {
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prune now by `policy`, the one in force (`dry_run`: only report),
    /// then measure the disk again.
    pub async fn prune(
        &self,
        policy: &Retention,
        dry_run: bool,
    ) -> Result<PruneReport, RetentionError> {
        let _one = self.inner.pass.lock().await;
        let places = self.inner.places.clone();
        let policy = policy.clone();
        let report = tokio::task::spawn_blocking(move || {
            prune_blocking(&places, &policy, now_ms(), dry_run)
        })
        .await
        .map_err(|_| RetentionError::Gone)??;
        let deleted = !(report.builds_deleted.is_empty() && report.logs_deleted.is_empty());
        if !dry_run && deleted {
            info!(
                builds = report.builds_deleted.len(),
                logs = report.logs_deleted.len(),
                bytes = report.bytes_freed,
                "pruned the history"
            );
        }
        self.measure().await;
        Ok(report)
    }

    /// Measure the disk (on a blocking thread) and keep the figures.
    pub async fn measure(&self) {
        let places = self.inner.places.clone();
        if let Ok(usage) = tokio::task::spawn_blocking(move || measure(&places)).await {
            *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
        }
    }

    /// The background loop: measure at once and every
    /// [`MEASURE_INTERVAL`]; prune at once and every [`PRUNE_EVERY`]
    /// measures, by the policy of the config `config_in_force` gives (the
    /// front door's `MasterHandle::config`; `None`: the master is
    /// stopping). Runs until aborted or the master stops.
    pub async fn run<F, Fut>(self, config_in_force: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<Arc<Config>>>,
    {
        let mut tick: u32 = 0;
        loop {
            if tick.is_multiple_of(PRUNE_EVERY) {
                let Some(config) = config_in_force().await else {
                    return;
                };
                match self.prune(&config.master.retention, false).await {
                    Ok(_) => {}
                    Err(RetentionError::Gone) => return,
                    Err(e) => warn!("pruning the history failed: {e}"),
                }
            } else {
                self.measure().await;
            }
            tick = tick.wrapping_add(1);
            tokio::time::sleep(MEASURE_INTERVAL).await;
        }
    }
}

/// One pass: find what the policy no longer keeps and (unless `dry_run`)
/// delete it: whole builds first from the database, then their files.
pub fn prune_blocking(
    places: &Places,
    policy: &Retention,
    now_ms: u64,
    dry_run: bool,
) -> Result<PruneReport, RetentionError> {
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    if !policy.prunes() {
        return Ok(report);
    }
    let mut db = HistoryDb::open(&places.db)?;
    let (builds, logs) = plan(db.finished_builds()?, policy, now_ms, &places.logs);
    for &id in &builds {
        report.bytes_freed += dir_size(&build_dir(&places.logs, id));
        report.bytes_freed += dir_size(&build_dir(&places.artifacts, id));
    }
    for &id in &logs {
        report.bytes_freed += dir_size(&build_dir(&places.logs, id));
    }
    report.builds_deleted = builds;
    report.logs_deleted = logs;
    if dry_run {
        return Ok(report);
    }
    for chunk in report.builds_deleted.chunks(BATCH) {
        db.delete_builds(chunk)?;
        for &id in chunk {
            remove_dir(&build_dir(&places.logs, id));
            remove_dir(&build_dir(&places.artifacts, id));
        }
    }
    for &id in &report.logs_deleted {
        remove_dir(&build_dir(&places.logs, id));
    }
    Ok(report)
}

/// A retention pass's own connection to the history, on either backend.
enum HistoryDb {
    Sqlite(Connection, PathBuf),
    Postgres(PgRetention),
}

impl HistoryDb {
    fn open(db: &Database) -> Result<Self, RetentionError> {
        match db {
            Database::Sqlite(path) => open(path)
                .map(|conn| HistoryDb::Sqlite(conn, path.clone()))
                .map_err(|source| RetentionError::Db {
                    path: path.clone(),
                    source,
                }),
            Database::Postgres(settings, fence) => {
                Ok(HistoryDb::Postgres(PgRetention::open(settings, *fence)?))
            }
        }
    }

    /// Finished builds whose request is over, newest first: `(id,
    /// builder, finished_at)`.
    fn finished_builds(&self) -> Result<Vec<(BuildId, String, u64)>, RetentionError> {
        match self {
            HistoryDb::Sqlite(conn, path) => {
                finished_builds(conn).map_err(|source| RetentionError::Db {
                    path: path.clone(),
                    source,
                })
            }
            HistoryDb::Postgres(pg) => Ok(pg.finished_builds()?),
        }
    }

    /// Delete builds with their steps and artifact records, in one
    /// transaction (on PostgreSQL, behind the fence).
    fn delete_builds(&mut self, ids: &[BuildId]) -> Result<(), RetentionError> {
        match self {
            HistoryDb::Sqlite(conn, path) => {
                delete_builds(conn, ids).map_err(|source| RetentionError::Db {
                    path: path.clone(),
                    source,
                })
            }
            HistoryDb::Postgres(pg) => Ok(pg.delete_builds(ids)?),
        }
    }
}

/// A connection of the retention task's own.
fn open(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(db)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Finished builds whose request is over (not queued again, not
/// running), newest first.
fn finished_builds(conn: &Connection) -> rusqlite::Result<Vec<(BuildId, String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT b.id, b.builder, b.finished_at FROM builds b JOIN requests r ON r.id = b.request_id
         WHERE b.finished_at IS NOT NULL AND r.state NOT IN ('queued', 'running')
         ORDER BY b.id DESC",
    )?;
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as BuildId,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?
    .collect()
}

/// The builds to delete (beyond `keep_builds`, per builder, newest kept)
/// and the builds whose logs to delete (finished longer than `keep_logs`
/// ago, logs still on disk), both in id order; from `finished`, newest
/// first.
fn plan(
    finished: Vec<(BuildId, String, u64)>,
    policy: &Retention,
    now_ms: u64,
    logs: &Path,
) -> (Vec<BuildId>, Vec<BuildId>) {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut builds = Vec::new();
    let mut old_logs = Vec::new();
    for (id, builder, finished_at) in finished {
        let keep = policy.for_builder(&builder);
        let rank = seen.entry(builder).or_insert(0);
        *rank += 1;
        if keep.builds.is_some_and(|k| *rank > k.max(1)) {
            builds.push(id);
        } else if let Some(age) = keep.logs
            && finished_at.saturating_add(age.as_millis() as u64) < now_ms
            && build_dir(logs, id).exists()
        {
            old_logs.push(id);
        }
    }
    builds.reverse();
    old_logs.reverse();
    (builds, old_logs)
}

/// Delete builds with their steps and artifact records, in one transaction.
fn delete_builds(conn: &mut Connection, ids: &[BuildId]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for &id in ids {
        let id = id as i64;
        tx.execute("DELETE FROM artifacts WHERE build_id = ?1", params![id])?;
        tx.execute("DELETE FROM steps WHERE build_id = ?1", params![id])?;
        tx.execute("DELETE FROM builds WHERE id = ?1", params![id])?;
    }
    tx.commit()
}

/// `<base>/<build>`: a build's logs or artifacts.
fn build_dir(base: &Path, id: BuildId) -> PathBuf {
    base.join(id.to_string())
}

/// Remove a directory tree; one already gone is fine, any other failure
/// is logged (the next pass does not retry: the build is gone from the
/// history).
fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot delete {}: {e}", dir.display()),
    }
}

/// Bytes of the files under `path` (symlinks not followed); 0 if absent.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| dir_size(&e.path()))
        .sum()
}

/// The disk used now by logs, artifacts and the database (with its WAL;
/// on PostgreSQL, the database's size as the server reports it, 0 when it
/// cannot be asked).
pub fn measure(places: &Places) -> DiskUsage {
    let db_bytes = match &places.db {
        Database::Sqlite(path) => ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
            })
            .sum(),
        Database::Postgres(settings, fence) => PgRetention::open(settings, *fence)
            .and_then(|pg| pg.database_bytes())
            .unwrap_or_else(|e| {
                warn!("cannot measure the database: {e}");
                0
            }),
    };
    DiskUsage {
        logs_bytes: dir_size(&places.logs),
        artifacts_bytes: dir_size(&places.artifacts),
        db_bytes,
        measured_at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Keep;

    /// A store with builds of builder `a`: 1..=4 finished, 5 running, and
    /// 6 finished but of a request queued again.
    fn setup() -> (tempfile::TempDir, Places) {
        let dir = tempfile::tempdir().unwrap();
        let places = Places {
            db: Database::Sqlite(dir.path().join("master.db")),
            logs: dir.path().join("logs"),
            artifacts: dir.path().join("artifacts"),
        };
        drop(crate::daemon::store::SqliteStore::open(db_path(&places)).unwrap());
        let conn = open(db_path(&places)).unwrap();
        for id in 1..=6_i64 {
            let state = match id {
                5 => "running",
                6 => "queued",
                _ => "finished",
            };
            conn.execute(
                "INSERT INTO requests (id, builder, properties, submitted_at, state)
                 VALUES (?1, 'a', '{}', 0, ?2)",
                params![id, state],
            )
            .unwrap();
            let finished: Option<i64> = (id != 5).then_some(id * 1000);
            conn.execute(
                "INSERT INTO builds (id, request_id, builder, worker, generation, config_hash,
                                     started_at, finished_at, result)
                 VALUES (?1, ?1, 'a', 'w', 1, 'h', 0, ?2, 'success')",
                params![id, finished],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO steps (build_id, idx, name, started_at) VALUES (?1, 0, 's', 0)",
                params![id],
            )
            .unwrap();
            std::fs::create_dir_all(build_dir(&places.logs, id as u64)).unwrap();
            std::fs::write(build_dir(&places.logs, id as u64).join("0.log"), "12345").unwrap();
        }
        (dir, places)
    }

    fn db_path(places: &Places) -> &Path {
        match &places.db {
            Database::Sqlite(path) => path,
            Database::Postgres(..) => unreachable!("these tests run on SQLite"),
        }
    }

    fn policy(builds: Option<u32>, logs: Option<Duration>) -> Retention {
        Retention {
            default: Keep { builds, logs },
            builders: BTreeMap::new(),
        }
    }

    fn ids(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT id FROM builds ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn keep_builds_deletes_the_oldest_finished_and_never_running_or_queued() {
        let (_dir, places) = setup();
        let p = policy(Some(2), None);
        let dry = prune_blocking(&places, &p, 10_000, true).unwrap();
        assert_eq!(dry.builds_deleted, [1, 2]);
        assert_eq!(dry.bytes_freed, 10);
        assert_eq!(ids(&open(db_path(&places)).unwrap()), [1, 2, 3, 4, 5, 6]);
        assert!(build_dir(&places.logs, 1).exists());

        let done = prune_blocking(&places, &p, 10_000, false).unwrap();
        assert_eq!(done.builds_deleted, [1, 2]);
        assert_eq!(ids(&open(db_path(&places)).unwrap()), [3, 4, 5, 6]);
        assert!(!build_dir(&places.logs, 1).exists());
        assert!(build_dir(&places.logs, 5).exists() && build_dir(&places.logs, 6).exists());
        // Nothing more to do.
        let again = prune_blocking(&places, &p, 10_000, false).unwrap();
        assert!(again.builds_deleted.is_empty());
    }

    #[test]
    fn keep_logs_deletes_old_logs_and_keeps_the_builds() {
        let (_dir, places) = setup();
        // Finished at 1000..=4000 (and 6000); at 5500 with 2 s, 1..=3 are old.
        let p = policy(None, Some(Duration::from_secs(2)));
        let done = prune_blocking(&places, &p, 5_500, false).unwrap();
        assert_eq!(done.logs_deleted, [1, 2, 3]);
        assert_eq!(ids(&open(db_path(&places)).unwrap()), [1, 2, 3, 4, 5, 6]);
        assert!(!build_dir(&places.logs, 3).exists());
        assert!(build_dir(&places.logs, 4).exists());
        let again = prune_blocking(&places, &p, 5_500, false).unwrap();
        assert!(
            again.logs_deleted.is_empty(),
            "logs already gone are not reported again"
        );
    }

    #[test]
    fn no_policy_prunes_nothing() {
        let (_dir, places) = setup();
        let done = prune_blocking(&places, &Retention::default(), u64::MAX, false).unwrap();
        assert_eq!(done, PruneReport::default());
        let usage = measure(&places);
        assert_eq!(usage.logs_bytes, 30);
        assert!(usage.db_bytes > 0);
    }

    /// The same pass on PostgreSQL: the plan from its rows, the deletes
    /// in its transactions, the disk figure from the server.
    #[test]
    fn keep_builds_prunes_on_postgresql_too() {
        let pg = crate::testkit::postgres::PgServer::start()
            .expect("a throwaway PostgreSQL (install `postgresql`)");
        pg.create_database("retention").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::PostgresSettings {
            conninfo: pg.conninfo_with_password("retention"),
            password_file: None,
            shared_dir: dir.path().to_path_buf(),
            lease: Duration::from_secs(10),
            ca_file: None,
        };
        drop(crate::daemon::store::pg::PgStore::open(&settings, None).unwrap());
        let places = Places {
            db: Database::Postgres(settings, None),
            logs: dir.path().join("logs"),
            artifacts: dir.path().join("artifacts"),
        };
        for id in 1..=6_u64 {
            let state = match id {
                5 => "running",
                6 => "queued",
                _ => "finished",
            };
            let finished = if id == 5 {
                "NULL".to_string()
            } else {
                (id * 1000).to_string()
            };
            pg.psql(
                "retention",
                &format!(
                    "INSERT INTO requests (id, builder, properties, submitted_at, state)
                     VALUES ({id}, 'a', '{{}}', 0, '{state}');
                     INSERT INTO builds (id, request_id, builder, worker, generation, config_hash,
                                         started_at, finished_at, result)
                     VALUES ({id}, {id}, 'a', 'w', 1, 'h', 0, {finished}, 'success');
                     INSERT INTO steps (build_id, idx, name, started_at) VALUES ({id}, 0, 's', 0);"
                ),
            )
            .unwrap();
            std::fs::create_dir_all(build_dir(&places.logs, id)).unwrap();
            std::fs::write(build_dir(&places.logs, id).join("0.log"), "12345").unwrap();
        }
        let done = prune_blocking(&places, &policy(Some(2), None), 10_000, false).unwrap();
        assert_eq!(done.builds_deleted, [1, 2]);
        assert_eq!(done.bytes_freed, 10);
        assert_eq!(
            pg.psql(
                "retention",
                "SELECT string_agg(id::text, ',' ORDER BY id) FROM builds"
            )
            .unwrap(),
            "3,4,5,6"
        );
        assert!(!build_dir(&places.logs, 1).exists());
        assert!(build_dir(&places.logs, 5).exists());
        assert!(measure(&places).db_bytes > 0);
    }
}
