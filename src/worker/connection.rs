//! Reaching the master: connect to its Unix socket, say Hello, read the
//! answer, and retry with backoff while it cannot be reached.

use std::path::Path;
use std::time::{Duration, Instant};

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{ReadHalf, WriteHalf};
use tracing::{info, warn};

use super::signals::ShutdownSignals;
use super::{WorkerError, WorkerOptions};
use crate::protocol::{
    FrameError, Hello, HelloReply, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION, Role, read_msg, write_msg,
};

/// How long a worker started with `--exit-with-master` keeps trying to
/// reach a master that is not there yet (it is starting alongside us).
pub const EXIT_WITH_MASTER_WAIT: Duration = Duration::from_secs(10);

/// First delay between connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest delay between connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A master that accepts but does not answer the Hello within this time is
/// treated like one that cannot be reached.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// An authenticated connection, split for the reader and writer tasks.
pub(crate) struct Link {
    /// Frames from the master.
    pub(crate) reader: ReadHalf<Stream>,
    /// Frames to the master.
    pub(crate) writer: WriteHalf<Stream>,
}

/// Exponential delays between connection attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Start at [`BACKOFF_MIN`].
    pub(crate) fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    /// The delay to wait now; the following one doubles, up to the max.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(BACKOFF_MAX);
        delay
    }

    /// Back to the shortest delay, after a connection that worked.
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Why one connection attempt failed.
enum AttemptError {
    /// Worth trying again later (no master yet, master restarting).
    Retry(String),
    /// Trying again would give the same answer.
    Fatal(WorkerError),
}

/// Connect until it works, a fatal error happens, or a shutdown signal
/// arrives (`Ok(None)`). With `--exit-with-master`, give up after
/// [`EXIT_WITH_MASTER_WAIT`].
pub(crate) async fn connect_with_retry(
    opts: &WorkerOptions,
    backoff: &mut Backoff,
    signals: &mut ShutdownSignals,
) -> Result<Option<Link>, WorkerError> {
    let started = Instant::now();
    loop {
        let reason = tokio::select! {
            attempt = attempt(opts) => match attempt {
                Ok(link) => return Ok(Some(link)),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry(reason)) => reason,
            },
            name = signals.recv() => {
                info!("{name} received while connecting; exiting");
                return Ok(None);
            }
        };
        let mut delay = backoff.next_delay();
        if opts.exit_with_master {
            let waited = started.elapsed();
            if waited >= EXIT_WITH_MASTER_WAIT {
                return Err(WorkerError::Unreachable {
                    socket: opts.master_socket.clone(),
                    waited_s: waited.as_secs(),
                    reason,
                });
            }
            delay = delay.min(EXIT_WITH_MASTER_WAIT - waited);
        }
        info!(
            "cannot reach the master at {}: {reason}; retrying in {:.1} s",
            opts.master_socket.display(),
            delay.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            name = signals.recv() => {
                info!("{name} received while connecting; exiting");
                return Ok(None);
            }
        }
    }
}

/// One connection attempt, handshake included.
async fn attempt(opts: &WorkerOptions) -> Result<Link, AttemptError> {
    let stream = connect(&opts.master_socket).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let hello = Hello::new(Role::Worker {
        name: opts.name.clone(),
        secret: opts.secret.clone(),
        // Steps never outlive a connection (they are stopped when it is
        // lost), so there is never anything to announce here.
        running: Vec::new(),
    });
    let exchange = async {
        write_msg(&mut writer, &hello).await?;
        read_msg::<_, HelloReply>(&mut reader, MAX_HANDSHAKE_FRAME).await
    };
    let reply = match tokio::time::timeout(HANDSHAKE_LIMIT, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return Err(handshake_error(&opts.master_socket, e)),
        Err(_) => {
            return Err(AttemptError::Retry(format!(
                "no answer to our hello within {} s",
                HANDSHAKE_LIMIT.as_secs()
            )));
        }
    };
    match reply {
        HelloReply::Welcome {
            version,
            software,
            master_pid,
            ..
        } => {
            if version != PROTOCOL_VERSION {
                warn!(version, "master welcomed us with another protocol version");
            }
            info!(
                master = %software,
                master_pid,
                worker = %opts.name,
                "connected to the master at {}",
                opts.master_socket.display()
            );
            Ok(Link { reader, writer })
        }
        HelloReply::Refused { reason } => Err(AttemptError::Fatal(WorkerError::Refused { reason })),
    }
}

/// Open the socket; every failure to do so is worth a retry except a path
/// that can never name a socket.
async fn connect(socket: &Path) -> Result<Stream, AttemptError> {
    let name = socket.to_fs_name::<GenericFilePath>().map_err(|error| {
        AttemptError::Fatal(WorkerError::SocketName {
            socket: socket.to_path_buf(),
            error,
        })
    })?;
    Stream::connect(name).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::InvalidInput {
            // Too long for sun_path, for instance: no retry can fix that.
            AttemptError::Fatal(WorkerError::SocketName {
                socket: socket.to_path_buf(),
                error,
            })
        } else {
            AttemptError::Retry(error.to_string())
        }
    })
}

/// A master that hangs up during the handshake may be restarting: retry.
/// One that sends garbage is not speaking our protocol: give up.
fn handshake_error(socket: &Path, e: FrameError) -> AttemptError {
    if e.is_disconnect() {
        AttemptError::Retry(format!("connection closed during the handshake: {e}"))
    } else {
        AttemptError::Fatal(WorkerError::Handshake {
            socket: socket.to_path_buf(),
            error: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_max_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
