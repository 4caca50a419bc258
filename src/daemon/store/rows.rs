//! What both backends share between their SQL and the program's types:
//! how values are encoded into columns (JSON for properties, files, source
//! stamps and definitions; words for results) and how a row becomes a
//! struct. SQLite (`queries.rs`, `restore.rs`) and PostgreSQL (`pg/`)
//! select the same columns in the same order, so one mapper serves both.

use std::collections::BTreeMap;

use crate::daemon::core::LiveRequest;
use crate::protocol::{
    ArtifactInfo, BuildResult, BuildSummary, Change, NewChange, RequestInfo, SourceStamp,
    StepDetail,
};

/// A result row, read by column index: what the mappers need of
/// `rusqlite::Row` and `tokio_postgres::Row`. Integers are 64-bit on both
/// sides (SQLite's INTEGER, PostgreSQL's BIGINT).
pub(super) trait Columns {
    /// The driver's error.
    type Error;
    /// A non-null integer.
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    /// An integer or NULL.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A non-null text.
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    /// A text or NULL.
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
}

impl Columns for tokio_postgres::Row {
    type Error = tokio_postgres::Error;
    fn int(&self, i: usize) -> Result<i64, tokio_postgres::Error> {
        self.try_get(i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, tokio_postgres::Error> {
        self.try_get(i)
    }
    fn text(&self, i: usize) -> Result<String, tokio_postgres::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, tokio_postgres::Error> {
        self.try_get(i)
    }
}

/// Properties as stored: a JSON object.
pub(super) fn props_json(props: &BTreeMap<String, String>) -> String {
    serde_json::to_string(props).unwrap_or_else(|_| "{}".into())
}

/// Properties read back; unreadable ones are dropped rather than stopping
/// a read (the request still runs).
pub(super) fn props_of(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A change's files as stored: a JSON array.
pub(super) fn files_json(files: &[String]) -> String {
    serde_json::to_string(files).unwrap_or_else(|_| "[]".into())
}

/// A request's source stamp as stored (JSON), if it has one.
pub(super) fn source_json(
    source: Option<&SourceStamp>,
) -> Result<Option<String>, serde_json::Error> {
    source.map(serde_json::to_string).transpose()
}

/// A request's source stamp as stored (JSON); an unreadable one is
/// dropped rather than stopping the start (the request still runs).
pub(super) fn source_of(json: Option<String>) -> Option<SourceStamp> {
    json.and_then(|j| serde_json::from_str(&j).ok())
}

/// A result column (`success`, `retry`, ...; NULL while running).
pub(super) fn result_column(word: Option<String>) -> Option<BuildResult> {
    word.as_deref().and_then(BuildResult::parse)
}

/// The columns of a build's summary, in the order [`summary`] reads them;
/// the same SQL on both backends.
pub(super) const SUMMARY_COLUMNS: &str = "id, request_id, builder, worker, generation, config_hash, \
     result, reason, started_at, finished_at, \
     (SELECT source FROM requests WHERE requests.id = builds.request_id)";

/// A build's summary from the columns of [`SUMMARY_COLUMNS`].
pub(super) fn summary<R: Columns>(r: &R) -> Result<BuildSummary, R::Error> {
    Ok(BuildSummary {
        id: r.int(0)? as u64,
        request_id: r.int(1)? as u64,
        builder: r.text(2)?,
        worker: r.text(3)?,
        generation: r.int(4)? as u64,
        config_hash: r.text(5)?,
        result: result_column(r.opt_text(6)?),
        reason: r.opt_text(7)?,
        started_at_ms: r.int(8)? as u64,
        finished_at_ms: r.opt_int(9)?.map(|v| v as u64),
        source: source_of(r.opt_text(10)?),
    })
}

/// One step from `idx, name, started_at, finished_at, result, reason`.
pub(super) fn step<R: Columns>(r: &R) -> Result<StepDetail, R::Error> {
    Ok(StepDetail {
        index: r.int(0)? as u32,
        name: r.text(1)?,
        started_at_ms: r.int(2)? as u64,
        finished_at_ms: r.opt_int(3)?.map(|v| v as u64),
        result: result_column(r.opt_text(4)?),
        reason: r.opt_text(5)?,
        log_bytes: 0,
    })
}

/// One request from `id, builder, state, result, finish_reason, build`.
pub(super) fn request_info<R: Columns>(r: &R) -> Result<RequestInfo, R::Error> {
    Ok(RequestInfo {
        id: r.int(0)? as u64,
        builder: r.text(1)?,
        state: r.text(2)?,
        result: result_column(r.opt_text(3)?),
        reason: r.opt_text(4)?,
        build: r.opt_int(5)?.map(|v| v as u64),
    })
}

/// One artifact from `name, size, sha256, created_at`.
pub(super) fn artifact<R: Columns>(r: &R) -> Result<ArtifactInfo, R::Error> {
    Ok(ArtifactInfo {
        name: r.text(0)?,
        size: r.int(1)? as u64,
        sha256: r.text(2)?,
        created_at_ms: r.int(3)? as u64,
    })
}

/// The columns of a change, in the order [`change`] reads them.
pub(super) const CHANGE_COLUMNS: &str = "id, repository, branch, revision, files, author, \
     comments, when_ms, properties, category, added_at";

/// One change from the columns of [`CHANGE_COLUMNS`].
pub(super) fn change<R: Columns>(r: &R) -> Result<Change, R::Error> {
    Ok(Change {
        id: r.int(0)? as u64,
        new: NewChange {
            repository: r.text(1)?,
            branch: r.text(2)?,
            revision: r.text(3)?,
            files: serde_json::from_str(&r.text(4)?).unwrap_or_default(),
            author: r.opt_text(5)?,
            comments: r.opt_text(6)?,
            when_ms: r.opt_int(7)?.map(|v| v as u64),
            properties: props_of(&r.text(8)?),
            category: r.opt_text(9)?,
        },
        at_ms: r.int(10)? as u64,
    })
}

/// The columns of a live request (of `requests r`), in the order
/// [`live_request`] reads them from `first` on.
pub(super) const LIVE_REQUEST_COLUMNS: &str =
    "r.id, r.builder, r.reason, r.properties, r.retries, r.priority, r.submitted_at, r.source";

/// A queued or running request from the columns of
/// [`LIVE_REQUEST_COLUMNS`], starting at column `first`.
pub(super) fn live_request<R: Columns>(r: &R, first: usize) -> Result<LiveRequest, R::Error> {
    Ok(LiveRequest {
        id: r.int(first)? as u64,
        builder: r.text(first + 1)?,
        reason: r.opt_text(first + 2)?,
        properties: props_of(&r.text(first + 3)?),
        build: None,
        retries: r.int(first + 4)? as u32,
        priority: r.int(first + 5)? as i32,
        submitted_at_ms: r.int(first + 6)? as u64,
        source: source_of(r.opt_text(first + 7)?),
    })
}
