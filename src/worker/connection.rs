//! Reaching the master: connect to its Unix socket, say Hello (listing the
//! steps still held), read the answer, and retry with backoff while it
//! cannot be reached.

use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{info, warn};

use super::key::StepKey;
use super::signals::ShutdownSignals;
use super::steps::Steps;
use super::{WorkerError, WorkerOptions};
use crate::protocol::{
    FrameError, Hello, HelloReply, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION, RefusalKind, Role,
    RunningStep, WorkerProof, proof, read_msg, write_msg,
};

/// How long a worker started with `--orphan-timeout` keeps trying to reach
/// a master that is not there yet on its *first* connection (the master is
/// starting alongside us); past that it fails.
pub const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// First delay between connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest delay between connection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// After a link that worked is lost, attempts come at least this often for
/// [`FAST_RECONNECT_FOR`]: the master is most likely restarting, and its
/// builds wait for this worker only `worker_grace`.
pub const FAST_RECONNECT_MAX: Duration = Duration::from_millis(250);

/// How long after losing a link that worked attempts stay frequent; then
/// the back-off doubles again up to [`BACKOFF_MAX`].
pub const FAST_RECONNECT_FOR: Duration = Duration::from_secs(10);

/// A link that lasted this long always resets the back-off when lost.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);

/// A master that accepts but does not answer the Hello within this time is
/// treated like one that cannot be reached.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// An authenticated connection, split for the reader and writer tasks.
pub(crate) struct Link {
    /// Frames from the master.
    pub(crate) reader: ReadHalf<Stream>,
    /// Frames to the master.
    pub(crate) writer: WriteHalf<Stream>,
    /// The keepalive interval from the Welcome.
    pub(crate) keepalive_ms: Option<u64>,
}

/// Exponential delays between connection attempts, kept short for a while
/// after a link that worked was lost.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    /// Until then, no delay exceeds [`FAST_RECONNECT_MAX`].
    fast_until: Option<Instant>,
}

impl Backoff {
    /// Start at [`BACKOFF_MIN`].
    pub(crate) fn new() -> Self {
        Backoff {
            next: BACKOFF_MIN,
            fast_until: None,
        }
    }

    /// The delay to wait now (at `now`); the following one doubles, up to
    /// [`FAST_RECONNECT_MAX`] within the fast window, else [`BACKOFF_MAX`].
    pub(crate) fn next_delay(&mut self, now: Instant) -> Duration {
        let cap = match self.fast_until {
            Some(until) if now < until => FAST_RECONNECT_MAX,
            _ => BACKOFF_MAX,
        };
        let delay = self.next.min(cap);
        self.next = (delay * 2).min(cap);
        delay
    }

    /// Back to the shortest delay, with frequent attempts for
    /// [`FAST_RECONNECT_FOR`] from `now`.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.next = BACKOFF_MIN;
        self.fast_until = Some(now + FAST_RECONNECT_FOR);
    }

    /// A welcomed link that lasted `session` was lost at `now`. Reset, so
    /// that the worker is back within a fraction of a second of a master
    /// that restarted, however short the link was; but a link lost within
    /// the fast window of the previous reset resets nothing unless it
    /// lasted [`STABLE_SESSION`]: a master that welcomes and drops us at
    /// once, again and again, meets the doubling back-off.
    pub(crate) fn link_lost(&mut self, now: Instant, session: Duration) {
        let in_window = self.fast_until.is_some_and(|until| now < until);
        if session >= STABLE_SESSION || !in_window {
            self.reset(now);
        }
    }
}

/// When to stop trying to connect.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GiveUp {
    /// Never: a worker without `--orphan-timeout` waits for its master.
    Never,
    /// With `--orphan-timeout`, on the first connection: fail with
    /// [`WorkerError::Unreachable`] [`FIRST_CONNECT_WAIT`] after `started`.
    FirstConnection {
        /// When we began trying.
        started: Instant,
    },
    /// With `--orphan-timeout`, after a link was lost: exit (successfully)
    /// at this instant or later, as soon as no step is held.
    Orphaned {
        /// When the worker has been alone for long enough.
        at: Instant,
    },
}

