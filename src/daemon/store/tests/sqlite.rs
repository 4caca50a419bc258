//! What only the SQLite store has: its file (symlinks, corruption, a full
//! disk), its migrations from files older programs wrote, its WAL with
//! read-only readers, its checkpoint.

#[test]
fn the_database_is_never_opened_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    let db = dir.path().join("master.db");
    std::os::unix::fs::symlink(&precious, &db).unwrap();
    assert!(SqliteStore::open(&db).is_err());
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
}

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::Connection;

use super::super::writes::write_record;
use super::*;
use crate::protocol::BuildResult;

/// The read side of the database at `path` (its writer opened first).
fn reader(path: &std::path::Path) -> SqliteReader {
    SqliteReader::open(path).unwrap()
}

#[test]
fn a_version_1_database_migrates_and_its_running_build_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        // A database as schema version 1 wrote it, with a running build.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
                "CREATE TABLE requests (id INTEGER PRIMARY KEY, builder TEXT NOT NULL, reason TEXT,
                     properties TEXT NOT NULL, submitted_at INTEGER NOT NULL, state TEXT NOT NULL,
                     result TEXT, finish_reason TEXT, finished_at INTEGER);
                 CREATE INDEX requests_state ON requests(state, id);
                 CREATE TABLE builds (id INTEGER PRIMARY KEY, request_id INTEGER NOT NULL REFERENCES requests(id),
                     builder TEXT NOT NULL, worker TEXT NOT NULL, generation INTEGER NOT NULL,
                     config_hash TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER,
                     result TEXT, reason TEXT);
                 CREATE INDEX builds_builder ON builds(builder, id);
                 CREATE INDEX builds_request ON builds(request_id);
                 CREATE TABLE steps (build_id INTEGER NOT NULL REFERENCES builds(id), idx INTEGER NOT NULL,
                     name TEXT NOT NULL, started_at INTEGER NOT NULL, finished_at INTEGER, result TEXT,
                     reason TEXT, PRIMARY KEY (build_id, idx));
                 CREATE TABLE generations (generation INTEGER PRIMARY KEY, config_hash TEXT NOT NULL,
                     origin TEXT NOT NULL, applied_at INTEGER NOT NULL);
                 INSERT INTO requests VALUES (1, 'a', NULL, '{}', 1, 'running', NULL, NULL, NULL);
                 INSERT INTO requests VALUES (2, 'a', NULL, '{}', 1, 'queued', NULL, NULL, NULL);
                 INSERT INTO builds VALUES (1, 1, 'a', 'w', 1, 'h', 2, NULL, NULL, NULL);
                 INSERT INTO steps VALUES (1, 0, 's', 2, NULL, NULL, NULL);
                 INSERT INTO generations VALUES (1, 'h', 'test', 1);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let restored = store.restore(9).unwrap();
    let ids: Vec<u64> = restored.queued.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![1, 2],
        "the cut-short request first, then the rest"
    );
    assert!(restored.running.is_empty());
    assert_eq!(
        (restored.generation, restored.config_hash.as_str()),
        (1, "h")
    );
    let b = reader(&path).build(1).unwrap().unwrap();
    assert_eq!(b.summary.result, Some(BuildResult::Retry));
    assert_eq!(b.steps[0].result, Some(BuildResult::Retry));
    assert_eq!(restored.queued[0].retries, 1);
}

#[test]
fn a_version_3_database_migrates_and_records_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        // A database as schema version 3 left it: no artifacts table.
        let mut store = SqliteStore::open(&path).unwrap();
        start_build_1(&mut store);
        store
            .conn
            .execute_batch(
                "DROP TABLE artifacts; DROP TABLE changes; DROP TABLE request_changes;
                 DROP TABLE poller_cursors; DROP TABLE scheduler_state;
                 ALTER TABLE requests DROP COLUMN source; PRAGMA user_version = 3;",
            )
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(reader(&path).artifacts(1).unwrap().is_empty());
    let a = crate::protocol::ArtifactInfo {
        name: "out/b.tar.gz".into(),
        size: 1 << 33,
        sha256: "ab".repeat(32),
        created_at_ms: 7,
    };
    let first = crate::protocol::ArtifactInfo {
        name: "a.bin".into(),
        ..a.clone()
    };
    // In one batch with a record: each artifact kept or refused alone.
    let outcomes = store
        .apply_batch(
            &[&queued(5, "x")],
            &[(1, &a), (1, &first), (1, &a), (9, &a)],
        )
        .unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    assert!(outcomes[2].is_err(), "a name is stored once");
    assert!(outcomes[3].is_err(), "only for known builds");
    assert!(
        reader(&path).request(5).unwrap().is_some(),
        "the batch's record is written beside them"
    );
    drop(store);
    let _store = SqliteStore::open(&path).unwrap();
    assert_eq!(reader(&path).artifacts(1).unwrap(), vec![first, a]);
}

