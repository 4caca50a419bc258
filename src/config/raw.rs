//! The file as serde sees it, before any check.
//!
//! These structs mirror `master.toml` key for key. `deny_unknown_fields`
//! turns typos into errors, and `Spanned` keeps the byte position of every
//! value that a later check in [`super::validate`] may need to point at.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// An environment table: variable name to value, both with positions.
pub type RawEnv = BTreeMap<Spanned<String>, Spanned<String>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[master]`; absent means all defaults.
    #[serde(default)]
    pub master: RawMaster,
    /// `[[worker]]` entries in file order.
    #[serde(default)]
    pub worker: Vec<RawWorker>,
    /// `[[builder]]` entries in file order.
    #[serde(default)]
    pub builder: Vec<RawBuilder>,
    /// `[[scheduler]]` entries in file order.
    #[serde(default)]
    pub scheduler: Vec<RawScheduler>,
    /// `[irc]`: the IRC bot; absent means no bot.
    pub irc: Option<Spanned<RawIrc>>,
    /// `[[poller]]` entries in file order.
    #[serde(default)]
    pub poller: Vec<RawPoller>,
    /// `[[lock]]` entries in file order.
    #[serde(default)]
    pub lock: Vec<RawLock>,
    /// `[http]`: the web pages and HTTP API; absent means off.
    pub http: Option<Spanned<RawHttp>>,
}

/// One `[[scheduler]]`: the keys of every kind (validation says which
/// kind takes which).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    /// Required; checked for allowed characters and uniqueness.
    pub name: Spanned<String>,
    /// Old names whose state moves to this scheduler.
    #[serde(default)]
    pub previous_names: Vec<Spanned<String>>,
    /// `kind = "branch"`; required.
    pub kind: Option<Spanned<String>>,
    /// The builders it starts; required, not empty.
    pub builders: Option<Spanned<Vec<Spanned<String>>>>,
    /// `branch`: only changes of this repository.
    pub repository: Option<Spanned<String>>,
    /// `branch`: branch globs.
    pub branches: Option<Spanned<Vec<Spanned<String>>>>,
    /// `branch`: file globs deciding which changes are important.
    pub files: Option<Spanned<Vec<Spanned<String>>>>,
    /// `branch`: `tree_stable = "30s"`.
    pub tree_stable: Option<Spanned<String>>,
    /// `periodic`: `every = "6h"`.
    pub every: Option<Spanned<String>>,
    /// `cron`: `at = "0 3 * * 1-5"`.
    pub at: Option<Spanned<String>>,
    /// `cron`: `timezone = "Europe/Berlin"`.
    pub timezone: Option<Spanned<String>>,
    /// `periodic`, `cron`: `only_if_changed = true`.
    pub only_if_changed: Option<Spanned<bool>>,
    /// `periodic`, `cron`: `catch_up = "none" | "one"`.
    pub catch_up: Option<Spanned<String>>,
    /// `dependent`: `upstream = "scheduler"`.
    pub upstream: Option<Spanned<String>>,
}

/// One `[[poller]]`: a git repository watched for commits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoller {
    /// Required; the key of the poller's durable cursors.
    pub name: Spanned<String>,
    /// `repository = "URL or path"`.
    pub repository: Option<Spanned<String>>,
    /// `branches = ["main", "release/*"]`.
    pub branches: Option<Spanned<Vec<Spanned<String>>>>,
    /// `tags = true`: also watch tags.
    pub tags: Option<Spanned<bool>>,
    /// `interval = "1m"`.
    pub interval: Option<Spanned<String>>,
    /// `timeout = "5m"`: one git command's limit.
    pub timeout: Option<Spanned<String>>,
}

/// One entry of `force_properties`: a property a force may set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForceProperty {
    /// Required; the property's name.
    pub name: Spanned<String>,
    /// `type = "string" | "int" | "bool" | "choice"`.
    pub r#type: Option<Spanned<String>>,
    /// The value when a force does not set it (a string, integer or boolean).
    pub default: Option<Spanned<toml::Value>>,
    /// For `choice`: the allowed values.
    pub choices: Option<Spanned<Vec<Spanned<String>>>>,
    /// `required = true`: a force must set it.
    pub required: Option<Spanned<bool>>,
}

/// `[http]` (docs/http.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `listen = "127.0.0.1:8010"` (or a bare port: loopback).
    pub listen: Option<Spanned<String>>,
    /// `base_url = "https://ci.example.org/bb"`: how people reach it.
    pub base_url: Option<Spanned<String>>,
    /// `trust_proxy = true`: believe `X-Forwarded-Host` from a reverse proxy.
    pub trust_proxy: Option<Spanned<bool>>,
    /// `tls = true`: serve HTTPS with the workers' certificate.
    pub tls: Option<Spanned<bool>>,
    /// `max_connections = 256`: open HTTP connections at once.
    pub max_connections: Option<Spanned<i64>>,
    /// `[[http.token]]` entries: who may write.
    #[serde(default)]
    pub token: Vec<RawHttpToken>,
    /// `[[http.hook]]` entries: webhooks that add changes.
    #[serde(default)]
    pub hook: Vec<RawHttpHook>,
}

/// One `[[http.hook]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpHook {
    /// Required: its path is `/hooks/NAME`.
    pub name: Spanned<String>,
    /// Required: `github`, `gitea` or `json`.
    pub kind: Option<Spanned<String>>,
    /// Required: the file holding the HMAC secret.
    pub secret_file: Option<Spanned<String>>,
}

/// One `[[http.token]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpToken {
    /// Required: the principal's name in logs and history.
    pub name: Spanned<String>,
    /// Required: the file holding the bearer token.
    pub token_file: Option<Spanned<String>>,
    /// What it may do: `force`, `stop`, `cancel`.
    pub may: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[master]`: paths, kept as written until resolved against the base dir.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaster {
    /// `state_dir = "..."`.
    pub state_dir: Option<Spanned<String>>,
    /// `control_socket = "..."`.
    pub control_socket: Option<Spanned<String>>,
    /// `worker_socket = "..."`.
    pub worker_socket: Option<Spanned<String>>,
    /// `worker_grace = "60s"`: how long a lost worker's builds wait for it.
    pub worker_grace: Option<Spanned<String>>,
    /// `keepalive = "10s"`: ping interval on worker links.
    pub keepalive: Option<Spanned<String>>,
    /// `max_retries = 3`: signed so a negative value gets a clear message.
    pub max_retries: Option<Spanned<i64>>,
    /// `max_handshake_frame = "64KiB"`: frame limit before the handshake.
    pub max_handshake_frame: Option<Spanned<String>>,
    /// `max_frame = "16MiB"`: frame limit after the handshake.
    pub max_frame: Option<Spanned<String>>,
    /// `max_log_size = "256MiB"`: output kept per step.
    pub max_log_size: Option<Spanned<String>>,
    /// `max_queued = 10000`: queued requests per builder.
    pub max_queued: Option<Spanned<i64>>,
    /// `max_clients = 256`: control connections at once.
    pub max_clients: Option<Spanned<i64>>,
    /// `allowed_uids = [1001]`: more users for the control socket.
    pub allowed_uids: Option<Spanned<Vec<Spanned<i64>>>>,
    /// `allowed_gid = 100`: a group whose members may use the control socket.
    pub allowed_gid: Option<Spanned<i64>>,
    /// `transfer_dir = "..."`: where `download` steps take files from.
    pub transfer_dir: Option<Spanned<String>>,
    /// `keep_builds = 100`: finished builds kept per builder.
    pub keep_builds: Option<Spanned<i64>>,
    /// `keep_logs = "30d"`: how long finished builds keep their logs.
    pub keep_logs: Option<Spanned<String>>,
    /// `max_upload_size = "1GiB"`: largest uploaded file, for every step.
    pub max_upload_size: Option<Spanned<String>>,
    /// `max_artifact_bytes_per_build = "10GiB"`: artifact bytes per build.
    pub max_artifact_bytes_per_build: Option<Spanned<String>>,
    /// `max_artifacts_per_build = 10000`: artifact files per build.
    pub max_artifacts_per_build: Option<Spanned<i64>>,
    /// `min_free_space = "1GiB"`: free space uploads never eat into.
    pub min_free_space: Option<Spanned<String>>,
    /// `deadline_grace = "30s"`: how long past a timeout or a stop the
    /// master waits for the worker before ending the build itself.
    pub deadline_grace: Option<Spanned<String>>,
    /// `worker_listen = ["0.0.0.0:9989"]`: TCP addresses for remote workers.
    pub worker_listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// `tls_cert = "..."`: the listeners' certificate chain (PEM).
    pub tls_cert: Option<Spanned<String>>,
    /// `tls_key = "..."`: its private key (PEM).
    pub tls_key: Option<Spanned<String>>,
    /// `allow_plaintext = true`: plain TCP instead of TLS.
    pub allow_plaintext: Option<Spanned<bool>>,
    /// `client_ca = "..."`: require client certificates signed by this CA.
    pub client_ca: Option<Spanned<String>>,
    /// `store = "sqlite"` or `store = { postgres = "...", ... }`.
    pub store: Option<Spanned<RawStoreValue>>,
}

/// `[master] store`: a name or a table (the schema walk let only these
/// through).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStoreValue {
    /// `store = "sqlite"`.
    Name(String),
    /// `store = { postgres = ... }`.
    Table(RawStore),
}

/// `store = { postgres = ..., password_file, shared_dir, lease }`: plain
/// strings (inside a value that is a string or a table, serde gives no
/// positions: problems point at `store`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// The connection string.
    pub postgres: Option<String>,
    /// A file holding the password.
    pub password_file: Option<String>,
    /// Logs and artifacts every master reaches.
    pub shared_dir: Option<String>,
    /// The leader's lease, `"10s"`.
    pub lease: Option<String>,
    /// CA certificates for `sslmode=require`.
    pub ca_file: Option<String>,
}

/// One `[[worker]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    /// Required; checked for allowed characters and uniqueness.
    pub name: Spanned<String>,
    /// `local = true`: the master starts this worker itself.
    pub local: Option<Spanned<bool>>,
    /// Signed so that a negative value gets our clear range message.
    pub max_builds: Option<Spanned<i64>>,
    /// The secret, inline.
    pub secret: Option<Spanned<String>>,
    /// A file holding the secret, read at load time.
    pub secret_file: Option<Spanned<String>>,
    /// The user a local worker (and its steps) runs as.
    pub user: Option<Spanned<String>>,
    /// `tags = ["linux"]`: matched by builders' `worker_tags`.
    #[serde(default)]
    pub tags: Vec<Spanned<String>>,
}

/// One `[[builder]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuilder {
    /// Required; checked for allowed characters and uniqueness.
    pub name: Spanned<String>,
    /// Old names whose queue and history move to this builder.
    #[serde(default)]
    pub previous_names: Vec<Spanned<String>>,
    /// Optional for serde so that absence gets our own message.
    pub workers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Environment for every step.
    #[serde(default)]
    pub env: RawEnv,
    /// Names of worker environment variables its steps may see.
    #[serde(default)]
    pub pass_env: Vec<Spanned<String>>,
    /// `collapse = true`: queued requests identical to one that starts are
    /// merged into it.
    pub collapse: Option<Spanned<bool>>,
    /// `keep_builds = 10`: this builder's own `[master] keep_builds`.
    pub keep_builds: Option<Spanned<i64>>,
    /// `keep_logs = "7d"`: this builder's own `[master] keep_logs`.
    pub keep_logs: Option<Spanned<String>>,
    /// `retry = false`: a build whose worker is lost ends as `exception`
    /// instead of being run again.
    pub retry: Option<Spanned<bool>>,
    /// `[[builder.step]]` entries; optional for serde, required by validation.
    pub step: Option<Spanned<Vec<RawStep>>>,
    /// `force_properties = [{ name = "...", type = "..." }]` or
    /// `[[builder.force_properties]]`: what a force may set.
    #[serde(default)]
    pub force_properties: Vec<RawForceProperty>,
    /// `locks = [{ name = "rig", access = "exclusive" }]`: held for the whole build.
    #[serde(default)]
    pub locks: Vec<Spanned<RawLockClaim>>,
    /// `worker_tags = ["linux"]`: an eligible worker carries all of them.
    pub worker_tags: Option<Spanned<Vec<Spanned<String>>>>,
    /// `worker_choice = "least_busy"`, `"random"` or `"in_order"`.
    pub worker_choice: Option<Spanned<String>>,
    /// `max_running = 2`: builds of this builder at once.
    pub max_running: Option<Spanned<i64>>,
}

