//! TCP listeners for remote workers: binding (each address on its own,
//! IPv6 ones v6-only so that `0.0.0.0` and `[::]` can both be listed), the
//! socket options of an accepted connection (no Nagle delay, TCP keepalive
//! from `[master] keepalive`), and TLS, all before the worker handshake and
//! inside the same deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::daemon::limits::HANDSHAKE_TIMEOUT;
use crate::daemon::listeners::WorkerDoor;
use crate::daemon::peer::PeerInfo;
use crate::net::{BoxConn, Transport};

/// Bind a TCP listener on `addr`, with a listen backlog of 1,024 (the
/// kernel caps it at `net.core.somaxconn`): a crowd connecting at once
/// waits to be accepted instead of having its SYNs dropped. The web
/// server binds with it too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// How the TCP listeners talk: plain TCP, or TLS with this acceptor.
pub enum Security {
    /// `allow_plaintext = true`.
    Plain,
    /// TLS 1.3 (see `daemon::tls`).
    Tls(tokio_rustls::TlsAcceptor),
}

/// What the TCP listeners share: the worker door and how they talk (which
/// a reload may change for new connections).
pub struct TcpDoor {
    /// The door every worker connection goes through.
    pub door: Arc<WorkerDoor>,
    security: RwLock<Arc<Security>>,
    keepalive: Duration,
    /// When a full table of unauthenticated connections was last logged.
    last_full_warning: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl TcpDoor {
    /// A door speaking `security`, with TCP keepalive timed on `keepalive`.
    pub fn new(door: Arc<WorkerDoor>, security: Security, keepalive: Duration) -> Self {
        TcpDoor {
            door,
            security: RwLock::new(Arc::new(security)),
            keepalive,
            last_full_warning: std::sync::Mutex::new(None),
        }
    }

    /// New connections speak `security` from now on; established ones
    /// keep theirs.
    pub fn set_security(&self, security: Security) {
        *self.security.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(security);
    }

    fn security(&self) -> Arc<Security> {
        Arc::clone(&self.security.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serve one accepted TCP connection: turned away at once if its
    /// address is waiting after a failed proof or too many connections are
    /// unauthenticated; then options, TLS and the worker handshake, TLS and
    /// handshake within one [`HANDSHAKE_TIMEOUT`].
    pub async fn serve(self: Arc<Self>, stream: TcpStream, addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        if let Some(wait) = self.door.addresses.wait_for(addr.ip().to_canonical()) {
            debug!(peer = %addr, "closed: this address failed a proof; it may try again in {wait:?}");
            return;
        }
        let Some(slot) = self.door.slot() else {
            self.warn_full(addr);
            return;
        };
        if let Err(e) = self.set_options(&stream) {
            debug!(peer = %addr, "cannot set TCP options: {e}");
        }
        let security = self.security();
        let (conn, mut peer): (BoxConn, PeerInfo) = match &*security {
            Security::Plain => (Box::new(stream), peer_info(Transport::Tcp, addr)),
            Security::Tls(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let session = tls.get_ref().1;
                        let mut peer = peer_info(Transport::Tls, addr);
                        peer.tls_version = session.protocol_version().map(version_name);
                        peer.binding = match crate::net::channel_binding(&**session) {
                            Ok(binding) => binding,
                            Err(e) => {
                                warn!(peer = %addr, "no channel binding for this TLS session: {e}");
                                return;
                            }
                        };
                        peer.client_cert = session
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| leaf.clone().into_owned());
                        (Box::new(tls), peer)
                    }
                    Ok(Err(e)) => {
                        debug!(peer = %addr, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!(peer = %addr, "TLS handshake not finished in time");
                        return;
                    }
                }
            }
        };
        peer.slot = Some(slot);
        peer.gate = Some(Arc::clone(&self.door.addresses));
        self.door.serve(conn, peer, deadline).await;
    }

    /// TCP_NODELAY (frames are small and latency counts) and TCP
    /// keepalive probes every `keepalive`, three missed = dead: a peer
    /// gone without a word is noticed by the kernel too, not only by the
    /// link's own pings.
    fn set_options(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(self.keepalive)
            .with_interval(self.keepalive)
            .with_retries(3);
        socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
    }

    /// Says that connections are being turned away, at most once a minute.
    fn warn_full(&self, addr: SocketAddr) {
        let mut last = self
            .last_full_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        if last.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
            *last = Some(now);
            warn!(
                peer = %addr,
                "too many worker connections not yet authenticated ({}): new ones are closed at once (said once a minute)",
                crate::daemon::limits::MAX_UNAUTHENTICATED
            );
        }
    }
}

fn peer_info(transport: Transport, addr: SocketAddr) -> PeerInfo {
    let mut peer = PeerInfo::unix(None);
    peer.transport = transport;
    peer.addr = Some(addr);
    peer
}

/// "TLSv1.3", as `bbctl workers` shows it.
fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A crowd connecting at once is queued, not dropped: 300 connections
    /// complete their handshake with nothing accepting yet (with a
    /// backlog of 128 the 130th waits a second for its SYN to be resent).
    #[tokio::test]
    async fn a_crowd_connecting_at_once_waits_in_the_backlog() {
        let listener = super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // The kernel caps the backlog at somaxconn (4,096 on kernels since 5.4).
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let crowd = tokio::task::spawn_blocking(move || {
            (0..cap.min(300))
                .map(|i| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                        .map_err(|e| format!("connection {i}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
        assert!(crowd.is_ok(), "{:?}", crowd.err());
        drop(listener);
    }
}
