//! Every way in that is a listening socket: the control socket, the
//! worker socket and the TCP listeners for remote workers all take their
//! connections through one accept loop ([`accept_loop`], with one
//! [`AcceptBackoff`]), and every worker connection, whatever its
//! transport, is served by the one worker handshake (`worker_link::serve`).
//!
//! Split by job: [`tcp`] binds TCP listeners and takes a TCP connection
//! through TLS; [`set`] keeps the TCP listeners in step with the config
//! (reload) and says what they are for `bbctl status`.

pub mod set;
pub mod tcp;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use interprocess::local_socket::traits::StreamCommon as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

use crate::daemon::handle::MasterHandle;
use crate::daemon::limits::{HANDSHAKE_TIMEOUT, Limits, MAX_UNAUTHENTICATED};
use crate::daemon::login_gate::AddressGate;
use crate::daemon::peer::PeerInfo;
use crate::daemon::worker_link::{self, LinkContext};

/// A listening socket: anything that hands out connections.
pub trait Acceptor: Send + 'static {
    /// What one accepted connection is.
    type Conn: Send + 'static;
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Acceptor for interprocess::local_socket::tokio::Listener {
    type Conn = interprocess::local_socket::tokio::Stream;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        interprocess::local_socket::traits::tokio::Listener::accept(self)
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Conn = (tokio::net::TcpStream, std::net::SocketAddr);
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send {
        tokio::net::TcpListener::accept(self)
    }
}

/// Accept connections of `acceptor` for ever, each served by `serve` in a
/// task of its own that holds a clone of `open` (so the master can wait
/// for the last ones at shutdown). `what` names the socket in the log.
pub async fn accept_loop<A, F, Fut>(what: String, acceptor: A, open: mpsc::Sender<()>, serve: F)
where
    A: Acceptor,
    F: Fn(A::Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_until(what, acceptor, open, serve, std::future::pending()).await;
}

/// [`accept_loop`] until `stop` resolves, then give the listening socket
/// back, still bound: a standby hands its sockets to the leader it
/// becomes, so that clients never find them gone (a connection made
/// meanwhile waits in the backlog for the leader).
pub async fn accept_until<A, F, Fut>(
    what: String,
    mut acceptor: A,
    open: mpsc::Sender<()>,
    serve: F,
    stop: impl Future<Output = ()>,
) -> A
where
    A: Acceptor,
    F: Fn(A::Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return acceptor,
            accepted = acceptor.accept() => accepted,
        };
        match accepted {
            Ok(conn) => {
                backoff.reset(&what);
                let serving = serve(conn);
                let open = open.clone();
                tokio::spawn(async move {
                    serving.await;
                    drop(open);
                });
            }
            Err(e) => backoff.wait(&what, &e).await,
        }
    }
}

/// What every worker connection shares, whichever listener took it.
pub struct WorkerDoor {
    /// The front door of the master loop.
    pub master: MasterHandle,
    /// The step logs.
    pub logs: PathBuf,
    /// Frame, log and transfer limits.
    pub limits: Arc<Limits>,
    next_link: AtomicU64,
    /// Connections not yet authenticated, of every listener.
    unauthenticated: Arc<Semaphore>,
    /// Failed proofs slowed per source address.
    pub addresses: Arc<AddressGate>,
}

impl WorkerDoor {
    /// A door for the worker listeners.
    pub fn new(master: MasterHandle, logs: PathBuf, limits: Arc<Limits>) -> Self {
        WorkerDoor {
            master,
            logs,
            limits,
            next_link: AtomicU64::new(1),
            unauthenticated: Arc::new(Semaphore::new(MAX_UNAUTHENTICATED)),
            addresses: Arc::new(AddressGate::default()),
        }
    }

    /// A slot for one more connection that has not authenticated yet;
    /// `None` when [`MAX_UNAUTHENTICATED`] are waiting (it is closed at
    /// once, before any handshake).
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.unauthenticated).try_acquire_owned().ok()
    }

    /// Serve one worker connection whose transport is set up.
    pub async fn serve(
        &self,
        conn: crate::net::BoxConn,
        peer: PeerInfo,
        deadline: tokio::time::Instant,
    ) {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let ctx = LinkContext {
            link,
            master: self.master.clone(),
            logs: self.logs.clone(),
            limits: Arc::clone(&self.limits),
            deadline,
        };
        worker_link::serve(conn, peer, ctx).await;
    }

    /// Serve one connection of the worker Unix socket.
    pub async fn serve_unix(self: Arc<Self>, stream: interprocess::local_socket::tokio::Stream) {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let Some(slot) = self.slot() else {
            warn!("worker socket: too many connections not yet authenticated; one closed");
            return;
        };
        let pid = stream.peer_creds().ok().and_then(|c| c.pid());
        let mut peer = PeerInfo::unix(pid);
        peer.slot = Some(slot);
        self.serve(Box::new(stream), peer, deadline).await;
    }
}

/// Backs off after failed `accept`s (out of file descriptors, say), so a
/// persistent error does not spin a core, and says so once per streak of
/// failures rather than flooding the log.
#[derive(Default)]
pub struct AcceptBackoff {
    delay_ms: u64,
    /// Failed accepts since the last one that worked.
    failures: u64,
}

impl AcceptBackoff {
    fn reset(&mut self, socket: &str) {
        if self.failures > 0 {
            info!(
                "{socket} socket accepts connections again (after {} failed accepts)",
                self.failures
            );
        }
        self.delay_ms = 0;
        self.failures = 0;
    }

    async fn wait(&mut self, socket: &str, e: &std::io::Error) {
        self.delay_ms = (self.delay_ms * 2).clamp(10, 1000);
        self.failures += 1;
        if self.failures == 1 {
            let hint = if e.raw_os_error() == Some(24) || e.raw_os_error() == Some(23) {
                " (out of file descriptors: raise the master's limit, `ulimit -n` or LimitNOFILE=)"
            } else {
                ""
            };
            warn!(
                "{socket} socket accept failed: {e}{hint}; retrying with a backoff of up to 1 s, quietly until it works again"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
    }
}
