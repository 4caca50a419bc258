//! The store's tests, in files of their own to keep the store's files
//! short: `suite.rs` runs on both backends (SQLite in a temp dir, and a
//! real throwaway PostgreSQL from `testkit::postgres`, a database per
//! scenario), `sqlite.rs` and `pg.rs` test what only one backend has
//! (SQLite's migrations from old files, its WAL; PostgreSQL's fence,
//! concurrent migrations, password authentication).

mod pg;
mod sqlite;
mod suite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::pg::{PgReader, PgStore};
use super::*;
use crate::config::{BuilderDef, PostgresSettings};
use crate::testkit::postgres::{PASSWORD, PgServer};

pub(super) fn test_def() -> Arc<BuilderDef> {
    Arc::new(BuilderDef {
        name: "a".into(),
        previous_names: vec![],
        workers: vec!["w".into()],
        env: BTreeMap::new(),
        pass_env: Vec::new(),
        steps: vec![crate::config::StepDef {
            name: "s".into(),
            action: crate::config::StepAction::Shell("true".into()),
            timeout: None,
            env: BTreeMap::new(),
            locks: Vec::new(),
        }],
        collapse: false,
        retry: true,
        force_properties: Vec::new(),
        ..BuilderDef::default()
    })
}

fn queued(request: u64, builder: &str) -> Record {
    Record::RequestQueued {
        request,
        builder: builder.into(),
        reason: None,
        properties: BTreeMap::from([("K".to_string(), "v".to_string())]),
        priority: 0,
        source: None,
        at_ms: 1,
    }
}

fn build_started(build: u64, request: u64, builder: &str) -> Record {
    Record::BuildStarted {
        build,
        request,
        builder: builder.into(),
        worker: "w".into(),
        generation: 1,
        config_hash: "h".into(),
        definition: test_def(),
        at_ms: 2,
    }
}

fn start_build_1(store: &mut dyn Store<Error = StoreError>) {
    store
        .apply(&[
            &queued(1, "a"),
            &build_started(1, 1, "a"),
            &Record::StepStarted {
                build: 1,
                step: 0,
                name: "s".into(),
                at_ms: 2,
            },
        ])
        .unwrap();
}

/// A store under test: its writer and readers opened (again) at will,
/// and raw SQL run behind its back (statements both backends take).
trait Backend {
    /// Open the writer (creating or migrating the schema).
    fn open(&self) -> BoxedStore;
    /// Open a reader (the writer opened first).
    fn reader(&self) -> Box<dyn HistoryReader>;
    /// Run SQL behind the store's back.
    fn sql(&self, sql: &str);
}

/// SQLite: `master.db` in a temp dir.
struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.db");
        Sqlite { _dir: dir, path }
    }
}

impl Backend for Sqlite {
    fn open(&self) -> BoxedStore {
        Box::new(SqliteStore::open(&self.path).unwrap())
    }
    fn reader(&self) -> Box<dyn HistoryReader> {
        Box::new(SqliteReader::open(&self.path).unwrap())
    }
    fn sql(&self, sql: &str) {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
}

/// PostgreSQL: a fresh database on a test server.
struct Postgres<'a> {
    pg: &'a PgServer,
    db: String,
    settings: PostgresSettings,
}

/// A password file for the test server's role, in `dir`.
fn password_file(dir: &std::path::Path) -> PathBuf {
    let file = dir.join("pgpass");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    file
}

impl<'a> Postgres<'a> {
    /// A fresh database named `db` on `pg` (over TCP, with the password
    /// from a file, as a deployment would).
    fn new(pg: &'a PgServer, db: &str, files: &std::path::Path) -> Self {
        pg.create_database(db).unwrap();
        Postgres {
            pg,
            db: db.to_string(),
            settings: settings(pg, db, Some(password_file(files))),
        }
    }
}

/// Settings for database `db` of `pg`.
fn settings(pg: &PgServer, db: &str, password_file: Option<PathBuf>) -> PostgresSettings {
    PostgresSettings {
        conninfo: pg.conninfo(db),
        password_file,
        shared_dir: PathBuf::from("/nonexistent"),
        lease: std::time::Duration::from_secs(10),
        ca_file: None,
    }
}

impl Backend for Postgres<'_> {
    fn open(&self) -> BoxedStore {
        Box::new(PgStore::open(&self.settings, None).unwrap())
    }
    fn reader(&self) -> Box<dyn HistoryReader> {
        Box::new(PgReader::open(&self.settings).unwrap())
    }
    fn sql(&self, sql: &str) {
        self.pg.psql(&self.db, sql).unwrap();
    }
}

/// Each scenario of `suite.rs` as a test on SQLite, and all of them in
/// one test on one PostgreSQL server, a database each (a server starts
/// in about a second: one per scenario would cost more than the
/// scenarios).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::suite::$name(&super::Sqlite::new());
                }
            )*
        }

        #[test]
        fn the_suite_on_postgresql() {
            let pg = PgServer::start().expect("a throwaway PostgreSQL (install `postgresql`)");
            let files = tempfile::tempdir().unwrap();
            $(
                eprintln!("scenario {}", stringify!($name));
                suite::$name(&Postgres::new(&pg, stringify!($name), files.path()));
            )*
        }
    };
}

on_both_backends!(
    queued_requests_survive_reopen_in_order,
    a_build_running_at_a_crash_comes_back_with_its_definition,
    a_build_whose_definition_cannot_be_read_is_retried,
    a_retried_build_requeues_its_request,
    artifacts_in_a_batch_are_kept_or_refused_alone,
    changes_cursors_and_scheduler_state_round_trip,
    rename_moves_history,
    the_loop_and_the_readers_answer_the_same,
    an_empty_batch_writes_nothing,
);