/// One `[[builder.step]]`.
///
/// Each action kind is an optional key of its own (`shell`, `command`, and
/// later `upload`, `download`); validation demands exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Required; unique within the builder.
    pub name: Spanned<String>,
    /// `shell = "..."`: run with `/bin/sh -c`.
    pub shell: Option<Spanned<String>>,
    /// `command = [...]`: an argv, no shell.
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    /// A humantime duration such as `"30s"`.
    pub timeout: Option<Spanned<String>>,
    /// Environment for this step only.
    #[serde(default)]
    pub env: RawEnv,
    /// `upload = { from = "out/*.tar.gz", max_size = "1GiB", mode = "0644" }`.
    pub upload: Option<Spanned<RawUpload>>,
    /// `download = { from = "inputs/data.bin", to = "data.bin" }`.
    pub download: Option<Spanned<RawDownload>>,
    /// `git = { repository = "...", mode = "incremental", submodules = false }`.
    pub git: Option<Spanned<RawGit>>,
    /// `locks = [...]`: held around this step only.
    #[serde(default)]
    pub locks: Vec<Spanned<RawLockClaim>>,
    /// `trigger = { schedulers = ["x"], wait = true, properties = {...} }`.
    pub trigger: Option<Spanned<RawTrigger>>,
}

