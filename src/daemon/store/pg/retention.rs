//! The SQL of history retention (`daemon/retention.rs`) on PostgreSQL:
//! the finished builds a pass plans over, and the fenced deletes. A
//! retention pass opens a connection of its own, as it does on SQLite.

use tokio_postgres::Client;

use super::writes::check_fence;
use super::{PgFail, block_on, connect, describe_settings};
use crate::config::PostgresSettings;
use crate::daemon::store::StoreError;
use crate::protocol::BuildId;

/// A retention pass's connection, and the epoch its deletes are
/// conditional on.
pub struct PgRetention {
    client: Client,
    fence: Option<u64>,
    what: String,
}

impl PgRetention {
    /// Connect for one pass.
    pub fn open(settings: &PostgresSettings, fence: Option<u64>) -> Result<Self, StoreError> {
        Ok(PgRetention {
            client: connect(settings, "bbmaster retention")?,
            fence,
            what: describe_settings(settings),
        })
    }

    /// Finished builds whose request is over, newest first: `(id,
    /// builder, finished_at)`, as `plan` in `daemon/retention.rs` reads
    /// them from SQLite.
    pub fn finished_builds(&self) -> Result<Vec<(BuildId, String, u64)>, StoreError> {
        let rows = block_on(self.client.query(
            "SELECT b.id, b.builder, b.finished_at FROM builds b JOIN requests r ON r.id = b.request_id
             WHERE b.finished_at IS NOT NULL AND r.state NOT IN ('queued', 'running')
             ORDER BY b.id DESC",
            &[],
        ))
        .map_err(|e| PgFail::Db(e).named(&self.what))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, i64>(0)? as BuildId,
                    r.try_get::<_, String>(1)?,
                    r.try_get::<_, i64>(2)? as u64,
                ))
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|e| PgFail::Db(e).named(&self.what))
    }

    /// Delete builds with their steps and artifact records, in one
    /// transaction behind the fence (a master that lost the leadership
    /// deletes nothing).
    pub fn delete_builds(&mut self, ids: &[BuildId]) -> Result<(), StoreError> {
        let fence = self.fence;
        block_on(async {
            let tx = self.client.transaction().await?;
            check_fence(&tx, fence).await?;
            let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
            tx.execute("DELETE FROM artifacts WHERE build_id = ANY($1)", &[&ids])
                .await?;
            tx.execute("DELETE FROM steps WHERE build_id = ANY($1)", &[&ids])
                .await?;
            tx.execute("DELETE FROM builds WHERE id = ANY($1)", &[&ids])
                .await?;
            tx.commit().await?;
            Ok::<_, PgFail>(())
        })
        .map_err(|e| e.named(&self.what))
    }

    /// The database's size on the server's disk.
    pub fn database_bytes(&self) -> Result<u64, StoreError> {
        block_on(
            self.client
                .query_one("SELECT pg_database_size(current_database())", &[]),
        )
        .and_then(|r| r.try_get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(|e| PgFail::Db(e).named(&self.what))
    }
}
