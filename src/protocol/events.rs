//! The master's event stream: what `bbctl events` prints and what drives
//! `bbctl watch`.
//!
//! Every event carries the master's time and the config generation in
//! force when it happened. Events describe; they are not the truth: after
//! a gap (`lagged`), a client asks for `status` again.

use serde::{Deserialize, Serialize};

use super::{BuildId, BuildResult, RequestId, SourceStamp, StepIndex};

/// Why the whole master starts no new builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// `bbctl drain`: requests are still accepted and queued; none starts
    /// until `bbctl undrain`. The master stays up.
    #[default]
    Maintenance,
    /// `bbctl shutdown --drain`: no new requests, no new builds; the master
    /// exits once the running builds have finished.
    Shutdown,
}

impl DrainMode {
    /// The mode as `bbctl` prints it and JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainMode::Maintenance => "maintenance",
            DrainMode::Shutdown => "shutdown",
        }
    }
}

/// One thing that happened on the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, in ms since the Unix epoch (the master's clock).
    pub at_ms: u64,
    /// The config generation in force.
    pub generation: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of events; `event` in JSON names the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A build request was accepted.
    BuildQueued {
        /// The request.
        request: RequestId,
        /// Its builder.
        builder: String,
        /// What it builds (repository, branch, revision, changes), when
        /// its request came from changes or is a rebuild of such a build.
        #[serde(default)]
        source: Option<SourceStamp>,
    },
    /// A request got a build on a worker.
    BuildStarted {
        /// The build.
        build: BuildId,
        /// Its request.
        request: RequestId,
        /// Its builder.
        builder: String,
        /// Its worker.
        worker: String,
        /// What it builds, as in `BuildQueued`.
        #[serde(default)]
        source: Option<SourceStamp>,
    },
    /// A step was sent to its worker.
    StepStarted {
        /// The build.
        build: BuildId,
        /// The step's index.
        step: StepIndex,
        /// The step's name.
        name: String,
    },
    /// A step ended.
    StepFinished {
        /// The build.
        build: BuildId,
        /// The step's index.
        step: StepIndex,
        /// How.
        result: BuildResult,
        /// Why, in words.
        reason: Option<String>,
    },
    /// A build ended.
    BuildFinished {
        /// The build.
        build: BuildId,
        /// Its request.
        request: RequestId,
        /// How.
        result: BuildResult,
        /// Why, in words.
        reason: Option<String>,
        /// What it built, as in `BuildQueued`.
        #[serde(default)]
        source: Option<SourceStamp>,
    },
    /// A build was cut short by its worker's absence; its request is queued again.
    BuildRetried {
        /// The build.
        build: BuildId,
        /// Its request.
        request: RequestId,
        /// Why.
        reason: String,
    },
    /// A queued request was merged into an identical one that started.
    RequestSkipped {
        /// The request merged away.
        request: RequestId,
        /// The request that ran for it.
        into: RequestId,
        /// That request's build.
        build: BuildId,
    },
    /// A queued request was cancelled.
    RequestCancelled {
        /// The request.
        request: RequestId,
        /// Why.
        reason: String,
    },
    /// A worker connected and authenticated.
    WorkerConnected {
        /// The worker.
        worker: String,
    },
    /// A worker left: its link broke, or the master closed it (removed by
    /// a reload, credentials changed, drained). Every worker that leaves
    /// gets exactly one of these, so a consumer can track who is there.
    WorkerLost {
        /// The worker.
        worker: String,
        /// Why, in words: `connection lost`, `removed by reload`, ...
        #[serde(default)]
        reason: String,
    },
    /// A worker takes no new builds and will be disconnected once idle.
    WorkerDraining {
        /// The worker.
        worker: String,
    },
    /// A reload was applied.
    ReloadApplied {
        /// Generation before.
        generation_before: u64,
        /// Generation after.
        generation_after: u64,
        /// The new config's hash.
        config_hash: String,
    },
    /// A reload was refused; nothing changed.
    ReloadRejected {
        /// Why (file:line:column and reason).
        error: String,
    },
    /// The master started or stopped draining, for maintenance (`bbctl
    /// drain`) or for shutdown (`bbctl shutdown --drain`).
    MasterDraining {
        /// Draining now?
        draining: bool,
        /// Which drain started or ended.
        #[serde(default)]
        mode: DrainMode,
    },
    /// A worker drained with `bbctl drain --worker` takes builds again.
    WorkerUndrained {
        /// The worker.
        worker: String,
    },
    /// The first event of every subscription: from here on, nothing is
    /// missed (`bbctl` consumes it; it is not printed).
    Subscribed,
    /// This client fell behind and missed events: ask for `status` again.
    Lagged {
        /// How many events were missed.
        missed: u64,
    },
    /// A change was stored (`bbctl sendchange`, a poller, a webhook); the
    /// builds its schedulers start come after it.
    ChangeAdded {
        /// The change's id.
        change: crate::protocol::ChangeId,
        /// Its repository.
        repository: String,
        /// Its branch.
        branch: String,
        /// Its revision.
        revision: String,
        /// Who wrote it, if the source said.
        #[serde(default)]
        author: Option<String>,
        /// Who sent it: `uid:1000` (a local user's `bbctl sendchange`),
        /// `poller:NAME`, `hook:NAME`, `token:NAME`, ...
        sent_by: String,
    },
}