/// `git = { ... }`: check out the build's revision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    /// A URL or path; required.
    pub repository: Option<Spanned<String>>,
    /// `"incremental"` (default) or `"full"`.
    pub mode: Option<Spanned<String>>,
    /// `submodules = true`: check them out too.
    pub submodules: Option<Spanned<bool>>,
}

/// One `[[lock]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLock {
    /// Required; checked for allowed characters and uniqueness.
    pub name: Spanned<String>,
    /// `scope = "master"` (default) or `"worker"`.
    pub scope: Option<Spanned<String>>,
    /// `max = 1` (default): the capacity.
    pub max: Option<Spanned<i64>>,
    /// `worker_max = { box-2 = 2 }`: per-worker capacities (worker scope).
    #[serde(default)]
    pub worker_max: BTreeMap<Spanned<String>, Spanned<i64>>,
}

/// One entry of a builder's or a step's `locks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLockClaim {
    /// The lock's name; optional for serde so absence gets our own message.
    pub name: Option<Spanned<String>>,
    /// `"exclusive"` or `"counting"`; required.
    pub access: Option<Spanned<String>>,
    /// `weight = 2`: for counting claims only (default 1).
    pub weight: Option<Spanned<i64>>,
}

/// `upload = { ... }`: worker files to the build's artifacts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    /// A glob or a directory, relative to the step's work dir.
    pub from: Option<Spanned<String>>,
    /// Largest file accepted, e.g. `"1GiB"`.
    pub max_size: Option<Spanned<String>>,
    /// Mode of the stored files, octal text such as `"0644"`.
    pub mode: Option<Spanned<String>>,
}