/// How trying to connect ended, when it did not fail.
pub(crate) enum Connected {
    /// A welcomed link, and the steps its Hello listed.
    Link(Link, Vec<StepKey>),
    /// SIGTERM or SIGINT arrived.
    Signalled,
    /// The orphan deadline passed.
    Orphaned,
}

/// How a pause between attempts ended.
pub(crate) enum Pause {
    /// The delay elapsed.
    Done,
    /// SIGTERM or SIGINT arrived.
    Signalled,
    /// The orphan deadline passed.
    Orphaned,
}

/// Wait `delay`, cut short by a shutdown signal or by the orphan deadline
/// once no step is held. Meanwhile, forget the steps that are done (an
/// abandoned step may finish dying while we are disconnected).
pub(crate) async fn pause(
    delay: Duration,
    give_up: GiveUp,
    signals: &mut ShutdownSignals,
    steps: &mut Steps,
) -> Pause {
    let wake = Instant::now() + delay;
    loop {
        let orphan_at = match give_up {
            GiveUp::Orphaned { at } if steps.is_empty() => Some(at),
            _ => None,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => return Pause::Done,
            () = tokio::time::sleep_until(orphan_at.unwrap_or(wake)), if orphan_at.is_some() => {
                return Pause::Orphaned;
            }
            () = steps.next_done() => {}
            name = signals.recv() => {
                info!("{name} received while disconnected");
                return Pause::Signalled;
            }
        }
    }
}

/// Why one connection attempt failed.
enum AttemptError {
    /// Worth trying again later (no master yet, master restarting).
    Retry(String),
    /// The master refused us for a reason that may pass (a worker of our
    /// name is connected): try again, and say so louder than a retry.
    Refused(String),
    /// Trying again would give the same answer.
    Fatal(WorkerError),
}

/// Connect until it works, a fatal error happens, a shutdown signal
/// arrives, or `give_up` says so. Every Hello lists the steps then held.
pub(crate) async fn connect_with_retry(
    opts: &WorkerOptions,
    steps: &mut Steps,
    backoff: &mut Backoff,
    signals: &mut ShutdownSignals,
    give_up: GiveUp,
) -> Result<Connected, WorkerError> {
    loop {
        let running = steps.held();
        let reason = tokio::select! {
            attempt = attempt(opts, &running) => match attempt {
                Ok(link) => {
                    let listed = running.iter().map(|s| (s.build, s.step)).collect();
                    return Ok(Connected::Link(link, listed));
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry(reason)) => Err(reason),
                Err(AttemptError::Refused(reason)) => Ok(reason),
            },
            name = signals.recv() => {
                info!("{name} received while connecting");
                return Ok(Connected::Signalled);
            }
        };
        let mut delay = backoff.next_delay(Instant::now());
        if let GiveUp::FirstConnection { started } = give_up {
            let waited = started.elapsed();
            if waited >= FIRST_CONNECT_WAIT {
                return Err(match reason {
                    Ok(refusal) => WorkerError::Refused { reason: refusal },
                    Err(reason) => WorkerError::Unreachable {
                        socket: opts.master_socket.clone(),
                        waited_s: waited.as_secs(),
                        reason,
                    },
                });
            }
            delay = delay.min(FIRST_CONNECT_WAIT - waited);
        }
        match reason {
            Ok(refusal) => warn!(
                "the master refused this worker: {refusal} (is another worker running under the name `{}`?); trying again in {:.1} s",
                opts.name,
                delay.as_secs_f64()
            ),
            Err(reason) => info!(
                "cannot reach the master at {}: {reason}; retrying in {:.1} s",
                opts.master_socket.display(),
                delay.as_secs_f64()
            ),
        }
        match pause(delay, give_up, signals, steps).await {
            Pause::Done => {}
            Pause::Signalled => return Ok(Connected::Signalled),
            Pause::Orphaned => return Ok(Connected::Orphaned),
        }
    }
}

