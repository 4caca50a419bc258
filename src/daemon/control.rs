//! One `bbctl` connection on the control socket.
//!
//! The peer's uid is checked first (only the master's own user may talk to
//! it), then the handshake, then requests one after another. A malformed
//! request gets an error frame and the connection is closed; the master
//! goes on serving everyone else.

use std::path::PathBuf;
use std::sync::Arc;

use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon as _;
use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use crate::daemon::actor::{Command, LinkCmd, Notice};
pub use crate::daemon::client_slots::ClientSlots;
use crate::daemon::client_slots::IDLE_TIMEOUT;
use crate::daemon::follow;
use crate::daemon::limits::Limits;
use crate::daemon::lineage;
use crate::daemon::worker_link::HANDSHAKE_TIMEOUT;
use crate::protocol::{
    self, ClientRequest, ErrorReply, Hello, HelloReply, Reply, Request, Role, ServerMsg,
};

/// What every client connection shares.
#[derive(Clone)]
pub struct ControlContext {
    /// Frame limits and who may connect.
    pub limits: Arc<Limits>,
    /// Control connections open now, per uid (for `max_clients`).
    pub clients: Arc<ClientSlots>,
    /// The master loop.
    pub master: mpsc::Sender<Command>,
    /// Build notices, for streams.
    pub notices: broadcast::Sender<Arc<Notice>>,
    /// The master's events, for `bbctl events` and `watch`.
    pub events: broadcast::Sender<Arc<crate::protocol::Event>>,
    /// The step logs.
    pub logs: PathBuf,
    /// The worker socket: a peer descending from a worker of it is a build
    /// step, and steps never get the master's authority.
    pub worker_socket: PathBuf,
    /// Pruning and disk figures, off the master loop.
    pub retention: crate::daemon::retention::RetentionHandle,
}

