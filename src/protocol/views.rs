//! What the master shows a client: the status, worker, build, step and
//! reload views carried by [`super::Reply`]. Kept apart from the requests
//! and replies themselves ([`super::client`]), which only name them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BuildId, BuildResult, RequestId, StepIndex, StepResult};

/// The disk the master's state uses, as last measured (off the master
/// loop, by the retention task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Step logs (`<state_dir>/logs`).
    pub logs_bytes: u64,
    /// Uploaded artifacts (`<state_dir>/artifacts`).
    pub artifacts_bytes: u64,
    /// The database with its WAL (`master.db*`).
    pub db_bytes: u64,
    /// When it was measured, in ms since the Unix epoch.
    pub measured_at_ms: u64,
}

/// Answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The master's process id.
    pub master_pid: u32,
    /// When the master started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The master's clock now, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The config generation in force.
    pub generation: u64,
    /// The hash of the config in force.
    pub config_hash: String,
    /// Where the config in force came from.
    pub config_origin: String,
    /// Every builder.
    pub builders: Vec<BuilderStatus>,
    /// Every configured worker.
    pub workers: Vec<WorkerStatus>,
    /// Every running build with its current step.
    #[serde(default)]
    pub running: Vec<RunningStatus>,
    /// The master is draining (for maintenance or shutdown): no build starts.
    #[serde(default)]
    pub draining: bool,
    /// Which drain, while draining: `maintenance` (`bbctl drain`: requests
    /// are still queued) or `shutdown` (`shutdown --drain`: they are refused).
    #[serde(default)]
    pub drain_mode: Option<super::DrainMode>,
    /// Builders in all, before filtering.
    #[serde(default)]
    pub builders_total: u32,
    /// Queued requests in all, before filtering.
    #[serde(default)]
    pub queued_total: u32,
    /// Disk used by logs, artifacts and the database; `None` until first
    /// measured (just after start).
    #[serde(default)]
    pub disk: Option<DiskUsage>,
    /// The TCP listeners for remote workers; `None` without
    /// `worker_listen`.
    #[serde(default)]
    pub tls: Option<TlsStatus>,
    /// The git pollers (`[[poller]]`), by name.
    #[serde(default)]
    pub pollers: Vec<PollerView>,
    /// Requests and builds waiting for a lock, longest wait first.
    #[serde(default)]
    pub lock_waits: Vec<LockWaiterView>,
    /// The IRC bot; `None` without `[irc]`.
    #[serde(default)]
    pub irc: Option<IrcStatus>,
    /// Leadership among masters on a PostgreSQL store: this master's
    /// role and who leads; `None` on SQLite (one master).
    #[serde(default)]
    pub leadership: Option<super::LeadershipStatus>,
}

/// One git poller in `status`: how its last poll went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollerView {
    /// Its name.
    pub name: String,
    /// The repository it polls.
    pub repository: String,
    /// When its last poll started, ms since the Unix epoch; `None`: none yet.
    pub last_poll_ms: Option<u64>,
    /// How long that poll took, in ms.
    pub last_duration_ms: Option<u64>,
    /// Why that poll failed; `None`: it did not.
    pub last_error: Option<String>,
    /// The last time a push brought more commits than one poll takes.
    pub last_warning: Option<String>,
    /// Branches and tags it has a cursor for.
    pub refs: u64,
    /// Changes it stored since the master started.
    pub changes: u64,
}

/// The IRC bot, in `status` (docs/irc.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IrcStatus {
    /// `connecting`, `registering`, `connected`, or `waiting` (to
    /// connect again after a failure).
    pub state: String,
    /// `host:port` of the server.
    pub server: String,
    /// The nick in use; `None` while not registered.
    pub nick: Option<String>,
    /// The channels the bot is in.
    pub channels: Vec<String>,
    /// The round trip of the bot's last PING, in ms; `None` before one.
    pub lag_ms: Option<u64>,
    /// Why the last connection ended or failed; `None` before any did.
    pub last_error: Option<String>,
    /// When `state` last changed, ms since the Unix epoch.
    pub since_ms: u64,
}

/// The master's TCP listeners for remote workers, in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// The SHA-256 fingerprint of the certificate (`sha256:...`), as
    /// `bbworker --fingerprint` takes it; `None` with `allow_plaintext`.
    pub fingerprint: Option<String>,
    /// The addresses listened on, as bound (a port 0 shows its real port).
    pub listen: Vec<String>,
    /// Plain TCP (`allow_plaintext = true`), not TLS.
    pub plaintext: bool,
}

