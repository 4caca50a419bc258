//! Master-wide settings: `[master]` with its defaults and build retention.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

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
    /// `store`: where the history and the queue live (docs/postgres.md).
    pub store: StoreSettings,
}

/// `[master] store`: SQLite in the state dir (the default), or a
/// PostgreSQL database that several masters share (one leads).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSettings {
    /// `store = "sqlite"`: `<state_dir>/master.db`.
    #[default]
    Sqlite,
    /// `store = { postgres = "...", ... }`.
    Postgres(PostgresSettings),
}

impl StoreSettings {
    /// The PostgreSQL settings, if the store is PostgreSQL.
    pub fn postgres(&self) -> Option<&PostgresSettings> {
        match self {
            StoreSettings::Sqlite => None,
            StoreSettings::Postgres(p) => Some(p),
        }
    }
}

/// `store = { postgres = ..., password_file, shared_dir, lease }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The libpq-style connection string (`host=... dbname=... user=...`),
    /// without a password.
    pub conninfo: String,
    /// A file holding the password (its first line), read at each
    /// connection; `None`: no password (trust, peer, or a `.pgpass`-less
    /// setup).
    pub password_file: Option<PathBuf>,
    /// Logs and artifacts, on storage every master reaches: they take the
    /// place of `<state_dir>/logs` and `<state_dir>/artifacts`.
    pub shared_dir: PathBuf,
    /// How long a leader's lease lasts without renewal (docs/standby.md).
    pub lease: Duration,
    /// With `sslmode=require`: the CA certificates (PEM) the server's
    /// certificate is verified against; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
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

/// Every value comes from [`crate::config::defaults::DEFAULTS`], the table that
/// `master.toml(5)` is checked against.
impl Default for MasterSettings {
    fn default() -> Self {
        use crate::config::defaults as d;
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
            store: StoreSettings::Sqlite,
        }
    }
}
