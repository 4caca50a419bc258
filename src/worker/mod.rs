//! The worker's side: connect to the master, run the steps it assigns as
//! child processes (each in its own process group), spool their output on
//! disk, send it, and report every end.
//!
//! Steps outlive links: when the connection is lost (EOF, error, keepalive
//! silence) running steps go on, their output is spooled, and the worker
//! reconnects with backoff and lists in its Hello every step it still holds
//! (running, or ended with its end not yet written to a link). The master
//! then resumes each one from the offset it has, or abandons it. Only
//! Goodbye and SIGTERM/SIGINT stop the steps; a guard process
//! ([`guard`]) kills them if the worker itself is killed.
//!
//! The worker holds no per-builder state: a step is known only by its
//! (build, step) key.

pub mod address;
pub mod args;
mod backoff;
pub mod cli;
mod connection;
mod dial;
mod gate;
mod git_step;
mod group;
pub mod guard;
mod keepalive;
mod key;
mod masters;
mod output;
mod partials;
pub mod reaper;
mod runner;
mod sender;
mod session;
mod signals;
mod spool;
mod step_env;
mod steps;
mod stop;
pub mod tls;
mod transfer;

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

pub use backoff::{
    BACKOFF_MAX, BACKOFF_MAX_REMOTE, BACKOFF_MIN, FAST_RECONNECT_FOR, FAST_RECONNECT_MAX,
    STABLE_SESSION,
};
pub use connection::FIRST_CONNECT_WAIT;
pub use dial::{CONNECT_TIMEOUT, SEVERAL_MASTERS_STEP_LIMIT, TLS_HANDSHAKE_TIMEOUT};
pub use keepalive::{DEFAULT_KEEPALIVE, MISSED_INTERVALS};
pub use output::CHUNK_SIZE;
pub use runner::{OUTPUT_DRAIN_LIMIT, STOP_GRACE};
pub use session::{OUTGOING_QUEUE, RESUME_WAIT};
pub use spool::DEFAULT_SPOOL_LIMIT;
pub use step_env::{DEFAULT_PATH, INHERITED, step_environment};
pub use stop::{StopHandle, StopSignal, stop_pair};

use crate::protocol::FrameError;
use address::MasterAddr;
use backoff::Backoff;
use connection::{Connected, GiveUp, Pause, connect_with_retry, pause};
use dial::Dialer;
use guard::Guard;
use runner::StepContext;
use session::{SessionEnd, serve};
use signals::ShutdownSignals;
use steps::{STOP_ALL_LIMIT, Steps};
use tls::{TlsOptions, TlsSetupError};

/// Options of one worker process, as given on `bbworker`'s command line.
#[derive(Clone)]
pub struct WorkerOptions {
    /// Where the masters are (each its Unix socket, or a TCP/TLS address):
    /// one, or a leader and its standbys in the order to try them (see
    /// [`masters`]). At least one.
    pub masters: Vec<MasterAddr>,
    /// How to verify the master over TLS, and our client certificate
    /// (the default for Unix and TCP).
    pub tls: TlsOptions,
    /// This worker's name, as configured on the master.
    pub name: String,
    /// This worker's secret, as configured on the master.
    pub secret: String,
    /// Where steps run: each builder gets `<dir>/<builder>`, and output is
    /// spooled in `<dir>/.spool`.
    pub dir: PathBuf,
    /// Exit (successfully) after being disconnected this long while holding
    /// no step; also limits the first connection to
    /// [`FIRST_CONNECT_WAIT`]. `None`: wait for the master forever. For
    /// local workers, which the master spawns and must not outlive it by
    /// much once their work is done.
    pub orphan_timeout: Option<Duration>,
    /// Cap on one step's spooled output, in bytes; the rest is dropped.
    pub spool_limit: u64,
    /// The program to run as `<exe> --guard`; `None` runs without a guard
    /// (tests, which cannot re-execute a worker binary).
    pub guard_exe: Option<PathBuf>,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("masters", &self.masters)
            .field("tls", &self.tls)
            .field("name", &self.name)
            .field("secret", &"***")
            .field("dir", &self.dir)
            .field("orphan_timeout", &self.orphan_timeout)
            .field("spool_limit", &self.spool_limit)
            .field("guard_exe", &self.guard_exe)
            .finish()
    }
}

/// Why a worker gave up. Each message is complete on its own (causes are
/// part of the text, not a `source()` chain), ready for one log line.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The master answered the Hello with a refusal.
    #[error("the master refused this worker: {reason}")]
    Refused {
        /// The master's words.
        reason: String,
    },
    /// With `--orphan-timeout`, the master never came up.
    #[error("cannot reach the master at {master} (tried for {waited_s} s): {reason}")]
    Unreachable {
        /// The address we tried (several: `A, B and C`).
        master: String,
        /// How long we tried, in seconds.
        waited_s: u64,
        /// The last failure.
        reason: String,
    },
    /// The socket path cannot name a Unix socket (too long, for instance).
    #[error("invalid master socket path {}: {error}", socket.display())]
    SocketName {
        /// The path given.
        socket: PathBuf,
        /// What is wrong with it.
        error: std::io::Error,
    },
    /// The peer answered the Hello with something that is not our protocol.
    #[error("handshake with the master at {master} failed: {error}")]
    Handshake {
        /// The address we connected to.
        master: String,
        /// What went wrong.
        error: FrameError,
    },
    /// TLS with the master failed in a way a retry cannot fix: a
    /// certificate we do not trust (or not the pinned one), or ours
    /// refused by the master.
    #[error("TLS with the master at {master} failed: {reason}")]
    Tls {
        /// The address we connected to.
        master: String,
        /// What failed, and what to check.
        reason: String,
    },
    /// The TLS client cannot be set up (a CA or certificate file).
    #[error(transparent)]
    TlsSetup(#[from] TlsSetupError),
    /// Options that do not go together.
    #[error("{0}")]
    Options(String),
    /// The guard process cannot be started.
    #[error("cannot start the guard process ({}): {error}", exe.display())]
    Guard {
        /// The program we tried to run.
        exe: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// The work directory (or its spool directory) cannot be created.
    #[error("cannot create the work directory {}: {error}", dir.display())]
    WorkDir {
        /// The directory.
        dir: PathBuf,
        /// Why not.
        error: std::io::Error,
    },
    /// SIGTERM/SIGINT handlers cannot be installed.
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
}

/// Run a worker until the master says Goodbye, a shutdown signal arrives,
/// or (with `orphan_timeout`) it has been alone and idle long enough: all
/// `Ok`. Errors are the cases where trying again cannot help, or the
/// master never came up.
pub async fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    let max = opts.masters.iter().map(Backoff::max_for).max();
    run_with(opts, Backoff::new(max.unwrap_or(BACKOFF_MAX))).await
}

