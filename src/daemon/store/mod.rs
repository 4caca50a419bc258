//! The build history and the durable queue, in SQLite (`<state_dir>/master.db`).
//!
//! The core's [`Record`]s are written here, all records of one core event in
//! one transaction, before any client hears of them: a request id that
//! `force-build` prints is already on disk. WAL mode with
//! `synchronous=FULL` makes every commit survive a crash of the master and
//! of the machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::BuilderDef;
use crate::daemon::core::{LiveRequest, Record, Restored, RestoredBuild};
use crate::protocol::{
    BuildDetail, BuildId, BuildResult, BuildSummary, RequestId, RequestInfo, StepDetail,
};

/// Most builds one `builds` answer lists, whatever the client asks: the
/// answer is read in the master loop and must stay small.
pub const MAX_LIST: u32 = 10_000;

/// The schema version this program writes; see [`migrate`].
pub const SCHEMA_VERSION: i64 = 4;

/// A storage failure, naming the database file.
#[derive(Debug, thiserror::Error)]
#[error("database {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// `PRAGMA quick_check` at start: a damaged page is found before the
/// master serves, not by the first write that meets it (measured in
/// docs/durability.md: well under a second for 100,000 builds).
fn check_integrity(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let first = problems.first().map_or("no answer", String::as_str);
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!(
            "corrupt: the integrity check found {} problem(s), first: {}; restore master.db from a backup",
            problems.len(),
            first.replace('\n', " ")
        )),
    ))
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) and migrate the database at `path`.
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
        check_integrity(&conn).map_err(wrap)?;
        migrate(&mut conn).map_err(wrap)?;
        Ok(Store {
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

    /// Write the records of one core event, all or nothing.
    pub fn apply(&mut self, records: &[&Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(|e| StoreError {
            path: self.path.clone(),
            source: e,
        })?;
        for record in records {
            write_record(&tx, record).map_err(|e| StoreError {
                path: self.path.clone(),
                source: e,
            })?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Read back what a restart needs: queued requests in their original
    /// order, and the builds that were running, with the definition they
    /// started with, to wait for their workers. A running build whose
    /// definition was not kept (written by schema version 1) cannot be
    /// resumed: it ends as `exception` and its request is queued again.
    pub fn restore(&mut self, now_ms: u64) -> Result<Restored, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        retry_unresumable(
            &tx,
            "definition IS NULL",
            "the master stopped while it ran; its request is queued again",
            now_ms,
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;

        let mut stmt = self
            .conn
            .prepare(
                "SELECT b.id, b.request_id, b.builder, b.worker, b.generation, b.definition,
                        (SELECT MAX(idx) FROM steps s WHERE s.build_id = b.id),
                        r.reason, r.properties, r.retries, b.started_at, r.priority,
                        r.submitted_at
                 FROM builds b JOIN requests r ON r.id = b.request_id
                 WHERE b.finished_at IS NULL ORDER BY b.id",
            )
            .map_err(wrap)?;
        let running = stmt
            .query_map([], |row| {
                let definition: String = row.get(5)?;
                let props: String = row.get(8)?;
                Ok((
                    RestoredBuild {
                        id: row.get::<_, i64>(0)? as u64,
                        request: LiveRequest {
                            id: row.get::<_, i64>(1)? as u64,
                            builder: row.get(2)?,
                            reason: row.get(7)?,
                            properties: serde_json::from_str(&props).unwrap_or_default(),
                            build: Some(row.get::<_, i64>(0)? as u64),
                            retries: row.get(9)?,
                            priority: row.get(11)?,
                            submitted_at_ms: row.get::<_, i64>(12)? as u64,
                        },
                        worker: row.get(3)?,
                        def: Arc::new(BuilderDef {
                            name: String::new(),
                            previous_names: vec![],
                            workers: vec![],
                            env: BTreeMap::new(),
                            pass_env: Vec::new(),
                            steps: vec![],
                            collapse: false,
                            retry: true,
                        }),
                        generation: row.get::<_, i64>(4)? as u64,
                        step: row.get::<_, Option<u32>>(6)?.unwrap_or(0),
                        started_at_ms: row.get::<_, i64>(10)? as u64,
                    },
                    definition,
                ))
            })
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        drop(stmt);
        let mut restored_running = Vec::with_capacity(running.len());
        for (mut build, definition) in running {
            match serde_json::from_str::<BuilderDef>(&definition) {
                Ok(def) if (build.step as usize) < def.steps.len() => {
                    build.def = Arc::new(def);
                    restored_running.push(build);
                }
                _ => {
                    // Unreadable: retried like a build without a definition.
                    let tx = self.conn.transaction().map_err(wrap)?;
                    retry_unresumable(
                        &tx,
                        &format!("id = {}", build.id),
                        "its definition could not be read back after a restart; its request is queued again",
                        now_ms,
                    )
                    .map_err(wrap)?;
                    tx.commit().map_err(wrap)?;
                }
            }
        }

        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, builder, reason, properties, retries, priority, submitted_at
                 FROM requests WHERE state = 'queued' ORDER BY priority DESC, id",
            )
            .map_err(wrap)?;
        let queued = stmt
            .query_map([], |row| {
                let props: String = row.get(3)?;
                Ok(LiveRequest {
                    id: row.get::<_, i64>(0)? as u64,
                    builder: row.get(1)?,
                    reason: row.get(2)?,
                    properties: serde_json::from_str(&props).unwrap_or_default(),
                    build: None,
                    retries: row.get(4)?,
                    priority: row.get(5)?,
                    submitted_at_ms: row.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        drop(stmt);
        let max = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0) as u64)
                .map_err(wrap)
        };
        let config_hash = self
            .conn
            .query_row(
                "SELECT config_hash FROM generations ORDER BY generation DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(wrap)?
            .unwrap_or_default();
        Ok(Restored {
            config_hash,
            running: restored_running,
            generation: max("SELECT MAX(generation) FROM generations")?,
            next_request: max("SELECT MAX(id) FROM requests")? + 1,
            next_build: max("SELECT MAX(id) FROM builds")? + 1,
            queued,
        })
    }

    /// Builds, newest first, at most `limit` (capped at [`MAX_LIST`]).
    /// Two statements, so that a builder's history is read through its
    /// index rather than by scanning every build.
    pub fn builds(
        &self,
        builder: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BuildSummary>, StoreError> {
        let limit = limit.min(MAX_LIST) as i64;
        let rows = match builder {
            Some(builder) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {SUMMARY_COLUMNS} FROM builds
                         WHERE builder = ?1 ORDER BY id DESC LIMIT ?2"
                    ))
                    .map_err(|e| self.err(e))?;
                stmt.query_map(params![builder, limit], summary_from_row)
                    .and_then(|rows| rows.collect())
            }
            None => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {SUMMARY_COLUMNS} FROM builds ORDER BY id DESC LIMIT ?1"
                    ))
                    .map_err(|e| self.err(e))?;
                stmt.query_map(params![limit], summary_from_row)
                    .and_then(|rows| rows.collect())
            }
        };
        rows.map_err(|e| self.err(e))
    }

    /// One build with its steps; `None` if there is no such build.
    pub fn build(&self, id: BuildId) -> Result<Option<BuildDetail>, StoreError> {
        let summary = self
            .conn
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM builds WHERE id = ?1"),
                params![id as i64],
                summary_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(summary) = summary else {
            return Ok(None);
        };
        let (request_reason, props): (Option<String>, String) = self
            .conn
            .query_row(
                "SELECT reason, properties FROM requests WHERE id = ?1",
                params![summary.request_id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT idx, name, started_at, finished_at, result, reason
                 FROM steps WHERE build_id = ?1 ORDER BY idx",
            )
            .map_err(|e| self.err(e))?;
        let steps = stmt
            .query_map(params![id as i64], |r| {
                Ok(StepDetail {
                    index: r.get(0)?,
                    name: r.get(1)?,
                    started_at_ms: r.get::<_, i64>(2)? as u64,
                    finished_at_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    result: result_column(r.get(4)?),
                    reason: r.get(5)?,
                    log_bytes: 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok(Some(BuildDetail {
            summary,
            request_reason,
            properties: serde_json::from_str::<BTreeMap<String, String>>(&props)
                .unwrap_or_default(),
            steps,
        }))
    }

    /// One request; `None` if there is no such request.
    pub fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, StoreError> {
        self.conn
            .query_row(
                "SELECT r.id, r.builder, r.state, r.result, r.finish_reason,
                        COALESCE((SELECT MAX(b.id) FROM builds b WHERE b.request_id = r.id),
                                 r.collapsed_into_build)
                 FROM requests r WHERE r.id = ?1",
                params![id as i64],
                |r| {
                    Ok(RequestInfo {
                        id: r.get::<_, i64>(0)? as u64,
                        builder: r.get(1)?,
                        state: r.get(2)?,
                        result: result_column(r.get(3)?),
                        reason: r.get(4)?,
                        build: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Record an artifact stored under the build's artifacts dir.
    pub fn add_artifact(
        &mut self,
        build: BuildId,
        a: &crate::protocol::ArtifactInfo,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO artifacts (build_id, name, size, sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    build as i64,
                    a.name,
                    a.size as i64,
                    a.sha256,
                    a.created_at_ms as i64
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A build's artifacts, by name.
    pub fn artifacts(
        &self,
        build: BuildId,
    ) -> Result<Vec<crate::protocol::ArtifactInfo>, StoreError> {
        let read = || -> rusqlite::Result<Vec<crate::protocol::ArtifactInfo>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT name, size, sha256, created_at FROM artifacts
                 WHERE build_id = ?1 ORDER BY name",
            )?;
            stmt.query_map([build as i64], |r| {
                Ok(crate::protocol::ArtifactInfo {
                    name: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                    created_at_ms: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect()
        };
        read().map_err(|e| self.err(e))
    }

    /// The most recently started build.
    pub fn latest_build(&self) -> Result<Option<BuildId>, StoreError> {
        self.conn
            .query_row("SELECT MAX(id) FROM builds", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| self.err(e))
    }
}

/// End running builds that cannot be resumed (chosen by `which`, a
/// condition on `builds`) as `retry`: their steps end, their requests are
/// queued again with one more retry counted. Honest about what happened:
/// the request runs again, so its cut-short build is not its final result.
fn retry_unresumable(
    tx: &rusqlite::Transaction<'_>,
    which: &str,
    reason: &str,
    now_ms: u64,
) -> rusqlite::Result<()> {
    let running = format!("SELECT id FROM builds WHERE finished_at IS NULL AND {which}");
    tx.execute(
        &format!(
            "UPDATE steps SET finished_at = ?1, result = 'retry', reason = ?2
             WHERE finished_at IS NULL AND build_id IN ({running})"
        ),
        params![now_ms as i64, reason],
    )?;
    tx.execute(
        &format!(
            "UPDATE requests SET state = 'queued', retries = retries + 1
             WHERE id IN (SELECT request_id FROM builds WHERE id IN ({running}))"
        ),
        [],
    )?;
    tx.execute(
        &format!(
            "UPDATE builds SET finished_at = ?1, result = 'retry', reason = ?2
             WHERE id IN ({running})"
        ),
        params![now_ms as i64, reason],
    )?;
    Ok(())
}

const SUMMARY_COLUMNS: &str = "id, request_id, builder, worker, generation, config_hash, \
     result, reason, started_at, finished_at";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildSummary> {
    Ok(BuildSummary {
        id: r.get::<_, i64>(0)? as u64,
        request_id: r.get::<_, i64>(1)? as u64,
        builder: r.get(2)?,
        worker: r.get(3)?,
        generation: r.get::<_, i64>(4)? as u64,
        config_hash: r.get(5)?,
        result: result_column(r.get(6)?),
        reason: r.get(7)?,
        started_at_ms: r.get::<_, i64>(8)? as u64,
        finished_at_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
    })
}

fn result_column(word: Option<String>) -> Option<BuildResult> {
    word.as_deref().and_then(BuildResult::parse)
}

fn write_record(tx: &rusqlite::Transaction<'_>, record: &Record) -> rusqlite::Result<()> {
    match record {
        Record::RequestQueued {
            request,
            builder,
            reason,
            properties,
            priority,
            at_ms,
        } => {
            let props = serde_json::to_string(properties).unwrap_or_else(|_| "{}".into());
            tx.execute(
                "INSERT INTO requests (id, builder, reason, properties, submitted_at, state, priority)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
                params![*request as i64, builder, reason, props, *at_ms as i64, priority],
            )?;
        }
        Record::RequestCancelled {
            request,
            reason,
            at_ms,
        } => {
            tx.execute(
                "UPDATE requests SET state = 'cancelled', result = 'cancelled',
                     finish_reason = ?2, finished_at = ?3 WHERE id = ?1",
                params![*request as i64, reason, *at_ms as i64],
            )?;
        }
        Record::BuildStarted {
            build,
            request,
            builder,
            worker,
            generation,
            config_hash,
            definition,
            at_ms,
        } => {
            let definition = serde_json::to_string(&**definition)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.execute(
                "INSERT INTO builds (id, request_id, builder, worker, generation, config_hash,
                                     started_at, definition)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    *build as i64,
                    *request as i64,
                    builder,
                    worker,
                    *generation as i64,
                    config_hash,
                    *at_ms as i64,
                    definition
                ],
            )?;
            tx.execute(
                "UPDATE requests SET state = 'running' WHERE id = ?1",
                params![*request as i64],
            )?;
        }
        Record::StepStarted {
            build,
            step,
            name,
            at_ms,
        } => {
            tx.execute(
                "INSERT INTO steps (build_id, idx, name, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![*build as i64, step, name, *at_ms as i64],
            )?;
        }
        Record::StepFinished {
            build,
            step,
            result,
            reason,
            at_ms,
        } => {
            tx.execute(
                "UPDATE steps SET finished_at = ?3, result = ?4, reason = ?5
                 WHERE build_id = ?1 AND idx = ?2",
                params![*build as i64, step, *at_ms as i64, result.as_str(), reason],
            )?;
        }
        Record::BuildFinished {
            build,
            request,
            result,
            reason,
            at_ms,
        } => {
            tx.execute(
                "UPDATE builds SET finished_at = ?2, result = ?3, reason = ?4 WHERE id = ?1",
                params![*build as i64, *at_ms as i64, result.as_str(), reason],
            )?;
            tx.execute(
                "UPDATE requests SET state = 'finished', result = ?2, finish_reason = ?3,
                     finished_at = ?4 WHERE id = ?1",
                params![*request as i64, result.as_str(), reason, *at_ms as i64],
            )?;
        }
        Record::BuildRetried {
            build,
            request,
            reason,
            at_ms,
        } => {
            tx.execute(
                "UPDATE builds SET finished_at = ?2, result = 'retry', reason = ?3 WHERE id = ?1",
                params![*build as i64, *at_ms as i64, reason],
            )?;
            tx.execute(
                "UPDATE requests SET state = 'queued', retries = retries + 1 WHERE id = ?1",
                params![*request as i64],
            )?;
        }
        Record::RequestCollapsed {
            request,
            into,
            build,
            at_ms,
        } => {
            tx.execute(
                "UPDATE requests SET state = 'skipped', result = 'skipped', finish_reason = ?2,
                     finished_at = ?3, collapsed_into_build = ?4 WHERE id = ?1",
                params![
                    *request as i64,
                    format!("collapsed into request {into} (build {build})"),
                    *at_ms as i64,
                    *build as i64
                ],
            )?;
        }
        Record::BuilderRenamed { from, to } => {
            tx.execute(
                "UPDATE builds SET builder = ?2 WHERE builder = ?1",
                params![from, to],
            )?;
            tx.execute(
                "UPDATE requests SET builder = ?2 WHERE builder = ?1",
                params![from, to],
            )?;
        }
        Record::GenerationApplied {
            generation,
            config_hash,
            origin,
            at_ms,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO generations (generation, config_hash, origin, applied_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![*generation as i64, config_hash, origin, *at_ms as i64],
            )?;
        }
    }
    Ok(())
}

/// Bring the schema to [`SCHEMA_VERSION`], one version at a time, each in
/// its own transaction. A database from a newer program is refused.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this bbmaster understands ({SCHEMA_VERSION}); use a newer bbmaster"
            )),
        ));
    }
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE requests (
                 id INTEGER PRIMARY KEY,
                 builder TEXT NOT NULL,
                 reason TEXT,
                 properties TEXT NOT NULL,
                 submitted_at INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 result TEXT,
                 finish_reason TEXT,
                 finished_at INTEGER
             );
             CREATE INDEX requests_state ON requests(state, id);
             CREATE TABLE builds (
                 id INTEGER PRIMARY KEY,
                 request_id INTEGER NOT NULL REFERENCES requests(id),
                 builder TEXT NOT NULL,
                 worker TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 config_hash TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 result TEXT,
                 reason TEXT
             );
             CREATE INDEX builds_builder ON builds(builder, id);
             CREATE INDEX builds_request ON builds(request_id);
             CREATE TABLE steps (
                 build_id INTEGER NOT NULL REFERENCES builds(id),
                 idx INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 result TEXT,
                 reason TEXT,
                 PRIMARY KEY (build_id, idx)
             );
             CREATE TABLE generations (
                 generation INTEGER PRIMARY KEY,
                 config_hash TEXT NOT NULL,
                 origin TEXT NOT NULL,
                 applied_at INTEGER NOT NULL
             );
             PRAGMA user_version = 1;",
        )?;
        tx.commit()?;
    }
    if version < 2 {
        // Version 2: builds keep the definition they run with (to finish
        // with it after a restart), and requests count their retries.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE builds ADD COLUMN definition TEXT;
             ALTER TABLE requests ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
             PRAGMA user_version = 2;",
        )?;
        tx.commit()?;
    }
    if version < 3 {
        // Version 3: request priorities (higher runs first), and the build
        // a collapsed request was merged into.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE requests ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE requests ADD COLUMN collapsed_into_build INTEGER;
             PRAGMA user_version = 3;",
        )?;
        tx.commit()?;
    }
    if version < 4 {
        // Version 4: files uploaded by `upload` steps, per build.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE artifacts (
                 build_id INTEGER NOT NULL REFERENCES builds(id),
                 name TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 sha256 TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (build_id, name)
             );
             PRAGMA user_version = 4;",
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
