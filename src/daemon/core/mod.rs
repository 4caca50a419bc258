//! The master as a pure state machine: no I/O, no clock, no tokio.
//!
//! Every input is a method call that carries the current time when it needs
//! one; every decision comes out as [`Effect`]s that the shell drains with
//! [`Core::take_effects`] and carries out in order. Because the core has a
//! single owner, a reload is one event between two others and can never
//! interleave with dispatch. The simulator in `sim` drives this type with
//! random histories and checks the invariants of `docs/architecture.md` ("The invariants").

mod builds;
mod changes;
mod deadlines;
mod dispatch;
mod effects;
mod force_params;
mod links;
mod locks;
mod reload;
mod schedulers;
mod status;
mod step_ends;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

pub use builds::{MAX_PROPERTIES, MAX_PROPERTY_VALUE, valid_property_name};
pub use effects::{Effect, Record, StepStart, WorkerCmd};
pub use force_params::{ForcePropertyError, check_force};
pub use reload::restart_only_changes;
/// Branch and file globs, shared with the git pollers' `branches`.
pub(crate) use schedulers::glob_match;

use crate::config::{BuilderDef, Config, WorkerDef};
use crate::protocol::{BuildId, ChangeId, DrainMode, RequestId, SourceStamp, StepIndex};

/// A worker connection, numbered by the shell; a reconnecting worker gets a
/// new one, so messages from a dead link can never be taken for the new one's.
pub type LinkId = u64;

/// Why the core refused an input. The shell turns these into client errors
/// or log lines; none of them changes any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// No builder by that name in the current config.
    #[error("no builder named `{0}`")]
    UnknownBuilder(String),
    /// The builder was renamed by a reload.
    #[error("no builder named `{old}`: it was renamed to `{new}`")]
    RenamedBuilder {
        /// The name asked for.
        old: String,
        /// Its current name.
        new: String,
    },
    /// A property name that cannot become an environment variable.
    #[error("invalid property name `{0}`: use letters, digits and `_`, not starting with a digit")]
    BadPropertyName(String),
    /// A property value that cannot be passed to a step.
    #[error("invalid value for property `{name}`: {why}")]
    BadPropertyValue {
        /// The property.
        name: String,
        /// What is wrong with the value.
        why: String,
    },
    /// Too many properties on one request.
    #[error("too many properties: {0} (at most {MAX_PROPERTIES})")]
    TooManyProperties(usize),
    /// The builder's queue is full.
    #[error("the queue of builder `{builder}` is full ({max} requests, max_queued)")]
    QueueFull {
        /// The builder.
        builder: String,
        /// The limit.
        max: u32,
    },
    /// The request is not queued or running.
    #[error("request {0} is not queued or running")]
    RequestNotLive(RequestId),
    /// The build is not running.
    #[error("build {0} is not running")]
    BuildNotRunning(BuildId),
    /// A worker name the config does not know.
    #[error("no worker named `{0}` in the config")]
    UnknownWorker(String),
    /// A second connection for a worker that is connected already.
    #[error("a worker named `{0}` is already connected")]
    WorkerAlreadyConnected(String),
    /// A worker that a reload removed tries to come back.
    #[error("worker `{0}` was removed from the config and is draining")]
    WorkerRemoved(String),
    /// The master is draining for shutdown (a drain for maintenance still
    /// takes requests).
    #[error(
        "the master is draining for shutdown and takes no new requests (`bbctl shutdown --cancel` to resume)"
    )]
    Draining,
    /// A change that cannot be stored as it is.
    #[error("change {index} of the batch: {why}")]
    BadChange {
        /// Its place in the batch, from 1.
        index: usize,
        /// What is wrong.
        why: String,
    },
    /// Too many changes in one batch.
    #[error("too many changes in one batch: {0} (at most {max})", max = crate::protocol::change::MAX_BATCH_CHANGES)]
    TooManyChanges(usize),
    /// A source stamp that names what cannot be.
    #[error("invalid source stamp: {0}")]
    BadSource(String),
    /// A force's properties do not fit its builder's `force_properties`.
    #[error(transparent)]
    ForceProperty(#[from] ForcePropertyError),
    /// A link reported on a step it was not given.
    #[error("link {link} reported on build {build} step {step}, which it does not run")]
    NotYourStep {
        /// The reporting link.
        link: LinkId,
        /// The build named.
        build: BuildId,
        /// The step named.
        step: StepIndex,
    },
}

