//! The front door's reads of the history (`builds`, `build`, `request`,
//! `artifacts`, a follower's snapshot), answered off the master loop.
//!
//! [`History`] runs each question on a blocking thread against a
//! [`HistoryReader`] (read-only connections of its own), never through
//! the loop: a slow query cannot delay dispatch, and the loop never waits
//! on a reader. A reader sees everything committed before it asks, and the
//! loop answers a client only after its batch is committed, so a client
//! that heard back from `force-build` finds its request here (see
//! docs/architecture.md, "The store").

use std::path::PathBuf;
use std::sync::Arc;

use crate::daemon::logs;
use crate::daemon::messages::Snapshot;
use crate::daemon::store::{HistoryReader, ReadError};
use crate::protocol::{
    ArtifactInfo, BuildDetail, BuildId, BuildSummary, ChangeInfo, ErrorReply, RequestId,
    RequestInfo, StreamTarget,
};

/// The history, for the front door: a reader and where step logs live
/// (for their sizes in `build`).
#[derive(Clone)]
pub struct History {
    reader: Arc<dyn HistoryReader>,
    logs: PathBuf,
}

impl History {
    /// Answer from `reader`, with log sizes read under `logs`.
    pub fn new(reader: Arc<dyn HistoryReader>, logs: PathBuf) -> Self {
        History { reader, logs }
    }

    /// Run `query` on a blocking thread.
    async fn ask<T: Send + 'static>(
        &self,
        query: impl FnOnce(&History) -> Result<T, ErrorReply> + Send + 'static,
    ) -> Result<T, ErrorReply> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || query(&me))
            .await
            .unwrap_or_else(|e| {
                Err(ErrorReply::failed(format!(
                    "reading the history failed: {e}"
                )))
            })
    }

    /// Builds, newest first, of one builder or of all. An empty answer
    /// for a builder may be a typo: the caller checks the name.
    pub async fn builds(
        &self,
        builder: Option<String>,
        limit: u32,
    ) -> Result<Vec<BuildSummary>, ErrorReply> {
        self.ask(move |h| h.reader.builds(builder.as_deref(), limit).map_err(failed))
            .await
    }

    /// One build with its steps and their log sizes.
    pub async fn build(&self, build: BuildId) -> Result<BuildDetail, ErrorReply> {
        self.ask(move |h| h.build_blocking(build)).await
    }

    /// One request.
    pub async fn request(&self, request: RequestId) -> Result<RequestInfo, ErrorReply> {
        self.ask(move |h| h.request_blocking(request)).await
    }

    /// A build's artifacts, or not found if there is no such build.
    pub async fn artifacts(&self, build: BuildId) -> Result<Vec<ArtifactInfo>, ErrorReply> {
        self.ask(move |h| {
            if h.reader.build(build).map_err(failed)?.is_none() {
                return Err(not_found_build(build));
            }
            h.reader.artifacts(build).map_err(failed)
        })
        .await
    }

    /// A poller's cursors: the last revision seen, by branch.
    pub async fn poller_cursors(
        &self,
        poller: String,
    ) -> Result<std::collections::BTreeMap<String, String>, ErrorReply> {
        self.ask(move |h| h.reader.poller_cursors(&poller).map_err(failed))
            .await
    }

    /// Changes, newest first, with the requests and builds of each.
    pub async fn changes(&self, limit: u32) -> Result<Vec<ChangeInfo>, ErrorReply> {
        self.ask(move |h| h.reader.changes(limit).map_err(failed))
            .await
    }

    /// Where a build (or a request's build, or the latest) stands, for a
    /// follower.
    pub async fn snapshot(&self, target: StreamTarget) -> Result<Snapshot, ErrorReply> {
        self.ask(move |h| {
            let (request, build) = match target {
                StreamTarget::Request(id) => {
                    let (info, build) = h
                        .reader
                        .request_and_build(id)
                        .map_err(failed)?
                        .ok_or_else(|| not_found_request(id))?;
                    // The build of a request exists once the request
                    // names it: there is no gap in one read.
                    let build = match (info.build, build) {
                        (Some(id), None) => return Err(not_found_build(id)),
                        (_, build) => build.map(|b| h.with_log_sizes(b)),
                    };
                    return Ok(Snapshot {
                        request: Some(info),
                        build,
                    });
                }
                StreamTarget::Build(id) => (None, Some(id)),
                StreamTarget::Latest => {
                    let latest = h
                        .reader
                        .latest_build()
                        .map_err(failed)?
                        .ok_or_else(|| ErrorReply::not_found("no builds yet"))?;
                    (None, Some(latest))
                }
            };
            let build = build.map(|b| h.build_blocking(b)).transpose()?;
            Ok(Snapshot { request, build })
        })
        .await
    }

    fn build_blocking(&self, build: BuildId) -> Result<BuildDetail, ErrorReply> {
        let detail = self
            .reader
            .build(build)
            .map_err(failed)?
            .ok_or_else(|| not_found_build(build))?;
        Ok(self.with_log_sizes(detail))
    }

    /// Fill in the size of each step's log, as it is now.
    fn with_log_sizes(&self, mut detail: BuildDetail) -> BuildDetail {
        let build = detail.summary.id;
        for step in &mut detail.steps {
            step.log_bytes = logs::log_len(&logs::step_log_path(&self.logs, build, step.index));
        }
        detail
    }

    fn request_blocking(&self, request: RequestId) -> Result<RequestInfo, ErrorReply> {
        self.reader
            .request(request)
            .map_err(failed)?
            .ok_or_else(|| not_found_request(request))
    }
}

fn failed(e: ReadError) -> ErrorReply {
    ErrorReply::failed(e.to_string())
}

fn not_found_build(build: BuildId) -> ErrorReply {
    ErrorReply::not_found(format!("no build {build}"))
}

fn not_found_request(request: RequestId) -> ErrorReply {
    ErrorReply::not_found(format!("no request r{request}"))
}
