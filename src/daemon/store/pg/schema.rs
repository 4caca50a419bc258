//! The PostgreSQL schema: the migrations from an empty database to
//! [`PG_SCHEMA_VERSION`], the counterpart of `../schema.rs`.
//!
//! The tables and columns are SQLite's (version 5) under the same names,
//! with BIGINT for every integer and TEXT for the JSON columns (encoded by
//! `../rows.rs` for both backends), plus the leadership tables of
//! docs/standby.md: `bb_leader` (one row: the epoch, the leader, its
//! lease) and `bb_masters`. The version is kept in `bb_schema`.
//!
//! Two masters may start at once: a migration runs in one transaction
//! under `pg_advisory_xact_lock(MIGRATION_LOCK)`, so the second waits for
//! the first and then finds the schema current. PostgreSQL's DDL is
//! transactional: a migration that fails leaves nothing behind.

use tokio_postgres::Client;

use super::PgFail;

/// The schema version this program writes; see [`migrate`].
pub const PG_SCHEMA_VERSION: i64 = 1;

/// The advisory lock key migrations take ("bbmi").
pub const MIGRATION_LOCK: i64 = 0x6262_6d69;

/// Version 1: SQLite's schema version 5, and the leadership tables.
const VERSION_1: &str = "
    CREATE TABLE requests (
        id BIGINT PRIMARY KEY,
        builder TEXT NOT NULL,
        reason TEXT,
        properties TEXT NOT NULL,
        submitted_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        result TEXT,
        finish_reason TEXT,
        finished_at BIGINT,
        retries BIGINT NOT NULL DEFAULT 0,
        priority BIGINT NOT NULL DEFAULT 0,
        collapsed_into_build BIGINT,
        source TEXT
    );
    CREATE INDEX requests_state ON requests(state, id);
    CREATE TABLE builds (
        id BIGINT PRIMARY KEY,
        request_id BIGINT NOT NULL REFERENCES requests(id),
        builder TEXT NOT NULL,
        worker TEXT NOT NULL,
        generation BIGINT NOT NULL,
        config_hash TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        result TEXT,
        reason TEXT,
        definition TEXT
    );
    CREATE INDEX builds_builder ON builds(builder, id);
    CREATE INDEX builds_request ON builds(request_id);
    CREATE INDEX builds_running ON builds(id) WHERE finished_at IS NULL;
    CREATE TABLE steps (
        build_id BIGINT NOT NULL REFERENCES builds(id),
        idx BIGINT NOT NULL,
        name TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        result TEXT,
        reason TEXT,
        PRIMARY KEY (build_id, idx)
    );
    CREATE TABLE generations (
        generation BIGINT PRIMARY KEY,
        config_hash TEXT NOT NULL,
        origin TEXT NOT NULL,
        applied_at BIGINT NOT NULL
    );
    CREATE TABLE artifacts (
        build_id BIGINT NOT NULL REFERENCES builds(id),
        name TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (build_id, name)
    );
    CREATE TABLE changes (
        id BIGINT PRIMARY KEY,
        repository TEXT NOT NULL,
        branch TEXT NOT NULL,
        revision TEXT NOT NULL,
        files TEXT NOT NULL,
        author TEXT,
        comments TEXT,
        when_ms BIGINT,
        properties TEXT NOT NULL,
        category TEXT,
        added_at BIGINT NOT NULL
    );
    CREATE TABLE request_changes (
        request_id BIGINT NOT NULL REFERENCES requests(id),
        change_id BIGINT NOT NULL,
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
    CREATE TABLE bb_leader (
        id INT PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL DEFAULT 0,
        master TEXT,
        address TEXT,
        backend_pid INT,
        expires_at TIMESTAMPTZ,
        config_generation BIGINT,
        config_hash TEXT
    );
    INSERT INTO bb_leader (id) VALUES (1);
    CREATE TABLE bb_masters (
        name TEXT PRIMARY KEY,
        address TEXT,
        role TEXT NOT NULL,
        epoch BIGINT,
        pid INT,
        started_at TIMESTAMPTZ,
        heartbeat_at TIMESTAMPTZ
    );
";

/// Bring the schema to [`PG_SCHEMA_VERSION`] in one transaction under
/// the migration lock. A database from a newer program is refused.
pub(super) async fn migrate(client: &mut Client) -> Result<(), PgFail> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS bb_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = tx
        .query_opt("SELECT version FROM bb_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if version > PG_SCHEMA_VERSION {
        return Err(PgFail::Refused(format!(
            "schema version {version} is newer than this bbmaster understands \
             ({PG_SCHEMA_VERSION}); use a newer bbmaster"
        )));
    }
    if version < 1 {
        tx.batch_execute(VERSION_1).await?;
    }
    if version == 0 {
        tx.execute(
            "INSERT INTO bb_schema (version) VALUES ($1)",
            &[&PG_SCHEMA_VERSION],
        )
        .await?;
    } else if version < PG_SCHEMA_VERSION {
        tx.execute("UPDATE bb_schema SET version = $1", &[&PG_SCHEMA_VERSION])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
