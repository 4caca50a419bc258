//! The validated configuration: what the rest of the program may rely on.
//!
//! Everything here has passed validation in [`super::parse_str`], so names are
//! unique, every worker a builder lists exists, and every builder has steps.
//! The core compares these values with `==` to decide what a reload changed,
//! so they carry only meaning, never positions in the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A whole `master.toml`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Settings of the master process itself (paths, limits).
    pub master: MasterSettings,
    /// Workers in file order; dispatch prefers earlier ones on ties.
    pub workers: Vec<WorkerDef>,
    /// Builders in file order.
    pub builders: Vec<BuilderDef>,
    /// Schedulers in file order: what starts builds from changes and clocks.
    pub schedulers: Vec<SchedulerDef>,
    /// `[[poller]]` entries in file order: git repositories the master
    /// watches for new commits (`docs/pollers.md`).
    pub pollers: Vec<PollerDef>,
    /// Where the config came from, for messages (a path or `<embedded default>`).
    pub origin: String,
    /// A short stable hash of the file's text, recorded with every build.
    pub hash: String,
    /// Risky but valid choices (a secret in a world-readable file), for
    /// `check-config` and the master's log.
    pub warnings: Vec<String>,
    /// `[[lock]]` entries in file order: the shared resources builds and
    /// steps take (`docs/locks.md`).
    pub locks: Vec<LockDef>,
    /// `[irc]`: the IRC bot, if configured.
    pub irc: Option<IrcSettings>,
}

/// The `[master]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSettings {
    /// Where the database, logs and default sockets live; `--state-dir` wins.
    pub state_dir: Option<PathBuf>,
    /// Control socket for `bbctl`; default `<state_dir>/control.sock`.
    pub control_socket: Option<PathBuf>,
    /// Socket workers connect to; default `<state_dir>/worker.sock`.
    pub worker_socket: Option<PathBuf>,
    /// How long the builds of a lost worker wait for it to come back (and
    /// how long builds running at a master restart wait for their worker)
    /// before they end as `retry`.
    pub worker_grace: Duration,
    /// How often master and worker ping each other; a link silent for
    /// three intervals is lost.
    pub keepalive: Duration,
    /// How many times a request is retried after `retry` builds before it
    /// ends as `exception`.
    pub max_retries: u32,
    /// Largest frame accepted before a peer's handshake is done.
    pub max_handshake_frame: usize,
    /// Largest frame accepted after the handshake.
    pub max_frame: usize,
    /// Output kept per step; the rest is dropped and the log says so.
    pub max_log_size: u64,
    /// Queued requests per builder; `force-build` beyond it is refused.
    pub max_queued: u32,
    /// Control connections at once; more are refused with a message.
    pub max_clients: u32,
    /// User ids besides the master's own that may use the control socket.
    pub allowed_uids: Vec<u32>,
    /// A group whose members may use the control socket.
    pub allowed_gid: Option<u32>,
    /// Where `download` steps take their files from; default
    /// `<state_dir>/files`.
    pub transfer_dir: Option<PathBuf>,
    /// How much history is kept (`keep_builds`, `keep_logs`, per builder
    /// too); applied by the master's background pruning and `bbctl prune`.
    pub retention: Retention,
    /// What a worker may cost the master: uploads, free space, deadlines.
    pub worker_limits: WorkerLimits,
    /// TCP addresses remote workers connect to (TLS unless
    /// `allow_plaintext`); empty: the Unix socket only.
    pub worker_listen: Vec<std::net::SocketAddr>,
    /// `tls_cert` and `tls_key`, read and checked; `None`: a self-signed
    /// certificate the master makes in `<state_dir>/tls`.
    pub tls_identity: Option<TlsIdentity>,
    /// The listeners speak plain TCP (a VPN, tests on loopback).
    pub allow_plaintext: bool,
    /// Workers must show a certificate of this CA naming them.
    pub client_ca: Option<ClientCa>,
    /// Where each remote worker's `secret_file` is, by worker name: for
    /// `bbctl worker-command`, which names the file (never the secret).
    pub worker_secret_files: BTreeMap<String, PathBuf>,
    /// `[http]`: the web pages and HTTP API; `None`: off.
    pub http: Option<HttpSettings>,
}

