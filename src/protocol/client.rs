//! Messages between `bbctl` (or any control client) and the master.
//!
//! A client sends [`ClientRequest`]s, each with an id; the master answers
//! each with one [`ServerMsg::Response`] carrying the same id. A
//! [`Request::Stream`] is answered with any number of [`ServerMsg::Item`]s
//! and then a final response, so one connection can follow a build live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::change::{ChangeId, ChangeInfo, NewChange, SourceStamp};
use super::views::{
    BuildDetail, BuildSummary, QueuedStatus, ReloadReport, RequestInfo, StatusFilter, StatusReply,
    WorkerDetail,
};
use super::{BuildId, BuildResult, RequestId, StepIndex, StepResult};

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Chosen by the client; echoed in the answer.
    pub id: u64,
    /// What is asked.
    pub body: Request,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Master, builders, queues, workers.
    Status(StatusFilter),
    /// Queue a build request.
    ForceBuild {
        /// The builder to build.
        builder: String,
        /// Why, shown in history.
        reason: Option<String>,
        /// Properties, given to steps as `BB_PROP_<NAME>`.
        properties: BTreeMap<String, String>,
        /// Higher runs first; equal priorities run oldest first.
        #[serde(default)]
        priority: i32,
        /// What to build (`bbctl rebuild` of a build that had one).
        #[serde(default)]
        source: Option<SourceStamp>,
    },
    /// Store a change (`bbctl sendchange`): schedulers that take it may
    /// start builds.
    SendChange {
        /// The change.
        change: NewChange,
    },
    /// Stored changes, newest first, with the builds each started.
    Changes {
        /// At most this many.
        limit: u32,
    },
    /// Queued requests in the order they will run.
    Queue {
        /// Only this builder's queue.
        builder: Option<String>,
    },
    /// Workers with their connection details.
    Workers,
    /// Time a round trip through a worker.
    Ping {
        /// The worker.
        worker: String,
    },
    /// Stop (or resume) starting builds, on the whole master or one worker;
    /// running builds finish.
    Drain {
        /// One worker only; the whole master when `None`.
        worker: Option<String>,
        /// `true` to drain, `false` to undrain.
        drain: bool,
    },
    /// Finished and running builds, newest first.
    Builds {
        /// Only this builder's builds.
        builder: Option<String>,
        /// At most this many.
        limit: u32,
    },
    /// One build with its steps.
    Build {
        /// The build.
        build: BuildId,
    },
    /// One request: queued, running or finished.
    RequestInfo {
        /// The request.
        request: RequestId,
    },
    /// A build's output and lifecycle, possibly live.
    Stream(StreamRequest),
    /// Cancel a queued request (a running one is stopped).
    Cancel {
        /// The request.
        request: RequestId,
    },
    /// Stop a running build.
    Stop {
        /// The build.
        build: BuildId,
    },
    /// A build's artifacts (uploaded files).
    Artifacts {
        /// The build.
        build: BuildId,
    },
    /// One artifact's content: `artifact_begin`, `artifact_data` items,
    /// then `stream_end`.
    Artifact {
        /// The build.
        build: BuildId,
        /// The artifact's name.
        name: String,
    },
    /// The master's event stream, until the client leaves: answered with
    /// [`ServerMsg::Event`]s and no final response.
    Events,
    /// Re-read the config file and apply it.
    Reload {
        /// Only report what would change.
        #[serde(default)]
        dry_run: bool,
        /// Read this file (an absolute path) instead of the master's own
        /// config file; once applied, later reloads read it too.
        #[serde(default)]
        config: Option<std::path::PathBuf>,
    },
    /// Delete the history that `keep_builds`/`keep_logs` no longer keep,
    /// now (the master also does it in the background).
    Prune {
        /// Only report what would be deleted.
        #[serde(default)]
        dry_run: bool,
    },
    /// Stop the master.
    Shutdown {
        /// How.
        #[serde(default)]
        mode: ShutdownMode,
    },
    /// Every lock with its holders and waiters (`bbctl locks`).
    Locks,
    /// Every master sharing the store, with its role and heartbeat
    /// (`bbctl masters`).
    Masters,
}

/// How the master stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    /// Exit at once, keeping queue and history; running steps stay with
    /// their workers, and the next master re-adopts them.
    #[default]
    Now,
    /// Start no new builds, let running ones finish, then exit.
    Drain,
    /// Stop draining and go on serving.
    Cancel,
}

/// What to stream and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRequest {
    /// Whose output.
    pub target: StreamTarget,
    /// Only this step (by name or index); all steps when `None`.
    pub step: Option<String>,
    /// Send output bytes (otherwise only lifecycle items, for `--wait`).
    pub output: bool,
    /// Keep streaming until the build ends (otherwise stop at what exists).
    pub follow: bool,
}

/// Which build a stream is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamTarget {
    /// The build of this request, once it starts.
    Request(RequestId),
    /// This build.
    Build(BuildId),
    /// The most recently started build.
    Latest,
}

