//! One worker connection: handshake, then steps out and output in.
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tracing::warn;

use crate::daemon::core::LinkId;
use crate::daemon::handle::MasterHandle;
use crate::daemon::limits::{Limits, MAX_WORKER_LABEL};
use crate::daemon::messages::LinkMeta;
use crate::daemon::transfer::Transfers;
use crate::paths::now_ms;
use crate::protocol::proof::Proof;
use crate::protocol::{self, Hello, HelloReply, RefusalKind, Role, WorkerProof};
use crate::untrusted::{Escaped, capped};
use interprocess::local_socket::traits::StreamCommon as _;
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

/// Serve one connection on the worker socket until it ends.
pub async fn serve(
    stream: Stream,
    link: LinkId,
    master: MasterHandle,
    logs: PathBuf,
    limits: Arc<Limits>,
) {
    let keepalive = limits.keepalive;
    let pid = stream.peer_creds().ok().and_then(|c| c.pid());
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The whole handshake (hello, challenge, proof) has one deadline.
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let hello: Hello = match tokio::time::timeout_at(
        deadline,
        protocol::read_msg(&mut rd, limits.max_handshake_frame),
    )
    .await
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            refuse(
                &mut wr,
                link,
                RefusalKind::Other,
                &format!("bad handshake: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(
                &mut wr,
                link,
                RefusalKind::Other,
                "handshake not finished in time",
            )
            .await;
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
    // The worker proves its secret over a fresh nonce; the secret itself
    // never crosses the wire (see protocol::proof).
    let nonce = protocol::proof::nonce().to_vec();
    let challenge = HelloReply::Challenge {
        nonce: nonce.clone(),
    };
    if protocol::write_msg(&mut wr, &challenge).await.is_err() {
        return;
    }
    let answer: WorkerProof = match tokio::time::timeout_at(
        deadline,
        protocol::read_msg(&mut rd, limits.max_handshake_frame),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            refuse(
                &mut wr,
                link,
                RefusalKind::Other,
                &format!("bad handshake: {e}"),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(
                &mut wr,
                link,
                RefusalKind::Other,
                "handshake not finished in time",
            )
            .await;
            return;
        }
    };
    let proof = Proof {
        nonce,
        binding: Vec::new(),
        mac: answer.mac,
    };
    // Secret guessing is slowed for the whole master: every attempt takes
    // a token of the shared gate before its secret is looked at.
    let admitted = limits.login_gate.admit().await;
    let (tx, mut cmds) = mpsc::unbounded_channel();
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let meta = LinkMeta {
        software,
        host,
        pid,
        last_seen_ms: Arc::clone(&last_seen),
    };
    let answer = master
        .worker_hello(name.clone(), proof, held, meta, link, tx)
        .await;
    match answer {
        Some(Ok(())) => admitted.succeeded(),
        Some(Err(refusal)) => {
            let name = Escaped(&name);
            let reason = Escaped(&refusal.reason);
            match refusal.kind {
                RefusalKind::WrongSecret | RefusalKind::UnknownWorker => warn!(
                    link, worker = %name, ?pid,
                    "worker authentication failed: {reason}"
                ),
                // The secret was right: its token of the login gate goes
                // back; a failed login's stays spent.
                RefusalKind::AlreadyConnected => {
                    admitted.succeeded();
                    warn!(
                        link, worker = %name, ?pid,
                        "worker refused: already connected (another process with this name, or its previous link not yet seen lost)"
                    )
                }
                _ => {
                    admitted.succeeded();
                    warn!(link, worker = %name, ?pid, "worker refused: {reason}")
                }
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
        };
        link_state.run(rd, &mut wr, &mut cmds).await;
    }
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, link: LinkId, kind: RefusalKind, reason: &str) {
    warn!(link, "worker connection refused: {}", Escaped(reason));
    let _ = protocol::write_msg(wr, &HelloReply::refused(kind, reason)).await;
}
