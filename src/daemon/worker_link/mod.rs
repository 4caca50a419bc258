//! One worker connection, of any transport (the listeners in
//! `daemon/listeners` hand it over with what they know of the peer):
//! handshake, then steps out and output in.
//!
//! Output is written to the step's log file right here, without passing
//! through the master loop, and only for steps this link was given: a
//! worker cannot write into another worker's build. A step's end is passed
//! to the master loop after all of its output is on disk.

//!
//! Split by job: this file takes a connection through the handshake and
//! the secret check; [`link`] runs an authenticated link (pings, steps
//! out, output and ends in, transfers); [`step_log`] holds one step's log.

mod link;
mod step_log;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::daemon::core::LinkId;
use crate::daemon::handle::MasterHandle;
use crate::daemon::limits::{Limits, MAX_WORKER_LABEL};
use crate::daemon::messages::{LinkCmd, LinkMeta};
use crate::daemon::peer::PeerInfo;
use crate::daemon::transfer::Transfers;
use crate::net::BoxConn;
use crate::paths::now_ms;
use crate::protocol::proof::Proof;
use crate::protocol::{self, Hello, HelloReply, RefusalKind, Role, WorkerProof};
use crate::untrusted::{Escaped, capped};
use std::sync::atomic::AtomicU64;

use link::Link;

/// Tells the master loop a link is gone when dropped.
struct LinkGone {
    link: LinkId,
    master: MasterHandle,
}

impl Drop for LinkGone {
    fn drop(&mut self) {
        self.master.worker_gone(self.link);
    }
}

/// How long a refused worker waits for the refusal.
const REFUSAL_DELAY: Duration = Duration::from_secs(1);

pub use crate::daemon::limits::HANDSHAKE_TIMEOUT;

/// What a worker connection task is given besides its connection.
pub struct LinkContext {
    /// The link's id.
    pub link: LinkId,
    /// The front door of the master loop.
    pub master: MasterHandle,
    /// The step logs.
    pub logs: PathBuf,
    /// Frame, log and transfer limits.
    pub limits: Arc<Limits>,
    /// When the whole handshake (TLS included, which the listener did)
    /// must be done.
    pub deadline: tokio::time::Instant,
}

/// How long the old link of a worker has to answer a ping when a second
/// connection proves itself under its name: twice the keepalive, at most
/// this.
const OLD_LINK_PING: Duration = Duration::from_secs(5);

