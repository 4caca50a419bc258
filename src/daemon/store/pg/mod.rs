//! The store on PostgreSQL (`[master] store = { postgres = ... }`,
//! docs/postgres.md): [`PgStore`] (the master loop's writer, behind the
//! epoch fence of docs/standby.md), [`PgReader`] (history reads), and
//! [`connect`] for the leadership connection.
//!
//! The files are those of the SQLite store, one for one: `schema.rs`
//! (migrations, including the leadership tables), `writes.rs` (a batch in
//! one fenced transaction), `restore.rs`, `queries.rs`, `reader.rs`;
//! `retention.rs` is the SQL of `daemon/retention.rs`; `conn.rs` is how a
//! synchronous caller uses the asynchronous driver.

mod conn;
mod queries;
mod reader;
mod restore;
pub mod retention;
mod schema;
mod tls;
mod writes;

use tokio_postgres::Client;

use super::{Store, StoreError};
use crate::config::PostgresSettings;
use crate::daemon::core::{Record, Restored};
use crate::protocol::{ArtifactInfo, BuildId, BuildSummary, RequestId, RequestInfo};

pub use conn::{block_on, connect, message};
pub use reader::PgReader;
pub use schema::{MIGRATION_LOCK, PG_SCHEMA_VERSION};

/// Why an operation of the PostgreSQL store failed, before it is put in
/// the words of a [`StoreError`] naming the database.
#[derive(Debug)]
pub(super) enum PgFail {
    /// The driver or the server.
    Db(tokio_postgres::Error),
    /// The epoch fence: another master leads.
    Fenced {
        /// This master's epoch.
        mine: u64,
        /// The database's.
        current: u64,
    },
    /// Something the store refuses (a newer schema).
    Refused(String),
}

impl From<tokio_postgres::Error> for PgFail {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFail::Db(e)
    }
}

impl PgFail {
    /// In the words of a [`StoreError`], naming the database (`what`).
    fn named(self, what: &str) -> StoreError {
        match self {
            PgFail::Db(source) => StoreError::Postgres {
                what: what.to_string(),
                source,
            },
            PgFail::Fenced { mine, current } => StoreError::Fenced { mine, current },
            PgFail::Refused(reason) => StoreError::Refused {
                what: what.to_string(),
                reason,
            },
        }
    }
}

/// The database of `settings` as messages name it (never the password).
pub fn describe_settings(settings: &PostgresSettings) -> String {
    match settings.conninfo.parse::<tokio_postgres::Config>() {
        Ok(config) => conn::describe(&config),
        Err(_) => "PostgreSQL (an unreadable connection string)".into(),
    }
}

/// The master loop's connection to PostgreSQL: the [`Store`] of a master
/// on `store = { postgres = ... }`.
pub struct PgStore {
    client: Client,
    /// The epoch every write is conditional on (`None`: unfenced).
    fence: Option<u64>,
    statements: writes::Statements,
    what: String,
}

impl PgStore {
    /// Connect, and create or migrate the schema (under the migration
    /// lock: two masters may start at once). With `fence = Some(epoch)`,
    /// every write transaction first checks that `bb_leader.epoch` is
    /// still `epoch` and otherwise writes nothing and fails with
    /// [`StoreError::Fenced`]; `leader` gives the epoch its takeover
    /// committed. `None` writes unconditionally: for a single master and
    /// the store's tests.
    pub fn open(settings: &PostgresSettings, fence: Option<u64>) -> Result<Self, StoreError> {
        let mut client = connect(settings, "bbmaster store")?;
        let what = describe_settings(settings);
        block_on(schema::migrate(&mut client)).map_err(|e| e.named(&what))?;
        Ok(PgStore {
            client,
            fence,
            statements: writes::Statements::new(),
            what,
        })
    }

    /// What [`Store::restore`] reads, without writing anything and
    /// without the fence: for a standby, which shows the leader's queue
    /// and running builds (a running build that could not be resumed is
    /// left out; the leader retries it). One read-only snapshot.
    pub fn restore_read_only(&mut self) -> Result<Restored, StoreError> {
        block_on(restore::restore_read_only(&mut self.client)).map_err(|e| e.named(&self.what))
    }

    /// The epoch this store writes as.
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }
}

impl Store for PgStore {
    type Error = StoreError;

    fn apply_batch(
        &mut self,
        records: &[&Record],
        artifacts: &[(BuildId, &ArtifactInfo)],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let outcomes = block_on(writes::apply(
            &mut self.client,
            &mut self.statements,
            self.fence,
            records,
            artifacts,
        ))
        .map_err(|e| e.named(&self.what))?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.map_err(|e| PgFail::Db(e).named(&self.what)))
            .collect())
    }

    fn restore(&mut self, now_ms: u64) -> Result<Restored, StoreError> {
        block_on(restore::restore(&mut self.client, self.fence, now_ms))
            .map_err(|e| e.named(&self.what))
    }

    /// Nothing to fold in: every commit is in the server's own files.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn request(&self, id: RequestId) -> Result<Option<RequestInfo>, StoreError> {
        block_on(queries::request(&self.client, id)).map_err(|e| PgFail::Db(e).named(&self.what))
    }

    fn build_summary(&self, id: BuildId) -> Result<Option<BuildSummary>, StoreError> {
        block_on(queries::build_summary(&self.client, id))
            .map_err(|e| PgFail::Db(e).named(&self.what))
    }
}
