//! Restore at start: what a restarted master needs back from the
//! database (queued requests, running builds with their definitions, the
//! next ids), ending as `retry` the running builds that cannot be resumed.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, LIVE_REQUEST_COLUMNS};
use crate::config::BuilderDef;
use crate::daemon::core::{Restored, RestoredBuild, SavedScheduler};

/// Why a build kept without its definition (schema version 1) ends as
/// `retry` at a restart.
pub(super) const NO_DEFINITION: &str =
    "the master stopped while it ran; its request is queued again";

/// Why a build whose definition cannot be read back ends as `retry`.
pub(super) const UNREADABLE: &str =
    "its definition could not be read back after a restart; its request is queued again";

/// Read back what a restart needs: queued requests in their original
/// order, and the builds that were running, with the definition they
/// started with, to wait for their workers. A running build whose
/// definition was not kept (written by schema version 1) cannot be
/// resumed: it ends as `exception` and its request is queued again.
pub(super) fn restore(conn: &mut Connection, now_ms: u64) -> rusqlite::Result<Restored> {
    let tx = conn.transaction()?;
    retry_unresumable(&tx, "definition IS NULL", NO_DEFINITION, now_ms)?;
    tx.commit()?;

    let mut stmt = conn.prepare(&format!(
        "SELECT b.id, b.worker, b.generation, b.definition,
                (SELECT MAX(idx) FROM steps s WHERE s.build_id = b.id), b.started_at,
                {LIVE_REQUEST_COLUMNS}
         FROM builds b JOIN requests r ON r.id = b.request_id
         WHERE b.finished_at IS NULL ORDER BY b.id"
    ))?;
    let running = stmt
        .query_map([], |row| running_build(row))?
        .collect::<Result<Vec<_>, _>>()?;
    drop(stmt);
    let mut restored_running = Vec::with_capacity(running.len());
    for (build, definition) in running {
        match with_definition(build, &definition) {
            Ok(build) => restored_running.push(build),
            Err(id) => {
                // Unreadable: retried like a build without a definition.
                let tx = conn.transaction()?;
                retry_unresumable(&tx, &format!("id = {id}"), UNREADABLE, now_ms)?;
                tx.commit()?;
            }
        }
    }

    let mut stmt = conn.prepare(&format!(
        "SELECT {LIVE_REQUEST_COLUMNS} FROM requests r
         WHERE r.state = 'queued' ORDER BY r.priority DESC, r.id"
    ))?;
    let queued = stmt
        .query_map([], |row| rows::live_request(row, 0))?
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

/// A running build as the restore query selects it (its definition
/// still as JSON, read by the caller): `b.id, b.worker, b.generation,
/// b.definition, the last step, b.started_at`, then the request's
/// [`LIVE_REQUEST_COLUMNS`]. Shared with PostgreSQL's restore.
pub(super) fn running_build<R: rows::Columns>(
    row: &R,
) -> Result<(RestoredBuild, String), R::Error> {
    let id = row.int(0)? as u64;
    let mut request = rows::live_request(row, 6)?;
    request.build = Some(id);
    Ok((
        RestoredBuild {
            id,
            request,
            worker: row.text(1)?,
            def: Arc::new(BuilderDef::default()),
            generation: row.int(2)? as u64,
            step: row.opt_int(4)?.unwrap_or(0) as u32,
            started_at_ms: row.int(5)? as u64,
        },
        row.text(3)?,
    ))
}

/// A running build given the definition it started with, read back from
/// its JSON; `Err(build id)` when it cannot be resumed (unreadable, or its
/// step is past the definition's steps). Shared with PostgreSQL's restore.
pub(super) fn with_definition(
    mut build: RestoredBuild,
    definition: &str,
) -> Result<RestoredBuild, u64> {
    match serde_json::from_str::<BuilderDef>(definition) {
        Ok(def) if (build.step as usize) < def.steps.len() => {
            build.def = Arc::new(def);
            Ok(build)
        }
        _ => Err(build.id),
    }
}
