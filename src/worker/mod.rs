//! The worker's side: connect to the master, run the steps it assigns as
//! child processes (each in its own process group), stream their output and
//! report every end.
//!
//! The worker holds no per-builder state: a step is known only by its
//! (build, step) key, and steps never outlive the connection that started
//! them. When the link is lost, on Goodbye, and on SIGTERM/SIGINT, every
//! running step's whole process group is stopped before anything else.

pub mod args;
mod connection;
mod group;
mod output;
mod runner;
mod session;
mod signals;
mod steps;
mod stop;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::info;

pub use connection::{BACKOFF_MAX, BACKOFF_MIN, EXIT_WITH_MASTER_WAIT};
pub use output::CHUNK_SIZE;
pub use runner::{OUTPUT_DRAIN_LIMIT, STOP_GRACE, run_step};
pub use session::OUTGOING_QUEUE;
pub use stop::{StopHandle, StopSignal, stop_pair};

use crate::protocol::FrameError;
use connection::{Backoff, connect_with_retry};
use session::{SessionEnd, serve};
use signals::ShutdownSignals;

/// Options of one worker process, as given on `bbworker`'s command line.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The master's worker socket.
    pub master_socket: PathBuf,
    /// This worker's name, as configured on the master.
    pub name: String,
    /// This worker's secret, as configured on the master.
    pub secret: String,
    /// Where steps run: each builder gets `<dir>/<builder>`.
    pub dir: PathBuf,
    /// Exit (successfully) when the master goes away instead of waiting for
    /// it to come back; for local workers the master spawns itself.
    pub exit_with_master: bool,
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("master_socket", &self.master_socket)
            .field("name", &self.name)
            .field("secret", &"***")
            .field("dir", &self.dir)
            .field("exit_with_master", &self.exit_with_master)
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
    /// With `--exit-with-master`, the master never came up.
    #[error("cannot reach the master at {} (tried for {waited_s} s): {reason}", socket.display())]
    Unreachable {
        /// The socket we tried.
        socket: PathBuf,
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
    #[error("handshake with the master at {} failed: {error}", socket.display())]
    Handshake {
        /// The socket we connected to.
        socket: PathBuf,
        /// What went wrong.
        error: FrameError,
    },
    /// The work directory cannot be created.
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

/// A session shorter than this does not reset the reconnect backoff, so a
/// master that accepts and drops us at once is not hammered.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Run a worker until the master says Goodbye, a shutdown signal arrives,
/// or (with `exit_with_master`) the master goes away: all `Ok`. Errors are
/// the cases where trying again cannot help, or the master never came up.
pub async fn run(opts: WorkerOptions) -> Result<(), WorkerError> {
    tokio::fs::create_dir_all(&opts.dir)
        .await
        .map_err(|error| WorkerError::WorkDir {
            dir: opts.dir.clone(),
            error,
        })?;
    let mut signals = ShutdownSignals::install().map_err(WorkerError::Signals)?;
    let mut backoff = Backoff::new();
    loop {
        let Some(link) = connect_with_retry(&opts, &mut backoff, &mut signals).await? else {
            return Ok(());
        };
        let connected = Instant::now();
        match serve(link, &opts.dir, &mut signals).await {
            SessionEnd::Goodbye | SessionEnd::Signalled => return Ok(()),
            SessionEnd::Lost if opts.exit_with_master => {
                info!("lost the connection to the master; exiting (--exit-with-master)");
                return Ok(());
            }
            SessionEnd::Lost => {}
        }
        if connected.elapsed() >= STABLE_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        info!(
            "lost the connection to the master; reconnecting in {:.1} s",
            delay.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            name = signals.recv() => {
                info!("{name} received; exiting");
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;
