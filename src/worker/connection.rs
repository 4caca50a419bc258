//! Reaching the master: connect (see [`super::dial`]), say Hello (listing
//! the steps still held), prove our secret, read the answer, and retry
//! with a jittered exponential backoff while it cannot be reached.

use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{info, warn};

use super::address::MasterAddr;
use super::backoff::Backoff;
use super::dial::{AttemptError, Dialer, tls_io_error};
use super::key::StepKey;
use super::masters::{self, Rotation};
use super::signals::ShutdownSignals;
use super::steps::Steps;
use super::{WorkerError, WorkerOptions};
use crate::net::BoxConn;
use crate::protocol::{
    FrameError, Hello, HelloReply, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION, RefusalKind, Role,
    RunningStep, WorkerProof, proof, read_msg, write_msg,
};

/// How long a worker started with `--orphan-timeout` keeps trying to reach
/// a master that is not there yet on its *first* connection (the master is
/// starting alongside us); past that it fails.
pub const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(10);

/// An authenticated connection, split for the reader and writer tasks.
pub(crate) struct Link {
    /// Frames from the master.
    pub(crate) reader: ReadHalf<BoxConn>,
    /// Frames to the master.
    pub(crate) writer: WriteHalf<BoxConn>,
    /// The keepalive interval from the Welcome.
    pub(crate) keepalive_ms: Option<u64>,
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

/// Why one attempt on one master failed, when trying again may help.
enum Failure {
    /// It cannot be reached (or hung up during the handshake).
    Unreachable(String),
    /// It refused us for a reason that may pass (a worker of our name is
    /// connected, too many handshakes).
    Refused(String),
    /// It is a standby.
    NotLeader(String),
}

/// Connect until it works, a fatal error happens, a shutdown signal
/// arrives, or `give_up` says so. Every Hello lists the steps then held.
///
/// With several masters, each round of attempts (a cycle) tries them in
/// order, goes straight to the leader a standby names (once per cycle)
/// and only backs off when the whole cycle failed: see [`super::masters`].
pub(crate) async fn connect_with_retry(
    opts: &WorkerOptions,
    dialers: &[Dialer],
    steps: &mut Steps,
    backoff: &mut Backoff,
    signals: &mut ShutdownSignals,
    give_up: GiveUp,
) -> Result<Connected, WorkerError> {
    let addrs: Vec<MasterAddr> = dialers.iter().map(|d| d.addr().clone()).collect();
    let mut rotation = Rotation::new(dialers.len());
    loop {
        rotation.start_cycle();
        let mut last = None;
        while let Some(index) = rotation.next() {
            let dialer = &dialers[index];
            // Listed afresh at each attempt: whichever master welcomes us
            // (a standby that took over included) re-adopts them all.
            let running = steps.held();
            let failure = tokio::select! {
                attempt = attempt(opts, dialer, &running) => match attempt {
                    Ok(link) => {
                        let listed = running.iter().map(|s| (s.build, s.step)).collect();
                        return Ok(Connected::Link(link, listed));
                    }
                    Err(AttemptError::Fatal(e)) => return Err(e),
                    Err(AttemptError::Retry(reason)) => Failure::Unreachable(reason),
                    Err(AttemptError::Refused(reason)) => Failure::Refused(reason),
                    Err(AttemptError::NotLeader { reason, leader }) => {
                        not_leader(&addrs, index, &reason, leader.as_deref(), &mut rotation);
                        Failure::NotLeader(reason)
                    }
                },
                name = signals.recv() => {
                    info!("{name} received while connecting");
                    return Ok(Connected::Signalled);
                }
            };
            if let Some(next) = rotation.peek() {
                log_failure(
                    opts,
                    &addrs[index],
                    &failure,
                    &format!("trying {} now", addrs[next]),
                );
            }
            last = Some((index, failure));
        }
        let Some((index, failure)) = last else {
            unreachable!("a cycle tries at least one master");
        };
        let mut delay = backoff.next_delay(Instant::now());
        if let GiveUp::FirstConnection { started } = give_up {
            let waited = started.elapsed();
            if waited >= FIRST_CONNECT_WAIT {
                return Err(match failure {
                    Failure::Refused(reason) | Failure::NotLeader(reason) => {
                        WorkerError::Refused { reason }
                    }
                    Failure::Unreachable(reason) => WorkerError::Unreachable {
                        master: masters::list(&addrs),
                        waited_s: waited.as_secs(),
                        reason,
                    },
                });
            }
            delay = delay.min(FIRST_CONNECT_WAIT - waited);
        }
        let again = match &failure {
            Failure::Refused(_) => "trying again in",
            Failure::Unreachable(_) | Failure::NotLeader(_) => "retrying in",
        };
        let mut then = format!("{again} {:.1} s", delay.as_secs_f64());
        if addrs.len() > 1 {
            then.push_str(" (every master tried)");
        }
        log_failure(opts, &addrs[index], &failure, &then);
        match pause(delay, give_up, signals, steps).await {
            Pause::Done => {}
            Pause::Signalled => return Ok(Connected::Signalled),
            Pause::Orphaned => return Ok(Connected::Orphaned),
        }
    }
}

/// A standby refused us: go to the leader it names when that is one of
/// our masters (the hop, at most once a cycle), else on in order.
fn not_leader(
    addrs: &[MasterAddr],
    index: usize,
    reason: &str,
    leader: Option<&str>,
    rotation: &mut Rotation,
) {
    let standby = &addrs[index];
    let Some(hint) = leader else {
        return;
    };
    match masters::leader_index(addrs, hint) {
        Some(to) if rotation.redirect(to) => info!(
            "the master at {standby} is a standby ({reason}); going to the leader at {} now",
            addrs[to]
        ),
        Some(_) => {}
        None => warn!(
            "the master at {standby} is a standby and names the leader {hint}, which is not one of this worker's --master addresses ({}): add it to go there",
            masters::list(addrs)
        ),
    }
}

/// Log a failed attempt on `master`, and what comes next (`then`).
fn log_failure(opts: &WorkerOptions, master: &MasterAddr, failure: &Failure, then: &str) {
    match failure {
        Failure::Unreachable(reason) => {
            info!("cannot reach the master at {master}: {reason}; {then}");
        }
        Failure::Refused(refusal) => warn!(
            "the master refused this worker: {refusal} (is another worker running under the name `{}`?); {then}",
            opts.name
        ),
        Failure::NotLeader(reason) => {
            info!("the master at {master} is a standby ({reason}); {then}");
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

/// One connection attempt, handshake included. A master that accepts but
/// does not answer the Hello within the dialer's limit (10 s with one
/// master, 5 s with several) is treated like one that cannot be reached.
async fn attempt(
    opts: &WorkerOptions,
    dialer: &Dialer,
    running: &[RunningStep],
) -> Result<Link, AttemptError> {
    let dialed = dialer.dial().await?;
    let (mut reader, mut writer) = tokio::io::split(dialed.conn);
    let hello = Hello::new(Role::Worker {
        name: opts.name.clone(),
        running: running.to_vec(),
        host: host_name(),
    });
    let binding = dialed.binding;
    let exchange = async {
        write_msg(&mut writer, &hello).await?;
        match read_msg::<_, HelloReply>(&mut reader, MAX_HANDSHAKE_FRAME).await? {
            HelloReply::Challenge { nonce } => {
                let mac = proof::prove(&opts.secret, &nonce, &opts.name, &binding);
                write_msg(&mut writer, &WorkerProof { mac }).await?;
                read_msg::<_, HelloReply>(&mut reader, MAX_HANDSHAKE_FRAME).await
            }
            other => Ok(other),
        }
    };
    let reply = match tokio::time::timeout(dialer.limit(), exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return Err(handshake_error(dialer.addr(), e)),
        Err(_) => {
            return Err(AttemptError::Retry(format!(
                "no answer to our hello within {} s",
                dialer.limit().as_secs()
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
                transport = ?dialer.addr().transport(),
                "connected to the master at {}",
                dialer.addr()
            );
            Ok(Link {
                reader,
                writer,
                keepalive_ms,
            })
        }
        HelloReply::Refused {
            reason,
            kind: RefusalKind::NotLeader,
            leader,
        } => Err(AttemptError::NotLeader { reason, leader }),
        HelloReply::Refused { reason, kind, .. } if refusal_is_transient(kind) => {
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

/// A standby's refusal ([`RefusalKind::NotLeader`]) is handled apart
/// (the worker goes to the leader, or tries again later); of the others, a
/// refusal because "this worker is already connected" comes from a master
/// that still believes in our previous, dead link (it will notice soon), or
/// from a second worker of our name being connected (it may leave): worth
/// retrying, like a master at its limit of connections still in their
/// handshake (busy), unlike every other refusal. Decided by the refusal's kind,
/// never by its words (a master too old to send kinds speaks protocol
/// version 1 and is refused at the handshake anyway).
fn refusal_is_transient(kind: RefusalKind) -> bool {
    matches!(kind, RefusalKind::AlreadyConnected | RefusalKind::Busy)
}

/// A master that hangs up during the handshake may be restarting: retry.
/// One that sends garbage is not speaking our protocol: give up. Under
/// TLS 1.3 a master that rejects our client certificate says so only
/// now, at the first read: that is fatal too.
fn handshake_error(addr: &MasterAddr, e: FrameError) -> AttemptError {
    if let FrameError::Io(io) = &e
        && super::tls::rustls_error(io).is_some()
    {
        return tls_io_error(addr, io, "handshake");
    }
    if e.is_disconnect() {
        AttemptError::Retry(format!("connection closed during the handshake: {e}"))
    } else {
        AttemptError::Fatal(WorkerError::Handshake {
            master: addr.to_string(),
            error: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_already_connected_and_busy_refusals_are_retried() {
        assert!(refusal_is_transient(RefusalKind::AlreadyConnected));
        assert!(refusal_is_transient(RefusalKind::Busy));
        // The words do not decide: only the kind does.
        for kind in [
            RefusalKind::NotLeader,
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
