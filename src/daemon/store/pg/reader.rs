//! [`PgReader`]: the [`HistoryReader`] of a master on PostgreSQL, the
//! counterpart of `../reader.rs`. Connections of its own (never the
//! loop's writer), read-only transactions, the SQL of `queries.rs`.
//!
//! A standby master answers its history reads with one of these too: it
//! only reads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio_postgres::{Client, IsolationLevel};

use super::super::{HistoryReader, ReadError, StoreError};
use super::conn::{block_on, config_of, connect, describe};
use super::queries;
use crate::config::PostgresSettings;
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, ChangeInfo, RequestId, RequestInfo,
};

/// Read connections a [`PgReader`] keeps: two, as SQLite's, so that one
/// slow query does not hold up a follower's snapshot.
const CONNECTIONS: usize = 2;

/// Connections to the database for history reads, each behind a lock.
pub struct PgReader {
    conns: Vec<Mutex<Client>>,
    settings: PostgresSettings,
    what: String,
}

impl PgReader {
    /// Open the read connections. The writer (`PgStore::open`) has
    /// created and migrated the schema.
    pub fn open(settings: &PostgresSettings) -> Result<Self, StoreError> {
        let what = describe(&config_of(settings, "bbmaster reader")?);
        let conns = (0..CONNECTIONS)
            .map(|_| connect(settings, "bbmaster reader").map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PgReader {
            conns,
            settings: settings.clone(),
            what,
        })
    }

    /// Run `query` in a read-only transaction on a free connection, or
    /// wait for the first one. REPEATABLE READ: every answer of one
    /// question comes from one snapshot (a request and its build read
    /// together, as a follower needs).
    fn with<T>(
        &self,
        query: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, ReadError> {
        let mut guard = self
            .conns
            .iter()
            .find_map(|c| c.try_lock().ok())
            .unwrap_or_else(|| self.conns[0].lock().unwrap_or_else(|e| e.into_inner()));
        // A connection the server closed (a restart, a failover of the
        // database) is opened again; if that fails, the read says why.
        if guard.is_closed()
            && let Ok(fresh) = connect(&self.settings, "bbmaster reader")
        {
            *guard = fresh;
        }
        let client: &mut Client = &mut guard;
        block_on(async {
            let tx = client
                .build_transaction()
                .read_only(true)
                .isolation_level(IsolationLevel::RepeatableRead)
                .start()
                .await?;
            let answer = query(&tx).await?;
            tx.commit().await?;
            Ok(answer)
        })
        .map_err(|source| {
            ReadError(Box::new(StoreError::Postgres {
                what: format!("{} (history read)", self.what),
                source,
            }))
        })
    }
}

impl HistoryReader for PgReader {
    fn builds(&self, builder: Option<&str>, limit: u32) -> Result<Vec<BuildSummary>, ReadError> {
        self.with(async |tx| queries::builds(tx, builder, limit).await)
    }

    fn build(&self, id: BuildId) -> Result<Option<BuildDetail>, ReadError> {
        self.with(async |tx| queries::build(tx, id).await)
    }

    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, ReadError> {
        self.with(async |tx| queries::request(tx, id).await)
    }

    fn request_and_build(
        &self,
        id: RequestId,
    ) -> Result<Option<(RequestInfo, Option<BuildDetail>)>, ReadError> {
        self.with(async |tx| {
            let Some(info) = queries::request(tx, id).await? else {
                return Ok(None);
            };
            let build = match info.build {
                Some(b) => queries::build(tx, b).await?,
                None => None,
            };
            Ok(Some((info, build)))
        })
    }

    fn artifacts(&self, build: BuildId) -> Result<Vec<ArtifactInfo>, ReadError> {
        self.with(async |tx| queries::artifacts(tx, build).await)
    }

    fn latest_build(&self) -> Result<Option<BuildId>, ReadError> {
        self.with(async |tx| queries::latest_build(tx).await)
    }

    fn poller_cursors(&self, poller: &str) -> Result<BTreeMap<String, String>, ReadError> {
        self.with(async |tx| queries::poller_cursors(tx, poller).await)
    }

    fn changes(&self, limit: u32) -> Result<Vec<ChangeInfo>, ReadError> {
        self.with(async |tx| queries::changes(tx, limit).await)
    }
}