/// Serve one worker connection, of any transport, until it ends.
pub async fn serve(conn: BoxConn, mut peer: PeerInfo, ctx: LinkContext) {
    let LinkContext {
        link,
        master,
        logs,
        limits,
        deadline,
    } = ctx;
    let keepalive = limits.keepalive;
    let pid = peer.pid;
    let (mut rd, mut wr) = tokio::io::split(conn);
    // The whole handshake (hello, challenge, proof) has one deadline.
    let hello: Hello = match read_in_time(&mut rd, deadline, limits.max_handshake_frame).await {
        Ok(hello) => hello,
        Err(reason) => {
            refuse(&mut wr, link, RefusalKind::Other, &reason).await;
            return;
        }
    };
    // Everything the hello says is the peer's word: short and escaped
    // before it reaches a message, the log or `bbctl workers`.
    let mut hello = hello;
    hello.software = capped(&hello.software, MAX_WORKER_LABEL);
    hello.magic = capped(&hello.magic, MAX_WORKER_LABEL);
    if let Err(reason) = hello.check() {
        refuse(&mut wr, link, RefusalKind::Version, &reason).await;
        return;
    }
    let software = hello.software.clone();
    let Role::Worker {
        name,
        running: held,
        host,
    } = hello.role
    else {
        refuse(
            &mut wr,
            link,
            RefusalKind::Other,
            "this is the worker socket; bbctl connects to the control socket",
        )
        .await;
        return;
    };
    let host = host.map(|h| capped(&h, MAX_WORKER_LABEL));
    // A build step that found a worker's secret (a local worker of the
    // master's own user keeps it in the state dir) may not pose as one.
    if let Some(worker) = pid
        .and_then(|pid| crate::daemon::lineage::worker_ancestor(pid, &limits.worker_socket, false))
    {
        warn!(
            link,
            ?pid,
            worker_pid = worker.pid,
            name = %Escaped(&name),
            "worker connection from a build step refused"
        );
        refuse(
            &mut wr,
            link,
            RefusalKind::Other,
            &format!(
                "permission denied: process {} {}; build steps may not connect as workers",
                pid.unwrap_or(0),
                worker.describe()
            ),
        )
        .await;
        return;
    }
    // With `client_ca`, the certificate rustls verified must name the
    // worker it claims to be.
    if let Err(reason) = peer.check_client_name(&name) {
        peer.failed_proof();
        warn!(link, peer = ?peer.addr, worker = %Escaped(&name), "worker refused: {}", Escaped(&reason));
        tokio::time::sleep(REFUSAL_DELAY).await;
        let _ = protocol::write_msg(
            &mut wr,
            &HelloReply::refused(RefusalKind::Certificate, reason),
        )
        .await;
        return;
    }
    // The worker proves its secret over a fresh nonce; the secret itself
    // never crosses the wire (see protocol::proof).
    let nonce = protocol::proof::nonce().to_vec();
    let challenge = HelloReply::Challenge {
        nonce: nonce.clone(),
    };
    if protocol::write_msg(&mut wr, &challenge).await.is_err() {
        return;
    }
    let answer: WorkerProof =
        match read_in_time(&mut rd, deadline, limits.max_handshake_frame).await {
            Ok(answer) => answer,
            Err(reason) => {
                refuse(&mut wr, link, RefusalKind::Other, &reason).await;
                return;
            }
        };
    let proof = Proof {
        nonce,
        binding: std::mem::take(&mut peer.binding),
        mac: answer.mac,
    };
    // Secret guessing is slowed for the whole master: every attempt takes
    // a token of the shared gate before its secret is looked at.
    let admitted = limits.login_gate.admit().await;
    let (tx, mut cmds) = mpsc::unbounded_channel();
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let rtt_us = Arc::new(AtomicU64::new(u64::MAX));
    let meta = LinkMeta {
        software,
        host,
        pid,
        transport: peer.transport,
        peer: peer.addr,
        tls_version: peer.tls_version.clone(),
        ping_rtt_us: Arc::clone(&rtt_us),
        last_seen_ms: Arc::clone(&last_seen),
    };
    let hello = |replaces| {
        master.worker_hello(
            name.clone(),
            proof.clone(),
            held.clone(),
            meta.clone(),
            link,
            tx.clone(),
            replaces,
        )
    };
    let mut answer = hello(None).await;
    if let Some(Err(refusal)) = &answer
        && refusal.kind == RefusalKind::AlreadyConnected
        && let Some((old, old_tx)) = master.link_of(&name).await
    {
        // One worker, one link: the old link keeps the name if it still
        // answers; a silent one (a half-open connection, a frozen
        // process) gives way to this one.
        let (pong_tx, pong) = oneshot::channel();
        let bound = (keepalive * 2).min(OLD_LINK_PING);
        let alive = old_tx.send(LinkCmd::Ping(pong_tx)).is_ok()
            && matches!(tokio::time::timeout(bound, pong).await, Ok(Ok(_)));
        if !alive {
            answer = hello(Some(old)).await;
        }
    }
    match answer {
        Some(Ok(())) => {
            admitted.succeeded();
            peer.proved();
        }
        Some(Err(refusal)) => {
            let name = Escaped(&name);
            let reason = Escaped(&refusal.reason);
            let from = peer.addr;
            match refusal.kind {
                RefusalKind::WrongSecret | RefusalKind::UnknownWorker => {
                    peer.failed_proof();
                    warn!(
                        link, worker = %name, ?pid, peer = ?from,
                        "worker authentication failed: {reason}"
                    )
                }
                // The secret was right: its token of the login gate goes
                // back; a failed login's stays spent.
                RefusalKind::AlreadyConnected => {
                    admitted.succeeded();
                    warn!(
                        link, worker = %name, ?pid, peer = ?from,
                        "worker refused: already connected (another process with this name, whose link answers pings)"
                    )
                }
                _ => {
                    admitted.succeeded();
                    warn!(link, worker = %name, ?pid, peer = ?from, "worker refused: {reason}")
                }
            }
            // A standby sends the worker to the leader at once.
            if refusal.kind == RefusalKind::NotLeader {
                let reply = HelloReply::not_leader(refusal.reason, refusal.leader);
                let _ = protocol::write_msg(&mut wr, &reply).await;
                return;
            }
            // A refused worker waits before it hears why: guessing secrets
            // costs a second a try, and a second worker of the same name
            // cannot spin.
            tokio::time::sleep(REFUSAL_DELAY).await;
            let _ =
                protocol::write_msg(&mut wr, &HelloReply::refused(refusal.kind, refusal.reason))
                    .await;
            return;
        }
        None => return,
    }
    // Authenticated: the slot among connections not yet authenticated
    // is free for another.
    drop(peer.slot.take());
    // From here the master counts this link as live: however this task
    // ends, even by a panic, the master hears that the link is gone.
    let _gone = LinkGone {
        link,
        master: master.clone(),
    };
    let welcome = HelloReply::Welcome {
        version: protocol::PROTOCOL_VERSION,
        software: protocol::handshake::software(),
        master_pid: std::process::id(),
        keepalive_ms: Some(keepalive.as_millis() as u64),
    };
    if protocol::write_msg(&mut wr, &welcome).await.is_ok() {
        let mut link_state = Link {
            id: link,
            worker: name,
            master: master.clone(),
            logs,
            open: HashMap::new(),
            keepalive,
            last_seen,
            pings: HashMap::new(),
            transfers: Transfers::new(limits.dirs.clone(), master.clone(), limits.worker.clone()),
            outbox: Vec::new(),
            limits: Arc::clone(&limits),
            rtt_us,
        };
        link_state.run(rd, &mut wr, &mut cmds).await;
    }
}

/// One handshake message, by the handshake's deadline; `Err` is the
/// refusal's reason.
async fn read_in_time<T, R>(
    rd: &mut R,
    deadline: tokio::time::Instant,
    max_frame: usize,
) -> Result<T, String>
where
    T: serde::de::DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    match tokio::time::timeout_at(deadline, protocol::read_msg(rd, max_frame)).await {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(format!("bad handshake: {e}")),
        Err(_) => Err("handshake not finished in time".into()),
    }
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, link: LinkId, kind: RefusalKind, reason: &str) {
    warn!(link, "worker connection refused: {}", Escaped(reason));
    let _ = protocol::write_msg(wr, &HelloReply::refused(kind, reason)).await;
}
