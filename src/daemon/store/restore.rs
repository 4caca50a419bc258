//! Restore at start: what a restarted master needs back from the
//! database (queued requests, running builds with their definitions, the
//! next ids), ending as `retry` the running builds that cannot be resumed.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::BuilderDef;
use crate::daemon::core::{LiveRequest, Restored, RestoredBuild, SavedScheduler};
use crate::protocol::SourceStamp;

/// Read back what a restart needs: queued requests in their original
/// order, and the builds that were running, with the definition they
/// started with, to wait for their workers. A running build whose
/// definition was not kept (written by schema version 1) cannot be
/// resumed: it ends as `exception` and its request is queued again.
pub(super) fn restore(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<Restored> {
    let tx = conn.transaction()?;
    retry_unresumable(
        &tx,
        "definition IS NULL",
        "the master stopped while it ran; its request is queued again",
        now_ms,
    )?;
    tx.commit()?;

    let mut stmt = conn.prepare(
        "SELECT b.id, b.request_id, b.builder, b.worker, b.generation, b.definition,
                    (SELECT MAX(idx) FROM steps s WHERE s.build_id = b.id),
                    r.reason, r.properties, r.retries, b.started_at, r.priority,
                    r.submitted_at, r.source
             FROM builds b JOIN requests r ON r.id = b.request_id
             WHERE b.finished_at IS NULL ORDER BY b.id",
    )?;
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
                        source: source_of(row.get(13)?),
                    },
                    worker: row.get(3)?,
                    def: Arc::new(BuilderDef::default()),
                    generation: row.get::<_, i64>(4)? as u64,
                    step: row.get::<_, Option<u32>>(6)?.unwrap_or(0),
                    started_at_ms: row.get::<_, i64>(10)? as u64,
                },
                definition,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
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
                let tx = conn.transaction()?;
                retry_unresumable(
                    &tx,
                    &format!("id = {}", build.id),
                    "its definition could not be read back after a restart; its request is queued again",
                    now_ms,
                )?;
                tx.commit()?;
            }
        }
    }

    let mut stmt = conn.prepare(
        "SELECT id, builder, reason, properties, retries, priority, submitted_at, source
             FROM requests WHERE state = 'queued' ORDER BY priority DESC, id",
    )?;
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
                source: source_of(row.get(7)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    drop(stmt);
    let max = |sql: &str| -> rusqlite::Result<u64> {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.unwrap_or(0) as u64)
    };
    let config_hash = conn
        .query_row(
            "SELECT config_hash FROM generations ORDER BY generation DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .unwrap_or_default();
    Ok(Restored {
        config_hash,
        running: restored_running,
        generation: max("SELECT MAX(generation) FROM generations")?,
        next_request: max("SELECT MAX(id) FROM requests")? + 1,
        next_build: max("SELECT MAX(id) FROM builds")? + 1,
        next_change: max("SELECT MAX(id) FROM changes")? + 1,
        schedulers: schedulers(conn)?,
        queued,
    })
}

/// A request's source stamp as stored (JSON); an unreadable one is
/// dropped rather than stopping the start (the request still runs).
fn source_of(json: Option<String>) -> Option<SourceStamp> {
    json.and_then(|j| serde_json::from_str(&j).ok())
}

/// The schedulers' saved state, by name.
fn schedulers(conn: &Connection) -> rusqlite::Result<BTreeMap<String, SavedScheduler>> {
    let mut stmt = conn.prepare("SELECT name, kind, state FROM scheduler_state")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            SavedScheduler {
                kind: row.get(1)?,
                state: row.get(2)?,
            },
        ))
    })?;
    rows.collect()
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
