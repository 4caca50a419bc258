//! What the core asks the I/O shell to do.
//!
//! The core never writes, sends or waits; it pushes [`Effect`]s, and the
//! shell carries them out in order. Every [`Record`] is both a database
//! write and a notice for clients following builds.
//!
//! What the core asks of a worker is a [`WorkerCmd`], in the core's own
//! words: the worker link turns it into the wire's messages and fills in
//! what only it knows (how much of a resumed step's log it already has), so
//! a new protocol version leaves the core and the simulator untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{BuilderDef, StepAction};

use crate::protocol::{
    BuildId, BuildResult, Change, PollerCursor, RequestId, SourceStamp, StepIndex, StepResult,
};

use super::LinkId;

/// One thing for the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write this to the store, then tell followers.
    Record(Record),
    /// Tell the worker on that link to do this.
    ToWorker {
        /// The worker's connection.
        link: LinkId,
        /// What it is to do.
        cmd: WorkerCmd,
    },
    /// Say goodbye to the worker on that link and close it.
    CloseLink {
        /// The worker's connection.
        link: LinkId,
        /// Why, sent to the worker and logged.
        reason: String,
    },
}

/// What the core asks of a worker about one step.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerCmd {
    /// Run this step now.
    Start(Box<StepStart>),
    /// Stop this step (the worker ends it and reports how).
    Stop {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
    },
    /// After a reconnect: the master takes back this step, which the
    /// worker said it holds; its output continues where the master's log
    /// ends (the link knows where that is).
    Resume {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
    },
    /// After a reconnect: the master no longer wants this step (its build
    /// ended meanwhile); the worker kills it and forgets it.
    Abandon {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
    },
}

/// Everything a worker needs to run one step, as the core decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepStart {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
    /// The builder's name (the step runs in the worker's dir of that name).
    pub builder: String,
    /// The step's name.
    pub name: String,
    /// What to run, as the build's definition says.
    pub action: StepAction,
    /// The complete environment additions (builder env, step env, BB_* vars).
    pub env: Vec<(String, String)>,
    /// The worker's own variables the step may see (the builder's `pass_env`).
    pub pass_env: Vec<String>,
    /// The step's timeout, if it has one.
    pub timeout: Option<Duration>,
    /// The most output the master keeps of it (`max_log_size`).
    pub max_output: Option<u64>,
}

/// A durable fact about requests and builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A request was accepted; it must be on disk before the client hears its id.
    RequestQueued {
        /// The request.
        request: RequestId,
        /// Its builder.
        builder: String,
        /// Why it was asked for.
        reason: Option<String>,
        /// Its properties.
        properties: BTreeMap<String, String>,
        /// Its priority (higher runs first).
        priority: i32,
        /// What it builds, if it came from changes (or a rebuild of such a build).
        source: Option<SourceStamp>,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
    /// A queued request will never run.
    RequestCancelled {
        /// The request.
        request: RequestId,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// A queued request was merged into an identical one that started
    /// (`collapse = true`); it ends as `skipped`.
    RequestCollapsed {
        /// The request merged away.
        request: RequestId,
        /// The request that ran for it.
        into: RequestId,
        /// That request's build.
        build: BuildId,
        /// When.
        at_ms: u64,
    },
    /// A request got its build.
    BuildStarted {
        /// The build.
        build: BuildId,
        /// The request it serves.
        request: RequestId,
        /// Its builder.
        builder: String,
        /// Its worker.
        worker: String,
        /// The config generation it runs under.
        generation: u64,
        /// The hash of that config.
        config_hash: String,
        /// The definition it runs with, kept so that it can finish with it
        /// after a master restart.
        definition: Arc<BuilderDef>,
        /// When.
        at_ms: u64,
    },
    /// A step was sent to the worker.
    StepStarted {
        /// The build.
        build: BuildId,
        /// The step's index.
        step: StepIndex,
        /// The step's name.
        name: String,
        /// When.
        at_ms: u64,
    },
    /// A step ended.
    StepFinished {
        /// The build.
        build: BuildId,
        /// The step's index.
        step: StepIndex,
        /// How.
        result: StepResult,
        /// Why, in words.
        reason: Option<String>,
        /// When.
        at_ms: u64,
    },
    /// A build ended; its request is finished with the same result.
    BuildFinished {
        /// The build.
        build: BuildId,
        /// The request it served.
        request: RequestId,
        /// How.
        result: BuildResult,
        /// Why, in words.
        reason: Option<String>,
        /// When.
        at_ms: u64,
    },
    /// A build was cut short by its worker's absence; its request is
    /// queued again (one more retry).
    BuildRetried {
        /// The build.
        build: BuildId,
        /// The request, queued again.
        request: RequestId,
        /// Why.
        reason: String,
        /// When.
        at_ms: u64,
    },
    /// A reload renamed a builder: its history and queue now carry the new name.
    BuilderRenamed {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// A reload was applied.
    GenerationApplied {
        /// The new generation.
        generation: u64,
        /// The config's hash.
        config_hash: String,
        /// Where the config came from.
        origin: String,
        /// When.
        at_ms: u64,
    },
    /// A change was accepted; it must be on disk before its source hears its id.
    ChangeAdded(Box<Change>),
    /// A poller's position on one branch (a `None` revision forgets it),
    /// in the same batch as the changes it found.
    PollerCursor(PollerCursor),
    /// A scheduler's durable state (pending changes, timers, last firing),
    /// written in the same batch as what changed it; `state: None` forgets
    /// it (the scheduler was removed or renamed). The state is the kind's
    /// own JSON: the store keeps it without reading it.
    SchedulerState {
        /// The scheduler's name.
        name: String,
        /// Its kind (`branch`, ...), so that a restart reads the state
        /// back only into a scheduler of the same kind.
        kind: String,
        /// The kind's state as JSON; `None` deletes it.
        state: Option<String>,
    },
}