/// One worker in `workers`: its status plus what its connection told us.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerDetail {
    /// What `status` says of it.
    #[serde(flatten)]
    pub status: WorkerStatus,
    /// When its current connection was made, ms since the Unix epoch.
    pub connected_since_ms: Option<u64>,
    /// When the master last heard from it.
    pub last_seen_ms: Option<u64>,
    /// Its program and version.
    pub software: Option<String>,
    /// Its host name.
    pub host: Option<String>,
    /// Its process id (local socket peer).
    pub pid: Option<i32>,
    /// How it is connected: `unix`, `tcp` or `tls`; `None` when offline.
    #[serde(default)]
    pub transport: Option<String>,
    /// Its address (TCP and TLS).
    #[serde(default)]
    pub peer: Option<String>,
    /// The TLS version of its link ("TLSv1.3").
    #[serde(default)]
    pub tls_version: Option<String>,
    /// The last keepalive round trip, in ms; `None` until measured.
    #[serde(default)]
    pub ping_rtt_ms: Option<f64>,
    /// Where the master reads its secret (`secret_file`), for
    /// `bbctl worker-command`; `None` for an inline `secret` or a local
    /// worker.
    #[serde(default)]
    pub secret_file: Option<String>,
}

/// One queued request in `queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedStatus {
    /// The request.
    pub request: RequestId,
    /// Its builder.
    pub builder: String,
    /// Its place in the builder's queue, from 1.
    pub position: u32,
    /// Its priority (higher runs first).
    pub priority: i32,
    /// When it was accepted, ms since the Unix epoch.
    pub submitted_at_ms: u64,
    /// Why it was asked for.
    pub reason: Option<String>,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
    /// How many of its builds were cut short and retried.
    pub retries: u32,
}

/// Which builders `status` shows: filtered on the master, so a master with
/// thousands of builders answers a narrow question quickly. Workers and
/// running builds follow the builders shown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusFilter {
    /// A builder name, or a prefix ending in `*`.
    #[serde(default)]
    pub builder: Option<String>,
    /// Only builders in this state: `idle`, `waiting`, `building`, `removed`.
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many builders.
    #[serde(default)]
    pub limit: Option<u32>,
}

impl StatusFilter {
    /// Does a builder (by name and state) pass the filter?
    pub fn admits(&self, name: &str, state: &str) -> bool {
        let name_ok = match self.builder.as_deref() {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            },
        };
        name_ok && self.state.as_deref().is_none_or(|s| s == state)
    }

    /// Nothing filtered out.
    pub fn is_empty(&self) -> bool {
        *self == StatusFilter::default()
    }
}

/// One running build in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningStatus {
    /// The build.
    pub build: BuildId,
    /// Its request.
    pub request: RequestId,
    /// Its builder.
    pub builder: String,
    /// Its worker.
    pub worker: String,
    /// The current step's index.
    pub step: StepIndex,
    /// The current step's name.
    pub step_name: String,
    /// How many steps the build has.
    pub steps: u32,
    /// When the build started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// When the current step started.
    pub step_started_at_ms: u64,
    /// The generation it runs under.
    pub generation: u64,
    /// Its worker is away; the build waits for it (grace period).
    pub waiting_for_worker: bool,
    /// Between steps, waiting for the next step's locks:
    /// `waiting for lock rig (held by build 12)`.
    #[serde(default)]
    pub waiting_for_lock: Option<String>,
}

/// One builder in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuilderStatus {
    /// The builder's name.
    pub name: String,
    /// `building`, `waiting` (queued but no worker free), or `idle`.
    pub state: String,
    /// Queued requests.
    pub queued: u32,
    /// Running builds.
    pub running: u32,
    /// Ids of the running builds.
    pub running_builds: Vec<BuildId>,
    /// Workers this builder may use.
    pub workers: Vec<String>,
}

/// One worker in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// The worker's name.
    pub name: String,
    /// Whether it is connected and authenticated.
    pub connected: bool,
    /// Started by the master itself.
    pub local: bool,
    /// Taking no new builds (removed or re-keyed by a reload).
    pub draining: bool,
    /// Its build slots.
    pub max_builds: u32,
    /// Builders it serves (the worker-builder mapping).
    pub builders: Vec<String>,
    /// Ids of the builds it runs.
    pub running_builds: Vec<BuildId>,
    /// For a local worker: why it last failed to start or exited (shown
    /// while it is offline); `None` otherwise.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One line of `builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSummary {
    /// The build.
    pub id: BuildId,
    /// The request it serves.
    pub request_id: RequestId,
    /// Its builder.
    pub builder: String,
    /// The worker it ran on.
    pub worker: String,
    /// The config generation it started under.
    pub generation: u64,
    /// The hash of that config.
    pub config_hash: String,
    /// `None` while running.
    pub result: Option<BuildResult>,
    /// Why it ended so, in words.
    pub reason: Option<String>,
    /// Start time, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// End time, ms since the Unix epoch; `None` while running.
    pub finished_at_ms: Option<u64>,
    /// What it builds (repository, branch, revision, changes), when its
    /// request came from changes or a rebuild of such a build.
    #[serde(default)]
    pub source: Option<crate::protocol::SourceStamp>,
}

/// Answer to `build ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildDetail {
    /// The build's summary.
    #[serde(flatten)]
    pub summary: BuildSummary,
    /// The request's reason.
    pub request_reason: Option<String>,
    /// The request's properties.
    pub properties: BTreeMap<String, String>,
    /// The steps started so far.
    pub steps: Vec<StepDetail>,
}

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// The step's index.
    pub index: StepIndex,
    /// The step's name.
    pub name: String,
    /// Start time, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// End time; `None` while running.
    pub finished_at_ms: Option<u64>,
    /// How it ended; `None` while running.
    pub result: Option<StepResult>,
    /// Why, in words.
    pub reason: Option<String>,
    /// Bytes of output kept.
    pub log_bytes: u64,
}