/// A request that is queued or running (finished ones live only in the store).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveRequest {
    /// The request's id.
    pub id: RequestId,
    /// Its builder's current name.
    pub builder: String,
    /// Why it was asked for.
    pub reason: Option<String>,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
    /// Its build, once dispatched.
    pub build: Option<BuildId>,
    /// How many of its builds ended as `retry`.
    pub retries: u32,
    /// Higher runs first; equal priorities run oldest first.
    pub priority: i32,
    /// When it was accepted (ms since the Unix epoch).
    pub submitted_at_ms: u64,
    /// What it builds, when it came from changes (or a rebuild of such a build).
    pub source: Option<SourceStamp>,
}

/// A build that is running.
#[derive(Debug, Clone)]
pub struct RunningBuild {
    /// The build's id.
    pub id: BuildId,
    /// The request it serves.
    pub request: RequestId,
    /// Its builder's current name (follows renames).
    pub builder: String,
    /// The worker it runs on.
    pub worker: String,
    /// The worker's connection its current step was given on; `None`
    /// while the worker is away (lost link, or a master restart).
    pub link: Option<LinkId>,
    /// While the worker is away: when the build gives up on it (ms).
    pub orphaned_until: Option<u64>,
    /// The definition it started with; a reload never changes it.
    pub def: Arc<BuilderDef>,
    /// The generation it started under.
    pub generation: u64,
    /// The step running now.
    pub step: StepIndex,
    /// Set when someone asked to stop it: the reason.
    pub stopping: Option<String>,
    /// When the build started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When its current step started.
    pub step_started_at_ms: u64,
    /// Waiting between steps for the next step's locks: that step, and
    /// the order it began to wait in (earlier waits are served first).
    pub pending_step: Option<(StepIndex, u64)>,
}

/// Who waits for a lock: a queued request (build locks) or a running
/// build between steps (step locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockWaiter {
    /// A queued request that could start but for its builder's locks.
    Request(RequestId),
    /// A running build waiting for its next step's locks.
    Step(BuildId),
}

/// What a waiter waits for, as the last dispatch pass found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockWait {
    /// The lock refusing it.
    pub lock: String,
    /// For a worker-scoped lock, the worker (the first one tried).
    pub worker: Option<String>,
    /// The builds holding it; empty when it is free but an earlier waiter
    /// comes first.
    pub held_by: Vec<BuildId>,
    /// Since when it waits (ms).
    pub since_ms: u64,
}

impl LockWait {
    /// `waiting for lock rig (held by build 12)`, as status shows it.
    pub fn describe(&self) -> String {
        let on = self
            .worker
            .as_ref()
            .map(|w| format!(" on worker {w}"))
            .unwrap_or_default();
        let by = match self.held_by.as_slice() {
            [] => "free, an earlier waiter comes first".to_string(),
            [one] => format!("held by build {one}"),
            many => format!(
                "held by builds {}",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("waiting for lock {}{on} ({by})", self.lock)
    }
}

/// A builder of the current config and its queue.
#[derive(Debug, Clone)]
struct BuilderState {
    def: Arc<BuilderDef>,
    queue: VecDeque<RequestId>,
}

/// A worker: configured, or removed but still finishing builds.
#[derive(Debug, Clone)]
struct WorkerState {
    def: WorkerDef,
    link: Option<LinkId>,
    running: BTreeSet<BuildId>,
    /// Why it takes no new builds; it is disconnected once idle.
    draining: Option<String>,
    /// Paused by `bbctl drain --worker`: takes no new builds, stays connected.
    paused: bool,
    /// Removed from the config: forgotten once idle.
    removed: bool,
}

/// A build that was running when the master stopped.
#[derive(Debug, Clone)]
pub struct RestoredBuild {
    /// The build.
    pub id: BuildId,
    /// Its request, running (so not in [`Restored::queued`]).
    pub request: LiveRequest,
    /// The worker it ran on.
    pub worker: String,
    /// The definition it started with.
    pub def: Arc<BuilderDef>,
    /// The generation it started under.
    pub generation: u64,
    /// The last step started.
    pub step: StepIndex,
    /// When the build started.
    pub started_at_ms: u64,
}

/// The state the master restarts from, as read back from the store.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// The generation of the last applied config.
    pub generation: u64,
    /// The hash of that config: a restart on the same file keeps the generation.
    pub config_hash: String,
    /// Queued requests, oldest first.
    pub queued: Vec<LiveRequest>,
    /// Builds that were running: they wait for their worker to come back.
    pub running: Vec<RestoredBuild>,
    /// The next request id to give.
    pub next_request: RequestId,
    /// The next build id to give.
    pub next_build: BuildId,
    /// The next change id to give.
    pub next_change: ChangeId,
    /// The schedulers' durable state, by scheduler name.
    pub schedulers: BTreeMap<String, SavedScheduler>,
}

/// A scheduler's state as the store kept it ([`Record::SchedulerState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedScheduler {
    /// The kind that wrote it.
    pub kind: String,
    /// The kind's state, as JSON.
    pub state: String,
}

