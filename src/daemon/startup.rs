//! What a master's start needs before its loop runs: how it was asked
//! to start ([`MasterOptions`]), where its files go ([`Layout`]), the
//! config it loads, the store it opens, and the errors that stop a start
//! ([`DaemonError`]).

use std::path::{Path, PathBuf};

use super::{leader, listeners, lock, stale, state_dir, store, web};
use crate::config::{self, Config, ConfigError};
use crate::paths;

/// How `bbmaster` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct MasterOptions {
    /// The config file; `None` uses the embedded default.
    pub config: Option<PathBuf>,
    /// Overrides the config's `state_dir`.
    pub state_dir: Option<PathBuf>,
    /// `--http ADDR`: serve the web pages there (overrides `[http] listen`).
    pub http: Option<std::net::SocketAddr>,
    /// `--name`: this master among others on one PostgreSQL store.
    pub name: Option<String>,
    /// `--advertise`: where workers are sent when this master leads.
    pub advertise: Option<String>,
    /// `--worker-listen`: replaces the config's `worker_listen` (also
    /// after reloads) when not empty.
    pub worker_listen: Vec<std::net::SocketAddr>,
}

/// Why the master could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The database could not be opened or read.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// Another master holds the state dir.
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    /// The local workers cannot run as configured.
    #[error("{0}")]
    LocalWorkers(String),
    /// The state dir is not safe to use.
    #[error(transparent)]
    StateDir(#[from] state_dir::StateDirError),
    /// The signal handlers cannot be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// The TCP listeners for remote workers cannot start.
    #[error(transparent)]
    Listen(#[from] listeners::set::ListenError),
    /// Logs or artifacts of builds the database does not know.
    #[error(transparent)]
    Stale(#[from] stale::CheckError),
    /// The web server (`[http]`, `--http`) cannot start.
    #[error(transparent)]
    Web(#[from] web::WebError),
    /// The leadership could not be campaigned for, or was lost.
    #[error(transparent)]
    Leadership(#[from] leader::LeaderError),
    /// A file system or socket operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// The resolved locations of one master.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state dir.
    pub state_dir: PathBuf,
    /// The control socket.
    pub control_socket: PathBuf,
    /// The worker socket.
    pub worker_socket: PathBuf,
}

impl Layout {
    /// `--state-dir`, else the config's, else the default; sockets likewise.
    pub fn resolve(opts: &MasterOptions, config: &Config) -> Self {
        let state_dir = opts
            .state_dir
            .clone()
            .or_else(|| config.master.state_dir.clone())
            .unwrap_or_else(paths::default_state_dir);
        Layout {
            control_socket: config
                .master
                .control_socket
                .clone()
                .unwrap_or_else(|| paths::control_socket_in(&state_dir)),
            worker_socket: config
                .master
                .worker_socket
                .clone()
                .unwrap_or_else(|| paths::worker_socket_in(&state_dir)),
            state_dir,
        }
    }
}

/// Load the config `bbmaster` was pointed at, or the embedded default.
pub fn load_config(opts: &MasterOptions) -> Result<Config, ConfigError> {
    match &opts.config {
        Some(path) => config::load_file(path),
        None => Ok(config::embedded_default()),
    }
}

/// `[http]` with `--http` applied: `None` when the web server is off.
pub(super) fn http_settings(opts: &MasterOptions, config: &Config) -> Option<config::HttpSettings> {
    match (opts.http, config.master.http.clone()) {
        (Some(listen), Some(settings)) => Some(config::HttpSettings { listen, ..settings }),
        (Some(listen), None) => Some(config::HttpSettings::quick(listen)),
        (None, settings) => settings,
    }
}

/// Where logs and artifacts live: the state dir, or with PostgreSQL the
/// `shared_dir` every master reaches.
pub fn files_root(config: &Config, state_dir: &Path) -> PathBuf {
    match config.master.store.postgres() {
        Some(pg) => pg.shared_dir.clone(),
        None => state_dir.to_path_buf(),
    }
}

/// Open the store `[master] store` names, with the fence this master
/// writes behind: on PostgreSQL `epoch`, the epoch its leadership
/// campaign committed (a master opens a PostgreSQL store to write only as
/// the leader, see `leader::phase`); SQLite has no fence.
pub(super) fn open_store(
    config: &Config,
    state_dir: &Path,
    epoch: Option<u64>,
) -> Result<store::Opened, DaemonError> {
    debug_assert!(
        config.master.store.postgres().is_none() || epoch.is_some(),
        "a PostgreSQL store is opened for writing only by a leader"
    );
    Ok(store::open(&config.master, state_dir, epoch)?)
}

/// The TCP listeners' settings: the config's, with `--worker-listen` in
/// place of `worker_listen` when given (at start and after every reload).
pub(super) fn listen_settings(
    opts: &MasterOptions,
    master: &config::MasterSettings,
) -> config::MasterSettings {
    let mut settings = master.clone();
    if !opts.worker_listen.is_empty() {
        settings.worker_listen = opts.worker_listen.clone();
    }
    settings
}