/// This machine's name, told to the master for `bbctl workers`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// One connection attempt, handshake included.
async fn attempt(opts: &WorkerOptions, running: &[RunningStep]) -> Result<Link, AttemptError> {
    let stream = connect(&opts.master_socket).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let hello = Hello::new(Role::Worker {
        name: opts.name.clone(),
        running: running.to_vec(),
        host: host_name(),
    });
    let exchange = async {
        write_msg(&mut writer, &hello).await?;
        match read_msg::<_, HelloReply>(&mut reader, MAX_HANDSHAKE_FRAME).await? {
            HelloReply::Challenge { nonce } => {
                let mac = proof::prove(&opts.secret, &nonce, &opts.name, &[]);
                write_msg(&mut writer, &WorkerProof { mac }).await?;
                read_msg::<_, HelloReply>(&mut reader, MAX_HANDSHAKE_FRAME).await
            }
            other => Ok(other),
        }
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
            keepalive_ms,
        } => {
            if version != PROTOCOL_VERSION {
                warn!(version, "master welcomed us with another protocol version");
            }
            info!(
                master = %software,
                master_pid,
                worker = %opts.name,
                held = running.len(),
                "connected to the master at {}",
                opts.master_socket.display()
            );
            Ok(Link {
                reader,
                writer,
                keepalive_ms,
            })
        }
        HelloReply::Refused { reason, kind } if refusal_is_transient(kind) => {
            Err(AttemptError::Refused(reason))
        }
        HelloReply::Refused { reason, .. } => {
            Err(AttemptError::Fatal(WorkerError::Refused { reason }))
        }
        HelloReply::Challenge { .. } => Err(AttemptError::Fatal(WorkerError::Refused {
            reason: "the master challenged us twice (not a bbmaster of this version?)".into(),
        })),
    }
}

/// A refusal because "this worker is already connected" comes from a master
/// that still believes in our previous, dead link (it will notice soon), or
/// from a second worker of our name being connected (it may leave): worth
/// retrying, like a master at its limit of connections still in their
/// handshake (busy), unlike every other refusal. Decided by the refusal's kind,
/// never by its words (a master too old to send kinds speaks protocol
/// version 1 and is refused at the handshake anyway).
fn refusal_is_transient(kind: RefusalKind) -> bool {
    matches!(kind, RefusalKind::AlreadyConnected | RefusalKind::Busy)
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
        let t0 = Instant::now();
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay(t0).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        b.reset(t0);
        assert_eq!(b.next_delay(t0), BACKOFF_MIN);
    }

    #[test]
    fn after_a_lost_link_attempts_stay_frequent_for_a_while() {
        let t0 = Instant::now();
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.next_delay(t0);
        }
        b.reset(t0);
        let soon = t0 + FAST_RECONNECT_FOR - Duration::from_millis(1);
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay(soon).as_millis()).collect();
        assert_eq!(delays, [100, 200, 250, 250, 250, 250]);
        let later = t0 + FAST_RECONNECT_FOR;
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay(later).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000]);
    }

    #[test]
    fn short_links_lost_again_and_again_meet_the_back_off() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Backoff::new();
        // A first short link: reset.
        b.link_lost(t0, ms(50));
        assert_eq!(b.next_delay(t0), ms(100));
        assert_eq!(b.next_delay(t0), ms(200));
        // Another one lost in the window: no reset; the window still caps.
        b.link_lost(t0 + ms(400), ms(50));
        assert_eq!(b.next_delay(t0 + ms(400)), ms(250));
        // Past the window the delays double again.
        let later = t0 + FAST_RECONNECT_FOR + ms(1);
        assert_eq!(b.next_delay(later), ms(250));
        assert_eq!(b.next_delay(later), ms(500));
        // A long link resets even in a window.
        b.reset(later);
        b.link_lost(later + ms(1), STABLE_SESSION);
        assert_eq!(b.next_delay(later + ms(1)), ms(100));
    }

    #[test]
    fn only_already_connected_and_busy_refusals_are_retried() {
        assert!(refusal_is_transient(RefusalKind::AlreadyConnected));
        assert!(refusal_is_transient(RefusalKind::Busy));
        // The words do not decide: only the kind does.
        for kind in [
            RefusalKind::Other,
            RefusalKind::WrongSecret,
            RefusalKind::UnknownWorker,
            RefusalKind::Removed,
            RefusalKind::Version,
            RefusalKind::Certificate,
        ] {
            assert!(!refusal_is_transient(kind), "{kind:?}");
        }
    }
}
