//! Restore at start (or at a takeover): what a master needs back from
//! the database; the counterpart of `../restore.rs`, with its rows read
//! by the same mappers and its decisions (which builds resume) shared.

use std::collections::BTreeMap;

use tokio_postgres::{Client, GenericClient, IsolationLevel};

use super::super::restore::{NO_DEFINITION, UNREADABLE, running_build, with_definition};
use super::super::rows::{self, LIVE_REQUEST_COLUMNS};
use super::PgFail;
use super::writes::check_fence;
use crate::daemon::core::{Restored, RestoredBuild, SavedScheduler};

/// Read back what a restart needs: queued requests in their original
/// order, and the builds that were running, with the definition they
/// started with. A running build that cannot be resumed ends as `retry`
/// and its request is queued again: a write, so behind the fence.
pub(super) async fn restore(
    client: &mut Client,
    fence: Option<u64>,
    now_ms: u64,
) -> Result<Restored, PgFail> {
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    retry_unresumable(&tx, "definition IS NULL", NO_DEFINITION, now_ms).await?;
    tx.commit().await?;

    let mut restored_running = Vec::new();
    for (build, definition) in running(&*client).await? {
        match with_definition(build, &definition) {
            Ok(build) => restored_running.push(build),
            Err(id) => {
                // Unreadable: retried like a build without a definition.
                let tx = client.transaction().await?;
                check_fence(&tx, fence).await?;
                retry_unresumable(&tx, &format!("id = {id}"), UNREADABLE, now_ms).await?;
                tx.commit().await?;
            }
        }
    }
    Ok(the_rest(&*client, restored_running).await?)
}

/// What [`restore`] reads, without writing anything: for a standby,
/// which shows the leader's queue and running builds but must not touch
/// them. One read-only snapshot; a running build that could not be
/// resumed is left out (the leader retries it).
pub(super) async fn restore_read_only(client: &mut Client) -> Result<Restored, PgFail> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let running = running(&tx)
        .await?
        .into_iter()
        .filter_map(|(build, definition)| with_definition(build, &definition).ok())
        .collect();
    let restored = the_rest(&tx, running).await?;
    tx.commit().await?;
    Ok(restored)
}

/// The running builds with their definitions (as JSON); a build kept
/// without one (a restore retries those first) is left out.
async fn running<C: GenericClient>(
    client: &C,
) -> Result<Vec<(RestoredBuild, String)>, tokio_postgres::Error> {
    client
        .query(
            &format!(
                "SELECT b.id, b.worker, b.generation, b.definition,
                        (SELECT MAX(idx) FROM steps s WHERE s.build_id = b.id), b.started_at,
                        {LIVE_REQUEST_COLUMNS}
                 FROM builds b JOIN requests r ON r.id = b.request_id
                 WHERE b.finished_at IS NULL AND b.definition IS NOT NULL ORDER BY b.id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(running_build)
        .collect()
}

/// The queue, the next ids, the generation and the schedulers' state,
/// around the `running` builds.
async fn the_rest<C: GenericClient>(
    client: &C,
    running: Vec<RestoredBuild>,
) -> Result<Restored, tokio_postgres::Error> {
    let queued = client
        .query(
            &format!(
                "SELECT {LIVE_REQUEST_COLUMNS} FROM requests r
                 WHERE r.state = 'queued' ORDER BY r.priority DESC, r.id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|row| rows::live_request(row, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let max = async |sql: &str| -> Result<u64, tokio_postgres::Error> {
        let row = client.query_one(sql, &[]).await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0) as u64)
    };
    let config_hash = client
        .query_opt(
            "SELECT config_hash FROM generations ORDER BY generation DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?
        .unwrap_or_default();
    Ok(Restored {
        config_hash,
        running,
        generation: max("SELECT MAX(generation) FROM generations").await?,
        next_request: max("SELECT MAX(id) FROM requests").await? + 1,
        next_build: max("SELECT MAX(id) FROM builds").await? + 1,
        next_change: max("SELECT MAX(id) FROM changes").await? + 1,
        schedulers: schedulers(client).await?,
        queued,
    })
}

/// The schedulers' saved state, by name.
async fn schedulers<C: GenericClient>(
    client: &C,
) -> Result<BTreeMap<String, SavedScheduler>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT name, kind, state FROM scheduler_state", &[])
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                SavedScheduler {
                    kind: row.try_get(1)?,
                    state: row.try_get(2)?,
                },
            ))
        })
        .collect()
}

/// End running builds that cannot be resumed (chosen by `which`, a
/// condition on `builds`) as `retry`: their steps end, their requests are
/// queued again with one more retry counted.
async fn retry_unresumable<C: GenericClient>(
    tx: &C,
    which: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    let running = format!("SELECT id FROM builds WHERE finished_at IS NULL AND {which}");
    let now = now_ms as i64;
    tx.execute(
        &format!(
            "UPDATE steps SET finished_at = $1, result = 'retry', reason = $2
             WHERE finished_at IS NULL AND build_id IN ({running})"
        ),
        &[&now, &reason],
    )
    .await?;
    tx.execute(
        &format!(
            "UPDATE requests SET state = 'queued', retries = retries + 1
             WHERE id IN (SELECT request_id FROM builds WHERE id IN ({running}))"
        ),
        &[],
    )
    .await?;
    tx.execute(
        &format!(
            "UPDATE builds SET finished_at = $1, result = 'retry', reason = $2
             WHERE id IN ({running})"
        ),
        &[&now, &reason],
    )
    .await?;
    Ok(())
}