#[test]
fn a_version_4_database_migrates_its_queue_keeps_no_source_and_changes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    {
        // A database as schema version 4 left it: no changes, no sources.
        let mut store = SqliteStore::open(&path).unwrap();
        store.apply(&[&queued(1, "a")]).unwrap();
        store
            .conn
            .execute_batch(
                "DROP TABLE changes; DROP TABLE request_changes; DROP TABLE poller_cursors;
                 DROP TABLE scheduler_state; ALTER TABLE requests DROP COLUMN source;
                 PRAGMA user_version = 4;",
            )
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    let restored = store.restore(5).unwrap();
    assert_eq!(restored.queued.len(), 1);
    assert_eq!(restored.queued[0].source, None);
    assert_eq!(restored.next_change, 1);
    assert!(restored.schedulers.is_empty());

    let change = crate::protocol::Change {
        id: 1,
        new: crate::protocol::NewChange {
            repository: "https://example.org/app.git".into(),
            branch: "main".into(),
            revision: "abc123".into(),
            files: vec!["src/a.rs".into(), "README".into()],
            author: Some("ann".into()),
            comments: Some("fix".into()),
            when_ms: Some(3),
            properties: BTreeMap::from([("k".to_string(), "v".to_string())]),
            category: Some("cat".into()),
        },
        at_ms: 4,
    };
    let source = crate::protocol::SourceStamp {
        repository: change.new.repository.clone(),
        branch: "main".into(),
        revision: Some("abc123".into()),
        changes: vec![1],
    };
    let mut with_source = queued(2, "a");
    if let Record::RequestQueued { source: s, .. } = &mut with_source {
        *s = Some(source.clone());
    }
    store
        .apply(&[
            &Record::ChangeAdded(Box::new(change.clone())),
            &Record::PollerCursor(crate::protocol::PollerCursor {
                poller: "p".into(),
                branch: "main".into(),
                revision: Some("abc123".into()),
            }),
            &Record::PollerCursor(crate::protocol::PollerCursor {
                poller: "p".into(),
                branch: "old".into(),
                revision: Some("def".into()),
            }),
            &Record::SchedulerState {
                name: "s".into(),
                kind: "branch".into(),
                state: Some("{}".into()),
            },
            &with_source,
        ])
        .unwrap();
    store
        .apply(&[
            &Record::PollerCursor(crate::protocol::PollerCursor {
                poller: "p".into(),
                branch: "old".into(),
                revision: None,
            }),
            &Record::SchedulerState {
                name: "gone".into(),
                kind: "branch".into(),
                state: None,
            },
        ])
        .unwrap();
    let r = reader(&path);
    assert_eq!(
        r.poller_cursors("p").unwrap(),
        BTreeMap::from([("main".to_string(), "abc123".to_string())])
    );
    assert!(r.poller_cursors("q").unwrap().is_empty());
    let listed = r.changes(10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].change, change);
    assert_eq!(listed[0].requests.len(), 1);
    assert_eq!(listed[0].requests[0].request_id, 2);
    assert!(listed[0].requests[0].builds.is_empty());
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    let restored = store.restore(6).unwrap();
    assert_eq!(restored.next_change, 2);
    assert_eq!(restored.queued[1].source, Some(source));
    assert_eq!(
        restored.schedulers["s"],
        crate::daemon::core::SavedScheduler {
            kind: "branch".into(),
            state: "{}".into()
        }
    );
}

#[test]
fn a_full_database_fails_the_write_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.apply(&[&queued(1, "a")]).unwrap();
    // Cap the file at its current size: the next write has no room.
    let pages: i64 = store
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    store
        .conn
        .pragma_update(None, "max_page_count", pages)
        .unwrap();
    let big = "x".repeat(64 * 1024);
    let err = store
        .apply(&[&Record::RequestQueued {
            request: 2,
            builder: "a".into(),
            reason: Some(big),
            properties: BTreeMap::new(),
            priority: 0,
            source: None,
            at_ms: 1,
        }])
        .unwrap_err()
        .to_string();
    assert!(err.contains("full"), "{err}");
    assert!(err.contains("m.db"), "the error names the database: {err}");
    let restored = store.restore(2).unwrap();
    let ids: Vec<u64> = restored.queued.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1], "all or nothing");
}

