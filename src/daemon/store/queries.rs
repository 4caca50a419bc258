//! The questions asked of the history: builds, one build with its steps,
//! one request, a build's artifacts, the latest build. Each takes the
//! connection to ask on: the readers' read-only ones (`reader.rs`).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, CHANGE_COLUMNS, SUMMARY_COLUMNS};
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, ChangeInfo, ChangeRequest, RequestId,
    RequestInfo,
};

/// Most builds one `builds` answer lists, whatever the client asks: the
/// answer is held whole in memory and sent as one frame, so it stays
/// bounded.
pub const MAX_LIST: u32 = 10_000;

/// Builds, newest first, at most `limit` (capped at [`MAX_LIST`]).
/// Two statements, so that a builder's history is read through its
/// index rather than by scanning every build.
pub(super) fn builds(
    conn: &Connection,
    builder: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<BuildSummary>> {
    let limit = limit.min(MAX_LIST) as i64;
    match builder {
        Some(builder) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM builds
                 WHERE builder = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![builder, limit], |r| rows::summary(r))
                .and_then(|rows| rows.collect())
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM builds ORDER BY id DESC LIMIT ?1"
            ))?;
            stmt.query_map(params![limit], |r| rows::summary(r))
                .and_then(|rows| rows.collect())
        }
    }
}

/// One build without its steps; `None` if there is no such build.
pub(super) fn build_summary(
    conn: &Connection,
    id: BuildId,
) -> rusqlite::Result<Option<BuildSummary>> {
    conn.query_row(
        &format!("SELECT {SUMMARY_COLUMNS} FROM builds WHERE id = ?1"),
        params![id as i64],
        |r| rows::summary(r),
    )
    .optional()
}

/// One build with its steps; `None` if there is no such build.
pub(super) fn build(conn: &Connection, id: BuildId) -> rusqlite::Result<Option<BuildDetail>> {
    let Some(summary) = build_summary(conn, id)? else {
        return Ok(None);
    };
    let (request_reason, props): (Option<String>, String) = conn.query_row(
        "SELECT reason, properties FROM requests WHERE id = ?1",
        params![summary.request_id as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT idx, name, started_at, finished_at, result, reason
         FROM steps WHERE build_id = ?1 ORDER BY idx",
    )?;
    let steps = stmt
        .query_map(params![id as i64], |r| rows::step(r))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())?;
    Ok(Some(BuildDetail {
        summary,
        request_reason,
        properties: rows::props_of(&props),
        steps,
    }))
}

/// One request; `None` if there is no such request.
pub(super) fn request(conn: &Connection, id: RequestId) -> rusqlite::Result<Option<RequestInfo>> {
    conn.query_row(
        "SELECT r.id, r.builder, r.state, r.result, r.finish_reason,
                COALESCE((SELECT MAX(b.id) FROM builds b WHERE b.request_id = r.id),
                         r.collapsed_into_build)
         FROM requests r WHERE r.id = ?1",
        params![id as i64],
        |r| rows::request_info(r),
    )
    .optional()
}

/// A build's artifacts, by name.
pub(super) fn artifacts(conn: &Connection, build: BuildId) -> rusqlite::Result<Vec<ArtifactInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, size, sha256, created_at FROM artifacts
         WHERE build_id = ?1 ORDER BY name",
    )?;
    stmt.query_map([build as i64], |r| rows::artifact(r))?
        .collect()
}

/// The most recently started build.
pub(super) fn latest_build(conn: &Connection) -> rusqlite::Result<Option<BuildId>> {
    conn.query_row("SELECT MAX(id) FROM builds", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map(|v| v.map(|v| v as u64))
}

/// A poller's cursors: the last revision seen per branch.
pub(super) fn poller_cursors(
    conn: &Connection,
    poller: &str,
) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt =
        conn.prepare_cached("SELECT branch, revision FROM poller_cursors WHERE poller = ?1")?;
    stmt.query_map([poller], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Changes, newest first, at most `limit` (capped at [`MAX_LIST`]), each
/// with the requests that build it and their builds.
pub(super) fn changes(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<ChangeInfo>> {
    let limit = limit.min(MAX_LIST) as i64;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CHANGE_COLUMNS} FROM changes ORDER BY id DESC LIMIT ?1"
    ))?;
    let changes = stmt
        .query_map([limit], |r| rows::change(r))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut reqs = conn.prepare_cached(
        "SELECT rc.request_id, r.builder FROM request_changes rc
         JOIN requests r ON r.id = rc.request_id
         WHERE rc.change_id = ?1 ORDER BY rc.request_id",
    )?;
    let mut builds =
        conn.prepare_cached("SELECT id FROM builds WHERE request_id = ?1 ORDER BY id")?;
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let requests = reqs
            .query_map([change.id as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut with_builds = Vec::with_capacity(requests.len());
        for (request_id, builder) in requests {
            let ids = builds
                .query_map([request_id as i64], |r| Ok(r.get::<_, i64>(0)? as u64))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            with_builds.push(ChangeRequest {
                request_id,
                builder,
                builds: ids,
            });
        }
        out.push(ChangeInfo {
            change,
            requests: with_builds,
        });
    }
    Ok(out)
}
