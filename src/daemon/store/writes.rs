//! Writes: a batch of the core's [`Record`]s and of the artifacts that
//! uploads stored, all in one transaction (the loop's group commit).

use rusqlite::{Connection, params};

use super::rows;
use crate::daemon::core::Record;
use crate::protocol::{ArtifactInfo, BuildId};

/// Write a batch in one transaction: the records all or nothing (an
/// error fails the whole batch), then each artifact under a savepoint of
/// its own, so that one the database refuses (a name stored twice, a
/// build it does not know) is left out alone and its outcome says why.
pub(super) fn apply(
    conn: &mut Connection,
    records: &[&Record],
    artifacts: &[(BuildId, &ArtifactInfo)],
) -> rusqlite::Result<Vec<rusqlite::Result<()>>> {
    if records.is_empty() && artifacts.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = conn.transaction()?;
    for record in records {
        write_record(&tx, record)?;
    }
    let mut outcomes = Vec::with_capacity(artifacts.len());
    for (build, artifact) in artifacts {
        // Dropped without commit, a savepoint rolls back to its start.
        let savepoint = tx.savepoint()?;
        let outcome = add_artifact(&savepoint, *build, artifact);
        if outcome.is_ok() {
            savepoint.commit()?;
        }
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Record an artifact stored under the build's artifacts dir.
fn add_artifact(conn: &Connection, build: BuildId, a: &ArtifactInfo) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO artifacts (build_id, name, size, sha256, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            build as i64,
            a.name,
            a.size as i64,
            a.sha256,
            a.created_at_ms as i64
        ],
    )
    .map(|_| ())
}

/// One record, inside the caller's transaction.
pub(super) fn write_record(
    tx: &rusqlite::Transaction<'_>,
    record: &Record,
) -> rusqlite::Result<()> {
    match record {
        Record::RequestQueued {
            request,
            builder,
            reason,
            properties,
            priority,
            source,
            at_ms,
        } => {
            let props = rows::props_json(properties);
            let source_json = rows::source_json(source.as_ref())
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.execute(
                "INSERT INTO requests (id, builder, reason, properties, submitted_at, state, priority, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)",
                params![*request as i64, builder, reason, props, *at_ms as i64, priority, source_json],
            )?;
            if let Some(source) = source {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO request_changes (request_id, change_id) VALUES (?1, ?2)",
                )?;
                for change in &source.changes {
                    stmt.execute(params![*request as i64, *change as i64])?;
                }
            }
        }
        Record::ChangeAdded(change) => {
            let c = &change.new;
            let files = rows::files_json(&c.files);
            let props = rows::props_json(&c.properties);
            tx.prepare_cached(
                "INSERT INTO changes (id, repository, branch, revision, files, author, comments,
                                      when_ms, properties, category, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                change.id as i64,
                c.repository,
                c.branch,
                c.revision,
                files,
                c.author,
                c.comments,
                c.when_ms.map(|w| w as i64),
                props,
                c.category,
                change.at_ms as i64
            ])?;
        }
        Record::PollerCursor(cursor) => match &cursor.revision {
            Some(rev) => {
                tx.execute(
                    "INSERT OR REPLACE INTO poller_cursors (poller, branch, revision)
                     VALUES (?1, ?2, ?3)",
                    params![cursor.poller, cursor.branch, rev],
                )?;
            }
            None => {
                tx.execute(
                    "DELETE FROM poller_cursors WHERE poller = ?1 AND branch = ?2",
                    params![cursor.poller, cursor.branch],
                )?;
            }
        },
        Record::SchedulerState { name, kind, state } => match state {
            Some(state) => {
                tx.execute(
                    "INSERT OR REPLACE INTO scheduler_state (name, kind, state) VALUES (?1, ?2, ?3)",
                    params![name, kind, state],
                )?;
            }
            None => {
                tx.execute("DELETE FROM scheduler_state WHERE name = ?1", params![name])?;
            }
        },
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