/// `download = { ... }`: one master file to the worker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDownload {
    /// A file relative to `[master] transfer_dir`.
    pub from: Option<Spanned<String>>,
    /// Where it goes, relative to the step's work dir.
    pub to: Option<Spanned<String>>,
    /// Largest file sent, e.g. `"1GiB"`.
    pub max_size: Option<Spanned<String>>,
    /// Mode of the written file, octal text such as `"0644"`.
    pub mode: Option<Spanned<String>>,
}

/// `trigger = { ... }`: fire `triggerable` schedulers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// The triggerable schedulers' names.
    pub schedulers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Wait for the triggered builds and take the worst result.
    pub wait: Option<Spanned<bool>>,
    /// Properties of the triggered requests.
    #[serde(default)]
    pub properties: RawEnv,
}

/// One action key set in a step. A new kind of action (`upload`,
/// `download`) adds a field to [`RawStep`], a variant and a line in
/// [`RawAction::present`] here, and an arm in the step check of `validate`.
pub enum RawAction<'a> {
    /// `shell = "..."`.
    Shell(&'a Spanned<String>),
    /// `command = [...]`.
    Command(&'a Spanned<Vec<Spanned<String>>>),
    /// `upload = { ... }`.
    Upload(&'a Spanned<RawUpload>),
    /// `download = { ... }`.
    Download(&'a Spanned<RawDownload>),
    /// `git = { ... }`.
    Git(&'a Spanned<RawGit>),
    /// `trigger = { ... }`.
    Trigger(&'a Spanned<RawTrigger>),
}

impl<'a> RawAction<'a> {
    /// Every action key, in the order messages list them.
    pub const KEYS: [&'static str; 6] =
        ["shell", "command", "upload", "download", "git", "trigger"];

    /// The actions a step sets, in file order.
    pub fn present(raw: &'a RawStep) -> Vec<Self> {
        let mut present = Vec::new();
        present.extend(raw.shell.as_ref().map(Self::Shell));
        present.extend(raw.command.as_ref().map(Self::Command));
        present.extend(raw.upload.as_ref().map(Self::Upload));
        present.extend(raw.download.as_ref().map(Self::Download));
        present.extend(raw.git.as_ref().map(Self::Git));
        present.extend(raw.trigger.as_ref().map(Self::Trigger));
        present.sort_by_key(|a| a.span().start);
        present
    }

    /// The key as written in the file.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Shell(_) => "shell",
            Self::Command(_) => "command",
            Self::Upload(_) => "upload",
            Self::Download(_) => "download",
            Self::Git(_) => "git",
            Self::Trigger(_) => "trigger",
        }
    }

    /// Where the value is.
    pub fn span(&self) -> Range<usize> {
        match self {
            Self::Shell(v) => v.span(),
            Self::Command(v) => v.span(),
            Self::Upload(v) => v.span(),
            Self::Download(v) => v.span(),
            Self::Git(v) => v.span(),
            Self::Trigger(v) => v.span(),
        }
    }
}

/// `[irc]`: the IRC bot (docs/irc.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIrc {
    /// `server = "irc.libera.chat"`: required.
    pub server: Option<Spanned<String>>,
    /// `port = 6697`: default 6697 with TLS, 6667 without.
    pub port: Option<Spanned<i64>>,
    /// `tls = true` (the default): the server's certificate is verified.
    pub tls: Option<Spanned<bool>>,
    /// `tls_ca = "ca.pem"`: trust these CAs instead of the system's.
    pub tls_ca: Option<Spanned<String>>,
    /// `tls_fingerprint = "sha256:..."`: trust exactly this certificate.
    pub tls_fingerprint: Option<Spanned<String>>,
    /// `nick = "bbmaster"`.
    pub nick: Option<Spanned<String>>,
    /// `alt_nicks = ["bbmaster_"]`: tried when the nick is taken.
    pub alt_nicks: Option<Spanned<Vec<Spanned<String>>>>,
    /// `password = "..."`: the server password (PASS).
    pub password: Option<Spanned<String>>,
    /// `password_file = "..."`: the same, from a file.
    pub password_file: Option<Spanned<String>>,
    /// `sasl = { mechanism = "PLAIN", account = "...", password_file = "..." }`.
    pub sasl: Option<Spanned<RawIrcSasl>>,
    /// `nickserv_password_file = "..."`: IDENTIFY to NickServ with it.
    pub nickserv_password_file: Option<Spanned<String>>,
    /// `channels = [{ name = "#builds", key = "...", notify = [...] }]`.
    pub channels: Option<Vec<RawIrcChannel>>,
    /// `authz = { force = ["alice"], stop = ["alice"] }`: by services account.
    pub authz: Option<Spanned<RawIrcAuthz>>,
    /// `keepalive = "60s"`: silence after which the bot PINGs the server.
    pub keepalive: Option<Spanned<String>>,
    /// `pong_timeout = "30s"`: how long that PING may wait for its PONG.
    pub pong_timeout: Option<Spanned<String>>,
}

/// `sasl = { ... }` of `[irc]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIrcSasl {
    /// `mechanism = "PLAIN"`: the only one supported.
    pub mechanism: Option<Spanned<String>>,
    /// `account = "..."`: the services account.
    pub account: Option<Spanned<String>>,
    /// `password_file = "..."`: its password.
    pub password_file: Option<Spanned<String>>,
    /// `required = true` (default): no connection without SASL.
    pub required: Option<Spanned<bool>>,
}

/// One entry of `channels` in `[irc]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIrcChannel {
    /// `name = "#builds"`.
    pub name: Spanned<String>,
    /// `key = "..."`: the channel key (+k).
    pub key: Option<Spanned<String>>,
    /// `notify = ["failure", "fixed"]`: the events announced there.
    pub notify: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `authz = { ... }` of `[irc]`: services accounts allowed each command.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIrcAuthz {
    /// `force = ["alice"]`.
    pub force: Option<Spanned<Vec<Spanned<String>>>>,
    /// `stop = ["alice", "bob"]`.
    pub stop: Option<Spanned<Vec<Spanned<String>>>>,
}