/// The master's whole scheduling state.
#[derive(Debug, Clone)]
pub struct Core {
    config: Arc<Config>,
    generation: u64,
    builders: BTreeMap<String, BuilderState>,
    workers: BTreeMap<String, WorkerState>,
    requests: HashMap<RequestId, LiveRequest>,
    builds: BTreeMap<BuildId, RunningBuild>,
    links: HashMap<LinkId, String>,
    next_request: RequestId,
    next_build: BuildId,
    next_change: ChangeId,
    /// Draining for maintenance (`bbctl drain`): requests queue, no build starts.
    maintenance: bool,
    /// Draining for shutdown: no new requests, no new builds.
    shutdown: bool,
    /// Stops and resumes, for the master's own deadlines.
    deadlines: deadlines::Deadlines,
    /// The schedulers and their state.
    schedulers: schedulers::Schedulers,
    /// Pending changes the start dropped (a scheduler removed or narrowed
    /// while the master was down), for the shell to log.
    dropped_at_start: Vec<crate::protocol::DroppedChanges>,
    /// Trigger steps' waits (a build's, not a scheduler's).
    timers: schedulers::timers::Timers,
    effects: Vec<Effect>,
    /// The locks in force and their holders (`locks.rs`).
    locks: locks::LockTable,
    /// Who waits for which lock, as the last dispatch pass found it.
    lock_waits: BTreeMap<LockWaiter, LockWait>,
    /// The order of step waits (see [`RunningBuild::pending_step`]).
    next_wait: u64,
    /// True while [`Core::new`] restores: no dispatch before re-adopted
    /// builds have re-claimed their locks.
    restoring: bool,
}

impl Core {
    /// A core for `config`, resuming from what the store kept. Requests of
    /// builders that no longer exist are cancelled at once (see `reload`).
    pub fn new(config: Arc<Config>, restored: Restored, now_ms: u64) -> Self {
        let mut saved = restored.schedulers.clone();
        let timers = schedulers::timers::Timers::split(&mut saved);
        let mut core = Core {
            config: Arc::new(Config {
                builders: vec![],
                workers: vec![],
                schedulers: vec![],
                hash: restored.config_hash.clone(),
                ..(*config).clone()
            }),
            generation: restored.generation,
            builders: BTreeMap::new(),
            workers: BTreeMap::new(),
            requests: HashMap::new(),
            builds: BTreeMap::new(),
            links: HashMap::new(),
            next_request: restored.next_request.max(1),
            next_build: restored.next_build.max(1),
            next_change: restored.next_change.max(1),
            maintenance: false,
            shutdown: false,
            deadlines: Default::default(),
            schedulers: schedulers::Schedulers::restored(saved),
            dropped_at_start: Vec::new(),
            timers,
            effects: Vec::new(),
            locks: Default::default(),
            lock_waits: BTreeMap::new(),
            next_wait: 0,
            restoring: true,
        };
        // Queued requests go back under the builders they were queued for;
        // builders the config does not have are filled in so that the
        // first apply below treats them like any reload would.
        for req in restored.queued {
            let builder = req.builder.clone();
            core.builders
                .entry(builder.clone())
                .or_insert_with(|| BuilderState {
                    def: Arc::new(BuilderDef {
                        name: builder.clone(),
                        ..BuilderDef::default()
                    }),
                    queue: VecDeque::new(),
                });
            let id = req.id;
            core.requests.insert(id, req);
            core.enqueue(&builder, id);
        }
        // Start from the config but keep the restored queues.
        let report = core.apply_config(Arc::clone(&config), now_ms, false);
        core.dropped_at_start = report.changes_dropped;
        // Builds that were running wait for their worker to come back
        // within the grace period; a worker the config no longer has
        // cannot, so those are retried at once.
        let deadline = now_ms + config.master.worker_grace.as_millis() as u64;
        for b in restored.running {
            core.requests.insert(b.request.id, b.request.clone());
            core.builds.insert(
                b.id,
                RunningBuild {
                    id: b.id,
                    request: b.request.id,
                    builder: b.request.builder.clone(),
                    worker: b.worker.clone(),
                    link: None,
                    orphaned_until: Some(deadline),
                    def: b.def,
                    generation: b.generation,
                    step: b.step,
                    stopping: None,
                    started_at_ms: b.started_at_ms,
                    step_started_at_ms: b.started_at_ms,
                    pending_step: None,
                },
            );
            match core.workers.get_mut(&b.worker) {
                Some(w) if !w.removed => {
                    w.running.insert(b.id);
                    core.reclaim_locks(b.id, now_ms);
                }
                _ => core.retry_build(
                    b.id,
                    format!("worker `{}` is no longer configured", b.worker),
                    now_ms,
                ),
            }
        }
        core.restore_waits(now_ms);
        core.restoring = false;
        core.dispatch(now_ms);
        core
    }