impl ControlContext {
    /// Ask the master loop and wait for its answer.
    pub async fn call(&self, request: Request) -> Result<Reply, ErrorReply> {
        let gone = || ErrorReply::failed("the master is shutting down");
        let (reply, rx) = oneshot::channel();
        if self
            .master
            .send(Command::Client { request, reply })
            .await
            .is_err()
        {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Serve one control connection until the client leaves.
pub async fn serve(stream: Stream, ctx: ControlContext) {
    let own_uid = nix::unistd::geteuid().as_raw();
    let creds = stream.peer_creds().ok();
    let peer_uid = creds.as_ref().and_then(|c| c.euid());
    let peer_gid = creds.as_ref().and_then(|c| c.egid());
    let peer_pid = creds.as_ref().and_then(|c| c.pid());
    let (mut rd, mut wr) = tokio::io::split(stream);
    if let Some(step) = peer_pid
        .and_then(|pid| lineage::worker_ancestor(pid, &ctx.worker_socket, true).map(|w| (pid, w)))
    {
        let (pid, worker) = step;
        let name = worker.name.as_deref().unwrap_or("?");
        warn!(
            peer_pid = pid,
            worker_pid = worker.pid,
            worker = %crate::untrusted::Escaped(name),
            "control connection from a build step refused"
        );
        let reason = format!(
            "permission denied: process {pid} {}; build steps may not use the control socket",
            worker.describe()
        );
        let _ = protocol::write_msg(
            &mut wr,
            &HelloReply::refused(protocol::RefusalKind::Other, reason),
        )
        .await;
        return;
    }
    if !ctx.limits.allows(own_uid, peer_uid, peer_gid) {
        warn!(
            ?peer_uid,
            ?peer_gid,
            "control connection from a user not allowed refused"
        );
        let reason = format!(
            "permission denied: uid {} may not use this master (it serves uid {own_uid}; see `allowed_uids`/`allowed_gid`)",
            peer_uid
                .map(|u| u.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
        let _ = protocol::write_msg(
            &mut wr,
            &HelloReply::refused(protocol::RefusalKind::Other, reason),
        )
        .await;
        return;
    }
    // One slot per connection, freed however the connection ends.
    let _slot = match ctx
        .clients
        .take(peer_uid, own_uid, ctx.limits.max_clients as usize)
    {
        Ok(slot) => slot,
        Err(no_slot) => {
            warn!(?peer_uid, "control connection refused: {no_slot}");
            let reason = no_slot.to_string();
            let _ = protocol::write_msg(
                &mut wr,
                &HelloReply::refused(protocol::RefusalKind::Other, reason),
            )
            .await;
            return;
        }
    };
    let hello = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        protocol::read_msg::<_, Hello>(&mut rd, ctx.limits.max_handshake_frame),
    )
    .await;
    let refusal = match &hello {
        Ok(Ok(h)) => match h.check() {
            Err(reason) => Some(reason),
            Ok(()) if h.role != Role::Client => {
                Some("this is the control socket; workers connect to the worker socket".to_string())
            }
            Ok(()) => None,
        },
        Ok(Err(e)) => Some(format!("bad handshake: {e}")),
        Err(_) => Some("handshake not finished in time".to_string()),
    };
    if let Some(reason) = refusal {
        debug!("control connection refused: {reason}");
        let _ = protocol::write_msg(
            &mut wr,
            &HelloReply::refused(protocol::RefusalKind::Other, reason),
        )
        .await;
        return;
    }
    let welcome = HelloReply::Welcome {
        version: protocol::PROTOCOL_VERSION,
        software: protocol::handshake::software(),
        master_pid: std::process::id(),
        keepalive_ms: None,
    };
    if protocol::write_msg(&mut wr, &welcome).await.is_err() {
        return;
    }
    loop {
        let next = tokio::time::timeout(
            IDLE_TIMEOUT,
            protocol::read_msg::<_, ClientRequest>(&mut rd, ctx.limits.max_frame),
        );
        let req = match next.await {
            Err(_idle) => {
                debug!("control connection closed after {IDLE_TIMEOUT:?} without a request");
                return;
            }
            Ok(read) => read,
        };
        let req: ClientRequest = match req {
            Ok(req) => req,
            Err(e) if e.is_disconnect() => return,
            Err(e) => {
                debug!("malformed client request: {e}");
                let msg = ServerMsg::Response {
                    id: 0,
                    result: Err(ErrorReply::rejected(format!("malformed request: {e}"))),
                };
                let _ = protocol::write_msg(&mut wr, &msg).await;
                return;
            }
        };
        // A stream can wait a long time for its build: notice a client
        // that leaves meanwhile, so its task and its `max_clients` slot
        // are freed at once (a client sends nothing while it streams).
        let streaming = matches!(req.body, Request::Stream(_) | Request::Events);
        let answering = answer(req.id, req.body, &mut wr, &ctx);
        let answered = if streaming {
            tokio::select! {
                r = answering => r,
                () = client_gone(&mut rd) => return,
            }
        } else {
            answering.await
        };
        let result = match answered {
            Ok(result) => result,
            Err(_) => return,
        };
        let msg = ServerMsg::Response { id: req.id, result };
        match protocol::write_msg(&mut wr, &msg).await {
            Ok(()) => {}
            // Nothing was written: say why instead of closing.
            Err(protocol::FrameError::TooLarge { len, max }) => {
                let too_big = ServerMsg::Response {
                    id: req.id,
                    result: Err(ErrorReply::failed(format!(
                        "the answer ({len} bytes) is over the frame limit ({max} bytes); ask for less"
                    ))),
                };
                if protocol::write_msg(&mut wr, &too_big).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

async fn answer<W: AsyncWrite + Unpin>(
    id: u64,
    body: Request,
    wr: &mut W,
    ctx: &ControlContext,
) -> Result<Result<Reply, ErrorReply>, protocol::FrameError> {
    let gone = || ErrorReply::failed("the master is shutting down");
    match body {
        Request::Ping { worker } => Ok(ping(ctx, worker).await),
        Request::Prune { dry_run } => Ok(ctx
            .retention
            .prune(dry_run)
            .await
            .map(Reply::Pruned)
            .map_err(|e| ErrorReply::failed(e.to_string()))),
        Request::Status(filter) => {
            Ok(ctx
                .call(Request::Status(filter))
                .await
                .map(|reply| match reply {
                    Reply::Status(mut status) => {
                        status.disk = ctx.retention.usage();
                        Reply::Status(status)
                    }
                    other => other,
                }))
        }
        Request::Events => {
            events(wr, id, ctx).await?;
            // The stream ends only when the client leaves or the master stops.
            Ok(Err(gone()))
        }
        Request::Artifact { build, name } => {
            crate::daemon::transfer::send_artifact(wr, id, build, &name, ctx).await
        }
        Request::Stream(req) => {
            follow::stream(wr, id, req, &ctx.master, &ctx.notices, &ctx.logs).await
        }
        Request::Shutdown { mode } => {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Shutdown {
                mode,
                reply: Some(reply),
            };
            if ctx.master.send(cmd).await.is_err() {
                return Ok(Err(gone()));
            }
            Ok(rx.await.unwrap_or_else(|_| Err(gone())))
        }
        Request::Reload { dry_run, config } => {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Reload {
                dry_run,
                config,
                reply: Some(reply),
            };
            if ctx.master.send(cmd).await.is_err() {
                return Ok(Err(gone()));
            }
            Ok(rx
                .await
                .unwrap_or_else(|_| Err(gone()))
                .map(Reply::Reloaded))
        }
        request => Ok(ctx.call(request).await),
    }
}

/// Time a round trip through a worker's link: master to worker and back.
async fn ping(ctx: &ControlContext, worker: String) -> Result<Reply, ErrorReply> {
    let gone = || ErrorReply::failed("the master is shutting down");
    let (reply, rx) = oneshot::channel();
    let cmd = Command::LinkOf {
        worker: worker.clone(),
        reply,
    };
    ctx.master.send(cmd).await.map_err(|_| gone())?;
    let link = rx.await.map_err(|_| gone())??;
    let (pong_tx, pong) = oneshot::channel();
    link.send(LinkCmd::Ping(pong_tx))
        .map_err(|_| ErrorReply::failed(format!("worker `{worker}` just disconnected")))?;
    match tokio::time::timeout(PING_TIMEOUT, pong).await {
        Ok(Ok(rtt)) => Ok(Reply::Pong {
            worker,
            round_trip_us: rtt.as_micros() as u64,
        }),
        Ok(Err(_)) => Err(ErrorReply::failed(format!(
            "worker `{worker}` disconnected before answering"
        ))),
        Err(_) => Err(ErrorReply::failed(format!(
            "no answer from worker `{worker}` within {} s",
            PING_TIMEOUT.as_secs()
        ))),
    }
}

/// Returns once the client has closed its end (or the socket failed).
async fn client_gone<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    loop {
        match rd.read(&mut byte).await {
            Ok(0) | Err(_) => return,
            // Bytes during a stream break the protocol; they are dropped.
            Ok(_) => {}
        }
    }
}

/// How long `bbctl ping` waits for the worker's answer.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Stream events to the client until it goes away; a client that falls
/// behind is told how many it missed and carries on.
async fn events<W: AsyncWrite + Unpin>(
    wr: &mut W,
    id: u64,
    ctx: &ControlContext,
) -> Result<(), protocol::FrameError> {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = ctx.events.subscribe();
    let hello = crate::protocol::Event {
        at_ms: crate::paths::now_ms(),
        generation: 0,
        kind: crate::protocol::EventKind::Subscribed,
    };
    protocol::write_msg(wr, &ServerMsg::Event { id, event: hello }).await?;
    loop {
        let event = match rx.recv().await {
            Ok(event) => (*event).clone(),
            Err(RecvError::Lagged(missed)) => crate::protocol::Event {
                at_ms: crate::paths::now_ms(),
                generation: 0,
                kind: crate::protocol::EventKind::Lagged { missed },
            },
            Err(RecvError::Closed) => return Ok(()),
        };
        protocol::write_msg(wr, &ServerMsg::Event { id, event }).await?;
    }
}