/// Answer to `RequestInfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The request.
    pub id: RequestId,
    /// Its builder.
    pub builder: String,
    /// `queued`, `running`, `finished` or `cancelled`.
    pub state: String,
    /// Its build, once started.
    pub build: Option<BuildId>,
    /// Its result, once finished.
    pub result: Option<BuildResult>,
    /// Why it ended so.
    pub reason: Option<String>,
}

/// What a reload did (or, with dry-run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Generation before the reload.
    pub generation_before: u64,
    /// Generation after (equal to before when nothing changed).
    pub generation_after: u64,
    /// The new config's hash.
    pub config_hash: String,
    /// Builders that did not exist before.
    pub builders_added: Vec<String>,
    /// Builders whose definition changed.
    pub builders_changed: Vec<String>,
    /// Builders that are gone.
    pub builders_removed: Vec<String>,
    /// Builders renamed, as (old, new).
    pub builders_renamed: Vec<(String, String)>,
    /// Workers that did not exist before.
    pub workers_added: Vec<String>,
    /// Workers whose definition changed.
    pub workers_changed: Vec<String>,
    /// Workers that are gone.
    pub workers_removed: Vec<String>,
    /// Workers still finishing builds before they are disconnected.
    pub workers_draining: Vec<String>,
    /// Queued requests moved to a renamed builder.
    pub requests_moved: Vec<RequestId>,
    /// Queued requests cancelled because their builder is gone.
    pub requests_cancelled: Vec<RequestId>,
    /// Builds still running under an older generation.
    pub builds_on_old_generations: Vec<BuildId>,
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Warnings about the new config (valid but risky or empty), each a
    /// line `file[:line:column]: warning: ...`; `bbctl reload` prints them
    /// on stderr.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Schedulers that did not exist before.
    #[serde(default)]
    pub schedulers_added: Vec<String>,
    /// Schedulers whose definition changed (they keep their state).
    #[serde(default)]
    pub schedulers_changed: Vec<String>,
    /// Schedulers that are gone.
    #[serde(default)]
    pub schedulers_removed: Vec<String>,
    /// Schedulers renamed, as (old, new): their state moved.
    #[serde(default)]
    pub schedulers_renamed: Vec<(String, String)>,
    /// Changes that were waiting in a scheduler that no longer takes them
    /// (removed, changed kind, or a filter that no longer matches): no
    /// build will be started for them by that scheduler.
    #[serde(default)]
    pub changes_dropped: Vec<DroppedChanges>,
    /// Requests and builds that were waiting for a lock the new config
    /// removed (`request r5 (lock rig)`): they now start as soon as
    /// nothing else blocks them.
    #[serde(default)]
    pub lock_waiters_released: Vec<String>,
}

/// Changes a reload dropped from one scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DroppedChanges {
    /// The scheduler (its name before the reload).
    pub scheduler: String,
    /// The changes, by id.
    pub changes: Vec<crate::protocol::ChangeId>,
}

/// One lock instance in `bbctl locks`: a `[[lock]]` (or, for
/// `scope = "worker"`, the lock on one worker) with its holders and waiters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The lock's name.
    pub name: String,
    /// `master` or `worker`.
    pub scope: String,
    /// For a worker-scoped lock, the worker; `None` for a master-wide lock.
    pub worker: Option<String>,
    /// Its capacity now (0 for a lock a reload removed that is still held).
    pub max: u32,
    /// False for a lock a reload removed that lives on until released.
    pub configured: bool,
    /// Who holds it, oldest first.
    pub holders: Vec<LockHolderView>,
    /// Who waits for it, longest wait first.
    pub waiters: Vec<LockWaiterView>,
}

/// One hold of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolderView {
    /// The build holding it.
    pub build: BuildId,
    /// Its builder.
    pub builder: String,
    /// For a step lock, the step's name; `None` for a build lock.
    pub step: Option<String>,
    /// `exclusive` or `counting`.
    pub access: String,
    /// The weight of a counting hold (0 for exclusive).
    pub weight: u32,
    /// Since when it is held (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A request or build waiting for a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWaiterView {
    /// The lock it waits for.
    pub lock: String,
    /// For a worker-scoped lock, the worker.
    pub worker: Option<String>,
    /// The queued request waiting for its build locks, if that is what waits.
    pub request: Option<RequestId>,
    /// The running build waiting for a step's locks, if that is what waits.
    pub build: Option<BuildId>,
    /// Its builder.
    pub builder: String,
    /// The builds holding the lock (empty: free, an earlier waiter first).
    pub held_by: Vec<BuildId>,
    /// Since when it waits (ms since the Unix epoch).
    pub since_ms: u64,
    /// How long it has waited, as of the master's clock when asked (ms).
    pub waited_ms: u64,
    /// `waiting for lock rig (held by build 12)`.
    pub waiting: String,
}