/// The `[http]` table (docs/http.md): where the web server listens and
/// who may write through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The address to bind (loopback unless the config says otherwise).
    pub listen: std::net::SocketAddr,
    /// How people reach it (behind a proxy): links in pages start with it.
    pub base_url: Option<String>,
    /// Honour `X-Forwarded-For`/`-Proto`/`-Host` (only behind a proxy).
    pub trust_proxy: bool,
    /// Serve HTTPS with the workers' listeners' certificate.
    pub tls: bool,
    /// Open HTTP connections at once; more wait to be accepted.
    pub max_connections: u32,
    /// Bearer tokens and what each may do.
    pub tokens: Vec<HttpToken>,
    /// Webhooks that add changes (`/hooks/NAME`).
    pub hooks: Vec<HttpHook>,
}

/// One `[[http.hook]]`: `POST /hooks/NAME`, signed with HMAC-SHA256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHook {
    /// Its name: the path `/hooks/NAME`, and the change source `hook:NAME`.
    pub name: String,
    /// Whose payloads it reads: `github`, `gitea` or `json`.
    pub kind: String,
    /// The HMAC secret (from `secret_file`); `Debug` never shows it.
    pub secret: Secret,
}

impl HttpSettings {
    /// `bbmaster --http ADDR` without an `[http]` table: read-only.
    pub fn quick(listen: std::net::SocketAddr) -> Self {
        HttpSettings {
            listen,
            base_url: None,
            trust_proxy: false,
            tls: false,
            max_connections: 256,
            tokens: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

/// One `[[http.token]]`: a bearer token (read from its `token_file`) and
/// the writes it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpToken {
    /// Its name: the principal in logs and in the history's reasons.
    pub name: String,
    /// The token itself; `Debug` never shows it.
    pub token: Secret,
    /// What it may do: `force`, `stop`, `cancel`.
    pub may: Vec<String>,
}

/// The listeners' certificate chain and key as read from `tls_cert` and
/// `tls_key`: kept in the config so that a reload that changes the files
/// is a change, and so that a bad file is a config error, not a late one.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// Where the chain was read (for messages).
    pub cert_file: PathBuf,
    /// Where the key was read (for messages).
    pub key_file: PathBuf,
    /// The chain, leaf first.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The private key (never shown by `Debug`).
    pub key: TlsKey,
}

/// A private key, compared by value and never printed.
pub struct TlsKey(pub rustls::pki_types::PrivateKeyDer<'static>);

impl Clone for TlsKey {
    fn clone(&self) -> Self {
        TlsKey(self.0.clone_key())
    }
}

impl PartialEq for TlsKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

impl Eq for TlsKey {}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// `client_ca`: the CA certificates worker certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    /// Where they were read.
    pub file: PathBuf,
    /// The CA certificates.
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// How much of the history a builder keeps; `None` keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keep {
    /// Finished builds kept (the newest ones); older ones are deleted with
    /// their steps, logs and artifacts.
    pub builds: Option<u32>,
    /// How long after it finished a build keeps its logs; the build itself
    /// stays in the history.
    pub logs: Option<Duration>,
}

/// The retention policy: `[master] keep_builds`/`keep_logs`, overridden
/// per builder by the same keys in `[[builder]]`. It lives with the
/// master's settings (not in [`BuilderDef`], which builds store as the
/// definition they run with) because it is about the history, not a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// `[master]`'s keys: for every builder without its own.
    pub default: Keep,
    /// A builder's own keys, by builder name; unset ones fall back to
    /// [`Retention::default`].
    pub builders: BTreeMap<String, Keep>,
}

impl Retention {
    /// What builder `name` keeps: its own keys over the master's.
    pub fn for_builder(&self, name: &str) -> Keep {
        let own = self.builders.get(name).copied().unwrap_or_default();
        Keep {
            builds: own.builds.or(self.default.builds),
            logs: own.logs.or(self.default.logs),
        }
    }

    /// Whether anything is ever pruned.
    pub fn prunes(&self) -> bool {
        self.default != Keep::default() || self.builders.values().any(|k| *k != Keep::default())
    }
}

