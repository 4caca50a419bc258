//! The questions asked of the history: builds, one build with its steps,
//! one request, a build's artifacts, the latest build. Each takes the
//! connection to ask on: the readers' read-only ones (`reader.rs`).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildResult, BuildSummary, Change, ChangeInfo,
    ChangeRequest, NewChange, RequestId, RequestInfo, StepDetail,
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
            stmt.query_map(params![builder, limit], summary_from_row)
                .and_then(|rows| rows.collect())
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM builds ORDER BY id DESC LIMIT ?1"
            ))?;
            stmt.query_map(params![limit], summary_from_row)
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
        summary_from_row,
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
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())?;
    Ok(Some(BuildDetail {
        summary,
        request_reason,
        properties: serde_json::from_str::<BTreeMap<String, String>>(&props).unwrap_or_default(),
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
}

/// A build's artifacts, by name.
pub(super) fn artifacts(conn: &Connection, build: BuildId) -> rusqlite::Result<Vec<ArtifactInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, size, sha256, created_at FROM artifacts
         WHERE build_id = ?1 ORDER BY name",
    )?;
    stmt.query_map([build as i64], |r| {
        Ok(ArtifactInfo {
            name: r.get(0)?,
            size: r.get::<_, i64>(1)? as u64,
            sha256: r.get(2)?,
            created_at_ms: r.get::<_, i64>(3)? as u64,
        })
    })?
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
    let mut stmt = conn.prepare_cached(
        "SELECT id, repository, branch, revision, files, author, comments, when_ms,
                properties, category, added_at
         FROM changes ORDER BY id DESC LIMIT ?1",
    )?;
    let changes = stmt
        .query_map([limit], |r| {
            let files: String = r.get(4)?;
            let props: String = r.get(8)?;
            Ok(Change {
                id: r.get::<_, i64>(0)? as u64,
                new: NewChange {
                    repository: r.get(1)?,
                    branch: r.get(2)?,
                    revision: r.get(3)?,
                    files: serde_json::from_str(&files).unwrap_or_default(),
                    author: r.get(5)?,
                    comments: r.get(6)?,
                    when_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    properties: serde_json::from_str(&props).unwrap_or_default(),
                    category: r.get(9)?,
                },
                at_ms: r.get::<_, i64>(10)? as u64,
            })
        })?
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

const SUMMARY_COLUMNS: &str = "id, request_id, builder, worker, generation, config_hash, \
     result, reason, started_at, finished_at, \
     (SELECT source FROM requests WHERE requests.id = builds.request_id)";

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
        source: r
            .get::<_, Option<String>>(10)?
            .and_then(|j| serde_json::from_str(&j).ok()),
    })
}

fn result_column(word: Option<String>) -> Option<BuildResult> {
    word.as_deref().and_then(BuildResult::parse)
}