/// [`run`], waiting between rounds of attempts as `backoff` says (tests
/// give one with long delays, to see that no wait happens where none
/// should).
pub(crate) async fn run_with(opts: WorkerOptions, mut backoff: Backoff) -> Result<(), WorkerError> {
    // TLS files are read first: a typo there is one error at start.
    let dialers = Dialer::all(&opts.masters, &opts.tls)?;
    tokio::fs::create_dir_all(&opts.dir)
        .await
        .map_err(|error| WorkerError::WorkDir {
            dir: opts.dir.clone(),
            error,
        })?;
    spool::prepare_spool_dir(&opts.dir).map_err(|error| WorkerError::WorkDir {
        dir: spool::spool_dir(&opts.dir),
        error,
    })?;
    // Download temp files an earlier worker process left (killed mid-way).
    let sweep_dir = opts.dir.clone();
    let _ = tokio::task::spawn_blocking(move || partials::sweep(&sweep_dir)).await;
    let mut signals = ShutdownSignals::install().map_err(WorkerError::Signals)?;
    // What steps leave behind stays in our tree (so the master can tell it
    // is build code), and is reaped here.
    if let Err(e) = reaper::adopt_orphans() {
        tracing::warn!("cannot become the subreaper of the steps' processes: {e}");
    }
    tokio::spawn(reaper::reap_forever());
    let guard = match &opts.guard_exe {
        Some(exe) => Guard::spawn(exe).map_err(|error| WorkerError::Guard {
            exe: exe.clone(),
            error,
        })?,
        None => Guard::disabled(),
    };
    let mut steps = Steps::new(StepContext {
        dir: opts.dir.clone(),
        spool_limit: opts.spool_limit,
        guard,
    });
    let mut give_up = match opts.orphan_timeout {
        Some(_) => GiveUp::FirstConnection {
            started: Instant::now(),
        },
        None => GiveUp::Never,
    };
    loop {
        let connected = connect_with_retry(
            &opts,
            &dialers,
            &mut steps,
            &mut backoff,
            &mut signals,
            give_up,
        );
        let connected = match connected.await {
            Ok(connected) => connected,
            Err(e) => {
                // Refused for good (say, removed from the config): stop
                // the steps still held properly before leaving.
                stop_offline(&mut steps).await;
                return Err(e);
            }
        };
        let (link, listed) = match connected {
            Connected::Link(link, listed) => (link, listed),
            Connected::Signalled => {
                stop_offline(&mut steps).await;
                return Ok(());
            }
            Connected::Orphaned => {
                orphaned(&opts);
                return Ok(());
            }
        };
        let connected = Instant::now();
        match serve(link, &mut steps, &mut signals, listed).await {
            SessionEnd::Goodbye | SessionEnd::Signalled => return Ok(()),
            SessionEnd::Lost => {}
        }
        give_up = match opts.orphan_timeout {
            Some(timeout) => GiveUp::Orphaned {
                at: Instant::now() + timeout,
            },
            None => GiveUp::Never,
        };
        backoff.link_lost(Instant::now(), connected.elapsed());
        let delay = backoff.next_delay(Instant::now());
        info!(
            held = steps.held().len(),
            "lost the connection to the master; reconnecting in {:.1} s",
            delay.as_secs_f64()
        );
        match pause(delay, give_up, &mut signals, &mut steps).await {
            Pause::Done => {}
            Pause::Signalled => {
                stop_offline(&mut steps).await;
                return Ok(());
            }
            Pause::Orphaned => {
                orphaned(&opts);
                return Ok(());
            }
        }
    }
}

/// A shutdown signal with no link: stop every step; nobody can be told.
async fn stop_offline(steps: &mut Steps) {
    if !steps.is_empty() {
        info!("stopping every step (no master to report to)");
    }
    steps.abandon_all();
    if tokio::time::timeout(STOP_ALL_LIMIT, steps.drain())
        .await
        .is_err()
    {
        steps.abort_all();
    }
}

/// Log why an orphaned worker exits.
fn orphaned(opts: &WorkerOptions) {
    info!(
        "no master for {} and no step held; exiting (--orphan-timeout)",
        humantime::format_duration(opts.orphan_timeout.unwrap_or_default())
    );
}

#[cfg(test)]
mod fake_master;
#[cfg(test)]
mod multi_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