#[test]
fn a_corrupt_database_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains("m.db") && err.contains("not a database"),
        "{err}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(err.contains("newer"), "{err}");
}

/// Measures the start check (`cargo test --release --lib store::tests::measure --
/// --ignored --nocapture`); the figure is in docs/durability.md.
#[cfg(test)]
mod measure {
    use super::*;
    use crate::protocol::StepResult;

    #[test]
    #[ignore]
    fn measure_the_integrity_checks_on_100000_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let def = super::test_def();
        for chunk in 0..100u64 {
            let tx = store.conn.transaction().unwrap();
            for i in 0..1000u64 {
                let id = chunk * 1000 + i + 1;
                let records = [
                    Record::RequestQueued {
                        request: id,
                        builder: "a".into(),
                        reason: None,
                        properties: BTreeMap::new(),
                        priority: 0,
                        source: None,
                        at_ms: id,
                    },
                    Record::BuildStarted {
                        build: id,
                        request: id,
                        builder: "a".into(),
                        worker: "w".into(),
                        generation: 1,
                        config_hash: "h".into(),
                        definition: Arc::clone(&def),
                        at_ms: id,
                    },
                    Record::StepStarted {
                        build: id,
                        step: 0,
                        name: "s".into(),
                        at_ms: id,
                    },
                    Record::StepFinished {
                        build: id,
                        step: 0,
                        result: StepResult::Success,
                        reason: None,
                        at_ms: id,
                    },
                    Record::BuildFinished {
                        build: id,
                        request: id,
                        result: BuildResult::Success,
                        reason: None,
                        at_ms: id,
                    },
                ];
                for r in &records {
                    write_record(&tx, r).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        drop(store);
        let size = std::fs::metadata(&path).unwrap().len();
        let conn = Connection::open(&path).unwrap();
        for pragma in [
            "quick_check",
            "integrity_check",
            "quick_check",
            "integrity_check",
        ] {
            let started = std::time::Instant::now();
            let answer: String = conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
                .unwrap();
            eprintln!(
                "{pragma}: {answer} in {:?} ({} MB)",
                started.elapsed(),
                size >> 20
            );
        }
        let started = std::time::Instant::now();
        drop(SqliteStore::open(&path).unwrap());
        eprintln!("SqliteStore::open: {:?}", started.elapsed());
    }
}

#[test]
fn history_reads_go_on_while_the_writer_holds_a_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let store = SqliteStore::open(&path).unwrap();
    let reader = reader(&path);
    {
        let mut store = store;
        store.apply(&[&queued(1, "a")]).unwrap();
        // The writer is in the middle of a transaction, as the loop is
        // during a batch's commit: request 2 written, not committed.
        store
            .conn
            .execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT INTO requests (id, builder, properties, submitted_at, state, priority)
                 VALUES (2, 'a', '{}', 1, 'queued', 0);",
            )
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(reader.request(1).unwrap().unwrap().state, "queued");
        assert!(
            reader.request(2).unwrap().is_none(),
            "a reader of its own sees only what is committed"
        );
        assert_eq!(reader.builds(None, 10).unwrap(), vec![]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the reads did not wait for the writer"
        );
        store.conn.execute_batch("COMMIT").unwrap();
        // A read after the commit sees it (a client told of a request
        // finds it).
        assert_eq!(reader.request(2).unwrap().unwrap().builder, "a");
    }
    // The reader is read-only.
    assert!(
        reader.conns[0]
            .lock()
            .unwrap()
            .execute("DELETE FROM requests", [])
            .is_err()
    );
}

#[test]
fn a_checkpoint_leaves_the_database_whole_in_its_file_while_readers_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let reader = reader(&path);
    store.apply(&[&queued(1, "a")]).unwrap();
    assert!(reader.request(1).unwrap().is_some());
    store.checkpoint().unwrap();
    drop(store);
    let wal = dir.path().join("master.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    // The file alone, copied away, holds the request.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    assert!(
        SqliteReader::open(&copy)
            .unwrap()
            .request(1)
            .unwrap()
            .is_some()
    );
    drop(reader);
}