    /// The config in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Pending changes that schedulers let go at the start because the
    /// config changed while the master was down (removed schedulers,
    /// narrowed filters): the shell logs them, as a reload reports them.
    pub fn dropped_at_start(&self) -> &[crate::protocol::DroppedChanges] {
        &self.dropped_at_start
    }

    /// The config generation in force.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Everything the shell must do now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// A queued or running request.
    pub fn live_request(&self, id: RequestId) -> Option<&LiveRequest> {
        self.requests.get(&id)
    }

    /// A running build.
    pub fn running_build(&self, id: BuildId) -> Option<&RunningBuild> {
        self.builds.get(&id)
    }

    /// All running builds, by id.
    pub fn running_builds(&self) -> impl Iterator<Item = &RunningBuild> {
        self.builds.values()
    }

    /// True while draining, for either reason: no build starts.
    pub fn is_draining(&self) -> bool {
        self.maintenance || self.shutdown
    }

    /// Which drain is in force: shutdown wins over maintenance, as it is
    /// the one that also refuses requests.
    pub fn drain_mode(&self) -> Option<DrainMode> {
        if self.shutdown {
            Some(DrainMode::Shutdown)
        } else if self.maintenance {
            Some(DrainMode::Maintenance)
        } else {
            None
        }
    }

    /// Start or stop one kind of drain. While either is in force no build
    /// starts and running builds finish; a drain for shutdown also refuses
    /// new requests, one for maintenance queues them. The two are
    /// independent: cancelling a shutdown drain leaves a maintenance drain
    /// in force.
    pub fn set_drain(&mut self, mode: DrainMode, on: bool, now_ms: u64) {
        match mode {
            DrainMode::Maintenance => self.maintenance = on,
            DrainMode::Shutdown => self.shutdown = on,
        }
        self.dispatch(now_ms);
    }

    /// Put a queued request in its builder's queue at its place: higher
    /// priority first, then oldest first.
    pub(super) fn enqueue(&mut self, builder: &str, id: RequestId) {
        let key = |requests: &HashMap<RequestId, LiveRequest>, r: RequestId| {
            (
                std::cmp::Reverse(requests.get(&r).map_or(0, |q| q.priority)),
                r,
            )
        };
        let mine = key(&self.requests, id);
        let Some(state) = self.builders.get_mut(builder) else {
            return;
        };
        let at = state
            .queue
            .partition_point(|r| key(&self.requests, *r) < mine);
        state.queue.insert(at, id);
    }

    /// The worker name behind a link, if the link is live.
    pub fn link_worker(&self, link: LinkId) -> Option<&str> {
        self.links.get(&link).map(String::as_str)
    }

    fn record(&mut self, record: Record) {
        self.effects.push(Effect::Record(record));
    }
}
