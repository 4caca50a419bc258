//! Writes: a batch of the core's [`Record`]s and of the artifacts that
//! uploads stored, all in one transaction behind the epoch fence; the
//! counterpart of `../writes.rs`, statement for statement.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement, Transaction};

use super::super::rows;
use super::PgFail;
use crate::daemon::core::Record;
use crate::protocol::{ArtifactInfo, BuildId};

/// Statements prepared once per connection, by their SQL.
pub(super) type Statements = HashMap<&'static str, Statement>;

/// Run `sql` with `params`, preparing it once per connection: a batch's
/// statements then cost one round trip each.
pub(super) async fn exec<C: GenericClient>(
    conn: &C,
    cache: &mut Statements,
    sql: &'static str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let stmt = match cache.get(sql) {
        Some(stmt) => stmt.clone(),
        None => {
            let stmt = conn.prepare(sql).await?;
            cache.insert(sql, stmt.clone());
            stmt
        }
    };
    conn.execute(&stmt, params).await
}

/// The fence: in a write transaction, before anything else, check that
/// the epoch in `bb_leader` is still `mine`. `FOR SHARE` serialises with
/// a takeover's `UPDATE` of that row: either this transaction commits
/// before the new epoch does, or it sees the new epoch here and writes
/// nothing. `None`: no fence (a master that does not campaign, tests).
pub(super) async fn check_fence(tx: &Transaction<'_>, fence: Option<u64>) -> Result<(), PgFail> {
    let Some(mine) = fence else {
        return Ok(());
    };
    let current: i64 = tx
        .query_one("SELECT epoch FROM bb_leader WHERE id = 1 FOR SHARE", &[])
        .await?
        .get(0);
    if current as u64 != mine {
        return Err(PgFail::Fenced {
            mine,
            current: current as u64,
        });
    }
    Ok(())
}