/// Every value comes from [`super::defaults::DEFAULTS`], the table that
/// `master.toml(5)` is checked against.
impl Default for MasterSettings {
    fn default() -> Self {
        use super::defaults as d;
        MasterSettings {
            state_dir: None,
            control_socket: None,
            worker_socket: None,
            worker_grace: d::duration("master.worker_grace"),
            keepalive: d::duration("master.keepalive"),
            max_retries: d::count("master.max_retries"),
            max_handshake_frame: d::size("master.max_handshake_frame") as usize,
            max_frame: d::size("master.max_frame") as usize,
            max_log_size: d::size("master.max_log_size"),
            max_queued: d::count("master.max_queued"),
            max_clients: d::count("master.max_clients"),
            allowed_uids: Vec::new(),
            allowed_gid: None,
            transfer_dir: None,
            retention: Retention::default(),
            worker_limits: WorkerLimits::default(),
            worker_listen: Vec::new(),
            tls_identity: None,
            allow_plaintext: false,
            client_ca: None,
            worker_secret_files: BTreeMap::new(),
            http: None,
        }
    }
}

/// The limits that bound a worker, however compromised: it cannot fill the
/// master's disk beyond them nor keep a build running past the master's
/// own deadlines (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Largest uploaded file, whatever the step's `max_size` says.
    pub max_upload_size: u64,
    /// Bytes of artifacts one build may store, over all its steps.
    pub max_artifact_bytes_per_build: u64,
    /// Artifacts (files) one build may store, over all its steps.
    pub max_artifacts_per_build: u32,
    /// Free space the artifacts' file system keeps: an upload that would
    /// leave less is refused.
    pub min_free_space: u64,
    /// How long past a step's timeout, or past `bbctl stop`, the master
    /// waits for the worker to report the step's end before it ends the
    /// build itself and abandons the step.
    pub deadline_grace: Duration,
}

/// Every value comes from [`super::defaults::DEFAULTS`].
impl Default for WorkerLimits {
    fn default() -> Self {
        use super::defaults as d;
        WorkerLimits {
            max_upload_size: d::size("master.max_upload_size"),
            max_artifact_bytes_per_build: d::size("master.max_artifact_bytes_per_build"),
            max_artifacts_per_build: d::count("master.max_artifacts_per_build"),
            min_free_space: d::size("master.min_free_space"),
            deadline_grace: d::duration("master.deadline_grace"),
        }
    }
}

/// A `[[worker]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDef {
    /// Unique worker name, matched across reloads.
    pub name: String,
    /// Started and supervised by the master itself.
    pub local: bool,
    /// How many builds this worker runs at once (at least 1).
    pub max_builds: u32,
    /// The shared secret a remote worker proves; `None` for local workers,
    /// whose secret the master makes up at start.
    pub secret: Option<Secret>,
    /// For a local worker: the user it and its steps run as (the master
    /// must run as root); `None` runs it as the master's own user.
    pub user: Option<String>,
    /// `tags = ["linux", "arm64"]`: what builders' `worker_tags` match.
    pub tags: Vec<String>,
}

/// A worker secret; its `Debug` never shows the value, so logs stay clean.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A `[[builder]]` entry. Serializable because every build keeps the
/// definition it started with in the store, to finish with it after a
/// master restart whatever the config says by then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuilderDef {
    /// Unique builder name, matched across reloads.
    pub name: String,
    /// Names this builder had before; a reload moves their queue and history here.
    pub previous_names: Vec<String>,
    /// Workers allowed to run this builder's builds, in preference order.
    pub workers: Vec<String>,
    /// Environment given to every step of this builder.
    pub env: BTreeMap<String, String>,
    /// Variables of the worker's own environment its steps may see, beyond
    /// the fixed allow-list (steps start from a clean environment).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// The steps, run in order; never empty.
    pub steps: Vec<StepDef>,
    /// When a request starts, queued requests with the same properties
    /// are merged into it (they end as `skipped`, pointing to it).
    #[serde(default)]
    pub collapse: bool,
    /// Whether a build cut short by its worker's absence is run again
    /// (`retry`, up to `max_retries`). `false` for builds that must never
    /// run twice (deploys): such a build ends as `exception` instead.
    /// Definitions stored before this key existed read as `true`.
    #[serde(default = "retry_default")]
    pub retry: bool,
    /// The properties `bbctl force-build` may set, with their types and
    /// defaults; empty: any property (as before this key existed).
    #[serde(default)]
    pub force_properties: Vec<ForceProperty>,
    /// Locks a build takes before its first step and holds to its end.
    #[serde(default)]
    pub locks: Vec<LockClaim>,
    /// Tags an eligible worker must all carry (with `workers` too, a
    /// worker must be listed *and* carry them).
    #[serde(default)]
    pub worker_tags: Vec<String>,
    /// How the worker of a new build is picked among eligible free ones.
    #[serde(default)]
    pub worker_choice: WorkerChoice,
    /// At most this many builds of this builder run at once.
    #[serde(default)]
    pub max_running: Option<u32>,
}

