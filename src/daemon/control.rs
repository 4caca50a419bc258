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
use tracing::{debug, warn};

use crate::daemon::auth::{Ask, Principal};
pub use crate::daemon::client_slots::ClientSlots;
use crate::daemon::client_slots::IDLE_TIMEOUT;
use crate::daemon::follow;
use crate::daemon::handle::MasterHandle;
use crate::daemon::limits::HANDSHAKE_TIMEOUT;
use crate::daemon::limits::Limits;
use crate::daemon::lineage;
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
    /// The front door of the master loop.
    pub master: MasterHandle,
    /// The step logs.
    pub logs: PathBuf,
    /// The worker socket: a peer descending from a worker of it is a build
    /// step, and steps never get the master's authority.
    pub worker_socket: PathBuf,
}

/// Serve one control connection until the client leaves.
pub async fn serve(stream: Stream, ctx: ControlContext) {
    let own_uid = nix::unistd::geteuid().as_raw();
    let creds = stream.peer_creds().ok();
    let peer_uid = creds.as_ref().and_then(|c| c.euid());
    let peer_gid = creds.as_ref().and_then(|c| c.egid());
    let peer_pid = creds.as_ref().and_then(|c| c.pid());
    let (mut rd, mut wr) = tokio::io::split(stream);
    let under_worker =
        peer_pid.and_then(|pid| lineage::worker_ancestor(pid, &ctx.worker_socket, true));
    let who = Principal::LocalUser {
        uid: peer_uid,
        gid: peer_gid,
        pid: peer_pid,
        under_worker,
    };
    if let Err(refusal) = ctx.master.authorize(&who, Ask::Connect) {
        match &who {
            Principal::LocalUser {
                pid: Some(pid),
                under_worker: Some(worker),
                ..
            } => warn!(
                peer_pid = pid,
                worker_pid = worker.pid,
                worker = %crate::untrusted::Escaped(worker.name.as_deref().unwrap_or("?")),
                "control connection from a build step refused"
            ),
            _ => warn!(
                ?peer_uid,
                ?peer_gid,
                "control connection from a user not allowed refused"
            ),
        }
        let _ =
            protocol::write_msg(&mut wr, &HelloReply::refused(refusal.kind, refusal.reason)).await;
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
        // At shutdown an idle connection is closed: told, not cut at exit.
        let next = tokio::select! {
            read = next => read,
            () = ctx.master.shutting_down() => return,
        };
        let req = match next {
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
        let answering = answer(req.id, req.body, &mut wr, &ctx, &who);
        let answered = if streaming {
            tokio::select! {
                r = answering => r,
                () = client_gone(&mut rd) => return,
                // A stream that would follow forever ends at shutdown by
                // closing, as a master that went away looks to bbctl (so
                // `--reconnect-for` waits for the next one).
                () = ctx.master.shutting_down() => return,
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
    who: &Principal,
) -> Result<Result<Reply, ErrorReply>, protocol::FrameError> {
    let master = &ctx.master;
    Ok(match body {
        Request::Ping { worker } => master.ping(who, worker).await,
        Request::Prune { dry_run } => master.prune(who, dry_run).await.map(Reply::Pruned),
        Request::Status(filter) => master.status(who, filter).await,
        Request::Events => match events(wr, id, master, who).await? {
            Err(refused) => Err(refused),
            // The stream ends only when the client leaves or the master stops.
            Ok(()) => Err(ErrorReply::failed("the master is shutting down")),
        },
        Request::Artifact { build, name } => {
            return crate::daemon::transfer::send_artifact(
                wr,
                id,
                build,
                &name,
                master,
                who,
                &ctx.limits.dirs,
            )
            .await;
        }
        Request::Stream(req) => return follow::stream(wr, id, req, master, who, &ctx.logs).await,
        Request::Shutdown { mode } => master.shutdown(who, mode).await,
        Request::Reload { dry_run, config } => master
            .reload(who, dry_run, config)
            .await
            .map(Reply::Reloaded),
        Request::ForceBuild {
            builder,
            reason,
            properties,
            priority,
            source,
        } => {
            master
                .force_build(who, builder, reason, properties, priority, source)
                .await
        }
        Request::SendChange { change } => master
            .add_changes(
                who,
                crate::protocol::ChangeBatch {
                    changes: vec![change],
                    cursor: None,
                },
            )
            .await
            .map(|change_ids| Reply::ChangesAdded { change_ids }),
        Request::Changes { limit } => master.changes(who, limit).await,
        Request::Cancel { request } => master.cancel(who, request).await,
        Request::Stop { build } => master.stop(who, build).await,
        Request::Queue { builder } => master.queue(who, builder).await,
        Request::Workers => master.workers(who).await,
        Request::Locks => master.locks(who).await,
        Request::Masters => master.masters(who).await,
        Request::Drain { worker, drain } => master.drain(who, worker, drain).await,
        Request::Builds { builder, limit } => master.builds(who, builder, limit).await,
        Request::Build { build } => master.build(who, build).await,
        Request::RequestInfo { request } => master.request_info(who, request).await,
        Request::Artifacts { build } => master.artifacts(who, build).await,
    })
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

/// Stream events to the client until it goes away; a client that falls
/// behind is told how many it missed and carries on.
async fn events<W: AsyncWrite + Unpin>(
    wr: &mut W,
    id: u64,
    master: &MasterHandle,
    who: &Principal,
) -> Result<Result<(), ErrorReply>, protocol::FrameError> {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = match master.subscribe_events(who) {
        Ok(rx) => rx,
        Err(e) => return Ok(Err(e)),
    };
    if master.is_standby() {
        // Events happen on the leader; a standby would stay silent.
        return Ok(Err(master.standby_refusal(Request::Events).await));
    }
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
            Err(RecvError::Closed) => return Ok(Ok(())),
        };
        protocol::write_msg(wr, &ServerMsg::Event { id, event }).await?;
    }
}
