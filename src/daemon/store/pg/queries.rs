//! The questions asked of the history, in PostgreSQL: the counterpart of
//! `../queries.rs`, the same SQL with `$n` parameters and the same row
//! mappers (`../rows.rs`). Each takes the connection (or read
//! transaction) to ask on.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use super::super::MAX_LIST;
use super::super::rows::{self, CHANGE_COLUMNS, SUMMARY_COLUMNS};
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, ChangeInfo, ChangeRequest, RequestId,
    RequestInfo,
};

type PgResult<T> = Result<T, tokio_postgres::Error>;

/// Builds, newest first, at most `limit` (capped at [`MAX_LIST`]).
pub(super) async fn builds<C: GenericClient>(
    conn: &C,
    builder: Option<&str>,
    limit: u32,
) -> PgResult<Vec<BuildSummary>> {
    let limit = i64::from(limit.min(MAX_LIST));
    let rows = match builder {
        Some(builder) => {
            conn.query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM builds
                     WHERE builder = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&builder, &limit],
            )
            .await?
        }
        None => {
            conn.query(
                &format!("SELECT {SUMMARY_COLUMNS} FROM builds ORDER BY id DESC LIMIT $1"),
                &[&limit],
            )
            .await?
        }
    };
    rows.iter().map(rows::summary).collect()
}

/// One build without its steps; `None` if there is no such build.
pub(super) async fn build_summary<C: GenericClient>(
    conn: &C,
    id: BuildId,
) -> PgResult<Option<BuildSummary>> {
    conn.query_opt(
        &format!("SELECT {SUMMARY_COLUMNS} FROM builds WHERE id = $1"),
        &[&(id as i64)],
    )
    .await?
    .as_ref()
    .map(rows::summary)
    .transpose()
}

/// One build with its steps; `None` if there is no such build.
pub(super) async fn build<C: GenericClient>(
    conn: &C,
    id: BuildId,
) -> PgResult<Option<BuildDetail>> {
    let Some(summary) = build_summary(conn, id).await? else {
        return Ok(None);
    };
    let request = conn
        .query_one(
            "SELECT reason, properties FROM requests WHERE id = $1",
            &[&(summary.request_id as i64)],
        )
        .await?;
    let request_reason: Option<String> = request.try_get(0)?;
    let props: String = request.try_get(1)?;
    let steps = conn
        .query(
            "SELECT idx, name, started_at, finished_at, result, reason
             FROM steps WHERE build_id = $1 ORDER BY idx",
            &[&(id as i64)],
        )
        .await?
        .iter()
        .map(rows::step)
        .collect::<PgResult<Vec<_>>>()?;
    Ok(Some(BuildDetail {
        summary,
        request_reason,
        properties: rows::props_of(&props),
        steps,
    }))
}

/// One request; `None` if there is no such request.
pub(super) async fn request<C: GenericClient>(
    conn: &C,
    id: RequestId,
) -> PgResult<Option<RequestInfo>> {
    conn.query_opt(
        "SELECT r.id, r.builder, r.state, r.result, r.finish_reason,
                COALESCE((SELECT MAX(b.id) FROM builds b WHERE b.request_id = r.id),
                         r.collapsed_into_build)
         FROM requests r WHERE r.id = $1",
        &[&(id as i64)],
    )
    .await?
    .as_ref()
    .map(rows::request_info)
    .transpose()
}

/// A build's artifacts, by name.
pub(super) async fn artifacts<C: GenericClient>(
    conn: &C,
    build: BuildId,
) -> PgResult<Vec<ArtifactInfo>> {
    conn.query(
        "SELECT name, size, sha256, created_at FROM artifacts
         WHERE build_id = $1 ORDER BY name",
        &[&(build as i64)],
    )
    .await?
    .iter()
    .map(rows::artifact)
    .collect()
}

/// The most recently started build.
pub(super) async fn latest_build<C: GenericClient>(conn: &C) -> PgResult<Option<BuildId>> {
    let row = conn.query_one("SELECT MAX(id) FROM builds", &[]).await?;
    Ok(row.try_get::<_, Option<i64>>(0)?.map(|v| v as u64))
}

/// A poller's cursors: the last revision seen per branch.
pub(super) async fn poller_cursors<C: GenericClient>(
    conn: &C,
    poller: &str,
) -> PgResult<BTreeMap<String, String>> {
    conn.query(
        "SELECT branch, revision FROM poller_cursors WHERE poller = $1",
        &[&poller],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

/// Changes, newest first, at most `limit` (capped at [`MAX_LIST`]), each
/// with the requests that build it and their builds.
pub(super) async fn changes<C: GenericClient>(conn: &C, limit: u32) -> PgResult<Vec<ChangeInfo>> {
    let limit = i64::from(limit.min(MAX_LIST));
    let changes = conn
        .query(
            &format!("SELECT {CHANGE_COLUMNS} FROM changes ORDER BY id DESC LIMIT $1"),
            &[&limit],
        )
        .await?
        .iter()
        .map(rows::change)
        .collect::<PgResult<Vec<_>>>()?;
    let reqs = conn
        .prepare(
            "SELECT rc.request_id, r.builder FROM request_changes rc
             JOIN requests r ON r.id = rc.request_id
             WHERE rc.change_id = $1 ORDER BY rc.request_id",
        )
        .await?;
    let builds = conn
        .prepare("SELECT id FROM builds WHERE request_id = $1 ORDER BY id")
        .await?;
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let mut with_builds = Vec::new();
        for row in conn.query(&reqs, &[&(change.id as i64)]).await? {
            let request_id: i64 = row.try_get(0)?;
            let ids = conn
                .query(&builds, &[&request_id])
                .await?
                .iter()
                .map(|r| Ok(r.try_get::<_, i64>(0)? as u64))
                .collect::<PgResult<Vec<_>>>()?;
            with_builds.push(ChangeRequest {
                request_id: request_id as u64,
                builder: row.try_get(1)?,
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