fn retry_default() -> bool {
    true
}

impl Default for BuilderDef {
    fn default() -> Self {
        BuilderDef {
            name: String::new(),
            previous_names: Vec::new(),
            workers: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            steps: Vec::new(),
            collapse: false,
            retry: true,
            force_properties: Vec::new(),
            locks: Vec::new(),
            worker_tags: Vec::new(),
            worker_choice: WorkerChoice::default(),
            max_running: None,
        }
    }
}

/// A `[[builder.step]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepDef {
    /// Step name, unique within its builder.
    pub name: String,
    /// What to run.
    pub action: StepAction,
    /// Kill the step's process group after this long; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Environment for this step only, layered over the builder's.
    pub env: BTreeMap<String, String>,
    /// Locks taken just before this step starts and released when it ends.
    #[serde(default)]
    pub locks: Vec<LockClaim>,
}

/// How a step runs its command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepAction {
    /// `shell = "..."`: run with `/bin/sh -c`.
    Shell(String),
    /// `command = [...]`: run this argv directly, no shell.
    Command(Vec<String>),
    /// `upload = {...}`: worker files to `<state_dir>/artifacts/<build>/`.
    Upload(UploadSpec),
    /// `download = {...}`: a file of the transfer dir to the worker.
    Download(DownloadSpec),
    /// `git = {...}`: check the build's revision out into the work dir.
    Git(GitSpec),
    /// `trigger = {...}`: fire `triggerable` schedulers; run by the
    /// master itself, never sent to a worker.
    Trigger(super::TriggerSpec),
}

/// A `git` step: which repository, and how much of the old checkout stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitSpec {
    /// A URL or a path the worker's `git` can fetch from.
    pub repository: String,
    /// Whether untracked files of earlier builds stay.
    pub mode: GitMode,
    /// Also check out the submodules (recursively).
    pub submodules: bool,
}

/// How a `git` step treats the checkout an earlier build left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitMode {
    /// Fetch into the existing clone and check out: tracked files are
    /// reset, untracked and ignored files (build outputs) stay.
    Incremental,
    /// As incremental, then `git clean -ffdx`: the tree is exactly the
    /// revision's, as a fresh clone would be (the objects are reused).
    Full,
}