/// Everything the master sends a client after the handshake.
// Frames are built, written and dropped at once; boxing the big answers
// would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMsg {
    /// The final answer to a request.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        result: Result<Reply, ErrorReply>,
    },
    /// One event of an event stream.
    Event {
        /// The events request's id.
        id: u64,
        /// The event.
        event: super::Event,
    },
    /// One item of a stream, before its final response.
    Item {
        /// The stream request's id.
        id: u64,
        /// The item.
        item: StreamItem,
    },
}

/// A successful answer.
// Built, written and dropped at once, like the frames that carry it.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Status`].
    Status(StatusReply),
    /// Answer to [`Request::ForceBuild`].
    Queued {
        /// The new request's id.
        request_id: RequestId,
    },
    /// Answer to [`Request::Builds`].
    Builds(Vec<BuildSummary>),
    /// Answer to [`Request::Build`].
    Build(BuildDetail),
    /// Answer to [`Request::RequestInfo`].
    Request(RequestInfo),
    /// Answer to [`Request::Stream`], once the stream is over.
    StreamEnd,
    /// Answer to [`Request::Cancel`], [`Request::Stop`], [`Request::Shutdown`].
    Done {
        /// What was done, in words.
        message: String,
    },
    /// Answer to [`Request::Reload`].
    Reloaded(ReloadReport),
    /// Answer to [`Request::Queue`].
    Queue(Vec<QueuedStatus>),
    /// Answer to [`Request::Workers`].
    Workers(Vec<WorkerDetail>),
    /// Answer to [`Request::Ping`].
    Pong {
        /// The worker.
        worker: String,
        /// The round trip, in microseconds.
        round_trip_us: u64,
    },
    /// Answer to [`Request::Artifacts`], by name.
    Artifacts(Vec<ArtifactInfo>),
    /// Answer to [`Request::Prune`].
    Pruned(PruneReport),
    /// Answer to [`Request::SendChange`]: the stored changes' ids.
    ChangesAdded {
        /// The ids, in the order sent.
        change_ids: Vec<ChangeId>,
    },
    /// Answer to [`Request::Changes`].
    Changes(Vec<ChangeInfo>),
    /// Answer to [`Request::Locks`].
    Locks(Vec<super::views::LockView>),
    /// Answer to [`Request::Masters`].
    Masters(super::MastersReply),
}

/// What a prune deleted (or, with dry-run, would delete).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Only reported; nothing was deleted.
    pub dry_run: bool,
    /// Builds deleted with their steps, logs and artifacts (`keep_builds`).
    pub builds_deleted: Vec<BuildId>,
    /// Builds whose logs were deleted, the builds kept (`keep_logs`).
    pub logs_deleted: Vec<BuildId>,
    /// Bytes of logs and artifacts freed on disk.
    pub bytes_freed: u64,
}

/// One stored artifact of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Its name: a relative path under the build's artifacts.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, 64 lowercase hex digits.
    pub sha256: String,
    /// When it was stored, in ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// A failed request: what kind of failure, and why in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    /// The class of failure; `bbctl` maps it to an exit code.
    pub kind: ErrorKind,
    /// A one-line explanation for a person.
    pub message: String,
}

/// Classes of request failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The id or name does not exist.
    NotFound,
    /// Refused: invalid input or config, or the master will not do it now.
    Rejected,
    /// The master failed to do it (storage, internal).
    Failed,
}

impl ErrorReply {
    /// A [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        ErrorReply {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }

    /// A [`ErrorKind::Rejected`] error.
    pub fn rejected(message: impl Into<String>) -> Self {
        ErrorReply {
            kind: ErrorKind::Rejected,
            message: message.into(),
        }
    }

    /// A [`ErrorKind::Failed`] error.
    pub fn failed(message: impl Into<String>) -> Self {
        ErrorReply {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }
}

/// One item of a build stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum StreamItem {
    /// The followed request got its build.
    BuildStarted {
        /// The build.
        build: BuildId,
        /// Its builder.
        builder: String,
        /// Its worker.
        worker: String,
    },
    /// A step began.
    StepStarted {
        /// The step's index.
        step: StepIndex,
        /// The step's name.
        name: String,
    },
    /// Output of a step.
    Output {
        /// The step's index.
        step: StepIndex,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A step ended.
    StepFinished {
        /// The step's index.
        step: StepIndex,
        /// How it ended.
        result: StepResult,
        /// Why, in words.
        reason: Option<String>,
    },
    /// The build ended.
    BuildFinished {
        /// The build.
        build: BuildId,
        /// Its result.
        result: BuildResult,
        /// Why, in words.
        reason: Option<String>,
    },
    /// The followed request was cancelled before it started.
    RequestCancelled {
        /// The request.
        request: RequestId,
        /// Why.
        reason: String,
    },
    /// An artifact's content follows (answer to [`Request::Artifact`]).
    ArtifactBegin {
        /// The artifact.
        info: ArtifactInfo,
    },
    /// A piece of the artifact, in order.
    ArtifactData {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}
