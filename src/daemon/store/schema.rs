//! The database's schema: the migrations from an empty file to
//! [`SCHEMA_VERSION`], and the integrity check a start runs before any
//! of it.

use rusqlite::Connection;

/// The schema version this program writes; see [`migrate`].
pub const SCHEMA_VERSION: i64 = 5;

/// `PRAGMA quick_check` at start: a damaged page is found before the
/// master serves, not by the first write that meets it (measured in
/// docs/durability.md: well under a second for 100,000 builds).
pub(super) fn check_integrity(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let first = problems.first().map_or("no answer", String::as_str);
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!(
            "corrupt: the integrity check found {} problem(s), first: {}; restore master.db from a backup",
            problems.len(),
            first.replace('\n', " ")
        )),
    ))
}

/// Bring the schema to [`SCHEMA_VERSION`], one version at a time, each in
/// its own transaction. A database from a newer program is refused.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this bbmaster understands ({SCHEMA_VERSION}); use a newer bbmaster"
            )),
        ));
    }
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE requests (
                 id INTEGER PRIMARY KEY,
                 builder TEXT NOT NULL,
                 reason TEXT,
                 properties TEXT NOT NULL,
                 submitted_at INTEGER NOT NULL,
                 state TEXT NOT NULL,
                 result TEXT,
                 finish_reason TEXT,
                 finished_at INTEGER
             );
             CREATE INDEX requests_state ON requests(state, id);
             CREATE TABLE builds (
                 id INTEGER PRIMARY KEY,
                 request_id INTEGER NOT NULL REFERENCES requests(id),
                 builder TEXT NOT NULL,
                 worker TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 config_hash TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 result TEXT,
                 reason TEXT
             );
             CREATE INDEX builds_builder ON builds(builder, id);
             CREATE INDEX builds_request ON builds(request_id);
             CREATE TABLE steps (
                 build_id INTEGER NOT NULL REFERENCES builds(id),
                 idx INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 finished_at INTEGER,
                 result TEXT,
                 reason TEXT,
                 PRIMARY KEY (build_id, idx)
             );
             CREATE TABLE generations (
                 generation INTEGER PRIMARY KEY,
                 config_hash TEXT NOT NULL,
                 origin TEXT NOT NULL,
                 applied_at INTEGER NOT NULL
             );
             PRAGMA user_version = 1;",
        )?;
        tx.commit()?;
    }
    if version < 2 {
        // Version 2: builds keep the definition they run with (to finish
        // with it after a restart), and requests count their retries.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE builds ADD COLUMN definition TEXT;
             ALTER TABLE requests ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
             PRAGMA user_version = 2;",
        )?;
        tx.commit()?;
    }
    if version < 3 {
        // Version 3: request priorities (higher runs first), and the build
        // a collapsed request was merged into.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "ALTER TABLE requests ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE requests ADD COLUMN collapsed_into_build INTEGER;
             PRAGMA user_version = 3;",
        )?;
        tx.commit()?;
    }
    if version < 4 {
        // Version 4: files uploaded by `upload` steps, per build.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE artifacts (
                 build_id INTEGER NOT NULL REFERENCES builds(id),
                 name TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 sha256 TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (build_id, name)
             );
             PRAGMA user_version = 4;",
        )?;
        tx.commit()?;
    }
    if version < 5 {
        // Version 5: changes, the source stamp of requests (and which
        // changes each request builds), pollers' cursors, schedulers' state.
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE changes (
                 id INTEGER PRIMARY KEY,
                 repository TEXT NOT NULL,
                 branch TEXT NOT NULL,
                 revision TEXT NOT NULL,
                 files TEXT NOT NULL,
                 author TEXT,
                 comments TEXT,
                 when_ms INTEGER,
                 properties TEXT NOT NULL,
                 category TEXT,
                 added_at INTEGER NOT NULL
             );
             ALTER TABLE requests ADD COLUMN source TEXT;
             CREATE TABLE request_changes (
                 request_id INTEGER NOT NULL REFERENCES requests(id),
                 change_id INTEGER NOT NULL,
                 PRIMARY KEY (change_id, request_id)
             );
             CREATE INDEX request_changes_request ON request_changes(request_id);
             CREATE TABLE poller_cursors (
                 poller TEXT NOT NULL,
                 branch TEXT NOT NULL,
                 revision TEXT NOT NULL,
                 PRIMARY KEY (poller, branch)
             );
             CREATE TABLE scheduler_state (
                 name TEXT PRIMARY KEY,
                 kind TEXT NOT NULL,
                 state TEXT NOT NULL
             );
             PRAGMA user_version = 5;",
        )?;
        tx.commit()?;
    }
    Ok(())
}