/// How long a `git` step may take when its step sets no `timeout`: a
/// fetch that hangs (a dead server, a prompt nobody answers) must end.
pub const GIT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One property a force may set (`[[builder.force_properties]]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForceProperty {
    /// The property's name (an environment variable name).
    pub name: String,
    /// What values it takes.
    pub kind: ForceKind,
    /// The value given when the force does not set it, in its normal
    /// text form (`"3"`, `"true"`); `None`: no default.
    pub default: Option<String>,
    /// A force must set it (only meaningful without a default).
    pub required: bool,
}

/// The type of a force property.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceKind {
    /// Any text.
    String,
    /// A whole number (i64), stored in its decimal form.
    Int,
    /// `true` or `false`.
    Bool,
    /// One of these values.
    Choice(Vec<String>),
}

impl ForceKind {
    /// The type's name as the config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            ForceKind::String => "string",
            ForceKind::Int => "int",
            ForceKind::Bool => "bool",
            ForceKind::Choice(_) => "choice",
        }
    }

    /// `value` in its normal form if it is one of this type's values, or
    /// why not.
    pub fn normalize(&self, value: &str) -> Result<String, String> {
        match self {
            ForceKind::String => Ok(value.to_owned()),
            ForceKind::Int => value
                .trim()
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("{value:?} is not a whole number")),
            ForceKind::Bool => match value.trim() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(format!("{value:?} is not `true` or `false`")),
            },
            ForceKind::Choice(choices) => {
                if choices.iter().any(|c| c == value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!(
                        "{value:?} is not one of {}",
                        choices
                            .iter()
                            .map(|c| format!("{c:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    }
}

/// A `[[poller]]` entry: a git repository the master polls for commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerDef {
    /// Unique name: the key of its durable cursors and of its mirror dir.
    pub name: String,
    /// A URL or a path the master's `git` can fetch from.
    pub repository: String,
    /// Branch name globs (`main`, `release/*`); `*` stays within one
    /// `/`-separated part, `**` crosses them.
    pub branches: Vec<String>,
    /// Also watch tags (a new or moved tag is a change on branch
    /// `refs/tags/NAME`).
    pub tags: bool,
    /// Time between the end of one poll and the start of the next.
    pub interval: Duration,
    /// How long one git command may run before it is killed.
    pub timeout: Duration,
}

/// An `upload` step: which worker files, how big at most, stored how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadSpec {
    /// A glob (`*`, `?` within one path component) or a directory, relative
    /// to the step's work dir; checked to hold no `..` and not be absolute.
    pub from: String,
    /// Largest file accepted, in bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// Permission bits of the stored files.
    pub mode: u32,
}

/// A `download` step: which master file, to where on the worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadSpec {
    /// A file relative to `[master] transfer_dir`.
    pub from: String,
    /// The destination, relative to the step's work dir.
    pub to: String,
    /// Largest file sent, in bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// Permission bits of the written file.
    pub mode: u32,
}

/// A `[[lock]]`: a shared resource with a capacity (`docs/locks.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDef {
    /// Unique lock name, matched across reloads.
    pub name: String,
    /// One lock for the whole master, or one per worker.
    pub scope: LockScope,
    /// Capacity: the sum of counting weights it admits at once (an
    /// exclusive claim takes it whole); per worker for `scope = "worker"`.
    pub max: u32,
    /// `worker_max = { box-2 = 2 }`: per-worker capacities of a
    /// worker-scoped lock, over `max`.
    pub worker_max: BTreeMap<String, u32>,
}

impl LockDef {
    /// The capacity of this lock's instance on `worker` (`None`: the
    /// master-wide instance).
    pub fn max_on(&self, worker: Option<&str>) -> u32 {
        worker
            .and_then(|w| self.worker_max.get(w).copied())
            .unwrap_or(self.max)
    }
}

/// Where a lock's capacity applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockScope {
    /// One lock shared by all workers.
    #[default]
    Master,
    /// One lock per worker, each with capacity `max`.
    Worker,
}

/// How a claim takes a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockAccess {
    /// Alone: no other holder at all.
    Exclusive,
    /// Shared, `weight` of the lock's `max`.
    Counting,
}

/// `locks = [{ name = "rig", access = "exclusive" }]` on a builder or a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockClaim {
    /// The lock's name.
    pub name: String,
    /// Exclusive or counting.
    pub access: LockAccess,
    /// How much of `max` a counting claim takes (1 unless set; 0 for
    /// exclusive claims, which take the whole lock).
    pub weight: u32,
}

/// `worker_choice`: which of the eligible free workers gets a new build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerChoice {
    /// The one running fewest builds; ties go to the earlier in the list.
    #[default]
    LeastBusy,
    /// One picked from the request id (deterministic: no random state).
    Random,
    /// The first free one in list order.
    InOrder,
}

impl Config {
    /// Look a lock up by name.
    pub fn lock(&self, name: &str) -> Option<&LockDef> {
        self.locks.iter().find(|l| l.name == name)
    }

    /// Look a builder up by its current name.
    pub fn builder(&self, name: &str) -> Option<&BuilderDef> {
        self.builders.iter().find(|b| b.name == name)
    }

    /// Look a scheduler up by its current name.
    pub fn scheduler(&self, name: &str) -> Option<&SchedulerDef> {
        self.schedulers.iter().find(|s| s.name == name)
    }

    /// Look a worker up by name.
    pub fn worker(&self, name: &str) -> Option<&WorkerDef> {
        self.workers.iter().find(|w| w.name == name)
    }
}

/// One `[[scheduler]]`: what starts builds on its own, and for which
/// builders. Compared with `==` by a reload (changed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerDef {
    /// Unique among schedulers; keys its durable state.
    pub name: String,
    /// Old names whose state (pending changes, timers) this one takes over.
    pub previous_names: Vec<String>,
    /// The builders a firing queues a request for (current names).
    pub builders: Vec<String>,
    /// What makes it fire, by kind.
    pub kind: SchedulerKind,
}

/// The kinds of scheduler, each with its own settings. A new kind adds a
/// variant here, its name in [`SchedulerKind::KINDS`], its keys in the
/// config schema and a module in `daemon/core/schedulers/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `kind = "branch"`: changes matching a filter, once the tree is stable.
    Branch(BranchFilter),
    /// `kind = "periodic"`: `every`.
    Periodic(super::TimedDef),
    /// `kind = "cron"`: `at` in `timezone`.
    Cron(super::TimedDef),
    /// `kind = "triggerable"`: fired by `trigger` steps only.
    Triggerable,
    /// `kind = "dependent"`: fires when the builds of one firing of
    /// `upstream` all succeeded, with the same source stamp.
    Dependent {
        /// The upstream scheduler's name.
        upstream: String,
    },
}

impl SchedulerKind {
    /// The kinds' names as written in `kind = "..."`, for messages.
    pub const KINDS: &'static [&'static str] =
        &["branch", "periodic", "cron", "triggerable", "dependent"];

    /// The kind's name as written in `kind = "..."`.
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::Branch(_) => "branch",
            SchedulerKind::Periodic(_) => "periodic",
            SchedulerKind::Cron(_) => "cron",
            SchedulerKind::Triggerable => "triggerable",
            SchedulerKind::Dependent { .. } => "dependent",
        }
    }

    /// The timing of a `periodic` or `cron` scheduler.
    pub fn timed(&self) -> Option<&super::TimedDef> {
        match self {
            SchedulerKind::Periodic(t) | SchedulerKind::Cron(t) => Some(t),
            _ => None,
        }
    }
}

/// A `branch` scheduler's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BranchFilter {
    /// Only changes of this repository (exactly as the source names it).
    pub repository: Option<String>,
    /// Branch globs (`*` within a path segment, `**` across); empty: all.
    pub branches: Vec<String>,
    /// File globs: a change touching none of them is not important (it is
    /// built with the next important one). Empty: every change is important.
    pub files: Vec<String>,
    /// How long no important change must arrive before it fires (0: at once).
    pub tree_stable: Duration,
}

/// The events a channel may be notified of (`notify`, `!notify on ...`).
pub const IRC_EVENTS: &[&str] = &[
    "started",
    "finished",
    "success",
    "failure",
    "exception",
    "cancelled",
    "fixed",
    "broken",
    "worker_lost",
];

/// `[irc]`: the IRC bot (docs/irc.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcSettings {
    /// The server's host name (also checked against its certificate).
    pub server: String,
    /// Its port.
    pub port: u16,
    /// TLS with the server's certificate verified.
    pub tls: bool,
    /// CAs to trust instead of the system's.
    pub tls_ca: Option<PathBuf>,
    /// The one certificate to trust (SHA-256), instead of any CA.
    pub tls_fingerprint: Option<[u8; 32]>,
    /// The nick wanted.
    pub nick: String,
    /// Nicks to try when it is taken.
    pub alt_nicks: Vec<String>,
    /// The server password (PASS).
    pub password: Option<Secret>,
    /// SASL PLAIN login.
    pub sasl: Option<IrcSasl>,
    /// The NickServ password (when SASL is not configured or not required).
    pub nickserv_password: Option<Secret>,
    /// The channels to be in, in file order.
    pub channels: Vec<IrcChannel>,
    /// Who may do what, by services account.
    pub authz: IrcAuthz,
    /// Silence after which the bot PINGs the server.
    pub keepalive: Duration,
    /// How long that PING may wait for its PONG before the bot reconnects.
    pub pong_timeout: Duration,
}

impl IrcSettings {
    /// Is `other` the same connection (server, TLS, nick, credentials,
    /// keepalive)? If so a reload keeps the connection and only joins,
    /// parts and re-reads notify lists and authz.
    pub fn same_connection(&self, other: &IrcSettings) -> bool {
        let strip = |s: &IrcSettings| IrcSettings {
            channels: Vec::new(),
            authz: IrcAuthz::default(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

/// `sasl = { ... }` of `[irc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcSasl {
    /// The services account.
    pub account: String,
    /// Its password.
    pub password: Secret,
    /// Fail the connection when SASL fails (true), or go on without it.
    pub required: bool,
}

/// One channel of `[irc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcChannel {
    /// `#name`.
    pub name: String,
    /// The channel key.
    pub key: Option<Secret>,
    /// Events announced there (words of [`IRC_EVENTS`]).
    pub notify: Vec<String>,
}

/// `authz = { ... }` of `[irc]`: services accounts allowed each command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IrcAuthz {
    /// May `force` builds.
    pub force: Vec<String>,
    /// May `stop` builds.
    pub stop: Vec<String>,
}