/// Write a batch in one transaction: the records all or nothing (an
/// error fails the whole batch), then each artifact under a savepoint of
/// its own, so that one the database refuses (a name stored twice, a
/// build it does not know) is left out alone and its outcome says why.
pub(super) async fn apply(
    client: &mut Client,
    cache: &mut Statements,
    fence: Option<u64>,
    records: &[&Record],
    artifacts: &[(BuildId, &ArtifactInfo)],
) -> Result<Vec<Result<(), tokio_postgres::Error>>, PgFail> {
    if records.is_empty() && artifacts.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    for record in records {
        write_record(&tx, cache, record).await?;
    }
    let mut outcomes = Vec::with_capacity(artifacts.len());
    for (build, artifact) in artifacts {
        let savepoint = tx.savepoint("artifact").await?;
        let outcome = add_artifact(&savepoint, cache, *build, artifact).await;
        if outcome.is_ok() {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Record an artifact stored under the build's artifacts dir.
async fn add_artifact(
    tx: &Transaction<'_>,
    cache: &mut Statements,
    build: BuildId,
    a: &ArtifactInfo,
) -> Result<(), tokio_postgres::Error> {
    exec(
        tx,
        cache,
        "INSERT INTO artifacts (build_id, name, size, sha256, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &(build as i64),
            &a.name,
            &(a.size as i64),
            &a.sha256,
            &(a.created_at_ms as i64),
        ],
    )
    .await
    .map(|_| ())
}

/// One record, inside the caller's transaction.
pub(super) async fn write_record(
    tx: &Transaction<'_>,
    cache: &mut Statements,
    record: &Record,
) -> Result<(), PgFail> {
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
                .map_err(|e| PgFail::Refused(format!("cannot encode a source stamp: {e}")))?;
            exec(
                tx,
                cache,
                "INSERT INTO requests (id, builder, reason, properties, submitted_at, state, priority, source)
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7)",
                &[&(*request as i64), builder, reason, &props, &(*at_ms as i64), &i64::from(*priority), &source_json],
            )
            .await?;
            if let Some(source) = source {
                for change in &source.changes {
                    exec(
                        tx,
                        cache,
                        "INSERT INTO request_changes (request_id, change_id) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&(*request as i64), &(*change as i64)],
                    )
                    .await?;
                }
            }
        }
        Record::ChangeAdded(change) => {
            let c = &change.new;
            let files = rows::files_json(&c.files);
            let props = rows::props_json(&c.properties);
            exec(
                tx,
                cache,
                "INSERT INTO changes (id, repository, branch, revision, files, author, comments,
                                      when_ms, properties, category, added_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &(change.id as i64),
                    &c.repository,
                    &c.branch,
                    &c.revision,
                    &files,
                    &c.author,
                    &c.comments,
                    &c.when_ms.map(|w| w as i64),
                    &props,
                    &c.category,
                    &(change.at_ms as i64),
                ],
            )
            .await?;
        }
        Record::PollerCursor(cursor) => match &cursor.revision {
            Some(rev) => {
                exec(
                    tx,
                    cache,
                    "INSERT INTO poller_cursors (poller, branch, revision) VALUES ($1, $2, $3)
                     ON CONFLICT (poller, branch) DO UPDATE SET revision = EXCLUDED.revision",
                    &[&cursor.poller, &cursor.branch, rev],
                )
                .await?;
            }
            None => {
                exec(
                    tx,
                    cache,
                    "DELETE FROM poller_cursors WHERE poller = $1 AND branch = $2",
                    &[&cursor.poller, &cursor.branch],
                )
                .await?;
            }
        },
        Record::SchedulerState { name, kind, state } => match state {
            Some(state) => {
                exec(
                    tx,
                    cache,
                    "INSERT INTO scheduler_state (name, kind, state) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, state = EXCLUDED.state",
                    &[name, kind, state],
                )
                .await?;
            }
            None => {
                exec(
                    tx,
                    cache,
                    "DELETE FROM scheduler_state WHERE name = $1",
                    &[name],
                )
                .await?;
            }
        },
        Record::RequestCancelled {
            request,
            reason,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "UPDATE requests SET state = 'cancelled', result = 'cancelled',
                     finish_reason = $2, finished_at = $3 WHERE id = $1",
                &[&(*request as i64), reason, &(*at_ms as i64)],
            )
            .await?;
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
                .map_err(|e| PgFail::Refused(format!("cannot encode a definition: {e}")))?;
            exec(
                tx,
                cache,
                "INSERT INTO builds (id, request_id, builder, worker, generation, config_hash,
                                     started_at, definition)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &(*build as i64),
                    &(*request as i64),
                    builder,
                    worker,
                    &(*generation as i64),
                    config_hash,
                    &(*at_ms as i64),
                    &definition,
                ],
            )
            .await?;
            exec(
                tx,
                cache,
                "UPDATE requests SET state = 'running' WHERE id = $1",
                &[&(*request as i64)],
            )
            .await?;
        }
        Record::StepStarted {
            build,
            step,
            name,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "INSERT INTO steps (build_id, idx, name, started_at) VALUES ($1, $2, $3, $4)",
                &[&(*build as i64), &i64::from(*step), name, &(*at_ms as i64)],
            )
            .await?;
        }
        Record::StepFinished {
            build,
            step,
            result,
            reason,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "UPDATE steps SET finished_at = $3, result = $4, reason = $5
                 WHERE build_id = $1 AND idx = $2",
                &[
                    &(*build as i64),
                    &i64::from(*step),
                    &(*at_ms as i64),
                    &result.as_str(),
                    reason,
                ],
            )
            .await?;
        }
        Record::BuildFinished {
            build,
            request,
            result,
            reason,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "UPDATE builds SET finished_at = $2, result = $3, reason = $4 WHERE id = $1",
                &[&(*build as i64), &(*at_ms as i64), &result.as_str(), reason],
            )
            .await?;
            exec(
                tx,
                cache,
                "UPDATE requests SET state = 'finished', result = $2, finish_reason = $3,
                     finished_at = $4 WHERE id = $1",
                &[
                    &(*request as i64),
                    &result.as_str(),
                    reason,
                    &(*at_ms as i64),
                ],
            )
            .await?;
        }
        Record::BuildRetried {
            build,
            request,
            reason,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "UPDATE builds SET finished_at = $2, result = 'retry', reason = $3 WHERE id = $1",
                &[&(*build as i64), &(*at_ms as i64), reason],
            )
            .await?;
            exec(
                tx,
                cache,
                "UPDATE requests SET state = 'queued', retries = retries + 1 WHERE id = $1",
                &[&(*request as i64)],
            )
            .await?;
        }
        Record::RequestCollapsed {
            request,
            into,
            build,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "UPDATE requests SET state = 'skipped', result = 'skipped', finish_reason = $2,
                     finished_at = $3, collapsed_into_build = $4 WHERE id = $1",
                &[
                    &(*request as i64),
                    &format!("collapsed into request {into} (build {build})"),
                    &(*at_ms as i64),
                    &(*build as i64),
                ],
            )
            .await?;
        }
        Record::BuilderRenamed { from, to } => {
            exec(
                tx,
                cache,
                "UPDATE builds SET builder = $2 WHERE builder = $1",
                &[from, to],
            )
            .await?;
            exec(
                tx,
                cache,
                "UPDATE requests SET builder = $2 WHERE builder = $1",
                &[from, to],
            )
            .await?;
        }
        Record::GenerationApplied {
            generation,
            config_hash,
            origin,
            at_ms,
        } => {
            exec(
                tx,
                cache,
                "INSERT INTO generations (generation, config_hash, origin, applied_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (generation) DO UPDATE SET config_hash = EXCLUDED.config_hash,
                     origin = EXCLUDED.origin, applied_at = EXCLUDED.applied_at",
                &[&(*generation as i64), config_hash, origin, &(*at_ms as i64)],
            )
            .await?;
        }
    }
    Ok(())
}
