//! Opening a connection to the master on any transport: the Unix socket,
//! plain TCP, or TLS 1.3 over TCP. Gives the handshake a byte stream and
//! the channel binding its proof must cover (empty unless TLS).
//!
//! Every step is bounded in time; a failure is sorted into worth retrying
//! (refused, unreachable, reset, timed out: the master may be restarting,
//! the network may come back) or fatal (a certificate we do not trust, a
//! master that rejects ours, a socket path that can never work): a fatal
//! one is one clear line and the worker exits, never a retry loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::GenericFilePath;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::WorkerError;
use super::address::{Host, HostPort, MasterAddr};
use super::tls::{self, TlsFailure, TlsOptions};
use crate::net::BoxConn;

/// How long one TCP connect (per resolved address) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TLS handshake may take once TCP is connected.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// With several masters, each step of an attempt (resolving, TCP
/// connect, TLS handshake, the welcome) gets this long instead of 10 s:
/// a master whose host is gone (no answer at all) or that is frozen
/// (accepts, never answers) then holds up a round for seconds, not for
/// tens of seconds, while another master may be leading already.
pub const SEVERAL_MASTERS_STEP_LIMIT: Duration = Duration::from_secs(5);

/// TCP keepalive: first probe after this much silence (the application
/// pings notice a silent link sooner; this catches a dead peer whose
/// kernel is gone while we only write).
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// TCP keepalive: between probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// TCP keepalive: unanswered probes before the kernel drops the link.
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Data written but not acknowledged for this long breaks the link
/// (`TCP_USER_TIMEOUT`), so a write into a dead path fails in the kernel
/// too, not only through the application's write deadline.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why one connection attempt (dial and handshake) failed.
pub(crate) enum AttemptError {
    /// Worth trying again later (no master yet, master restarting).
    Retry(String),
    /// The master refused us for a reason that may pass (a worker of our
    /// name is connected): try again, and say so louder than a retry.
    Refused(String),
    /// The master is a standby; `leader` is the leader's address as it
    /// advertises it, when one is known: go there (see [`super::masters`]).
    NotLeader {
        /// The standby's words.
        reason: String,
        /// Where the leader takes workers.
        leader: Option<String>,
    },
    /// Trying again would give the same answer.
    Fatal(WorkerError),
}

/// A connection, ready for the handshake.
pub(crate) struct Dialed {
    /// The byte stream.
    pub(crate) conn: BoxConn,
    /// What the worker's proof binds to: this TLS session's exported
    /// keying material, empty on Unix and plain TCP.
    pub(crate) binding: Vec<u8>,
}

/// Everything needed to reach the master, prepared once at start.
pub(crate) struct Dialer {
    addr: MasterAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// The bound of each step of an attempt: [`CONNECT_TIMEOUT`] (and
    /// the TLS and welcome limits, all 10 s) with one master,
    /// [`SEVERAL_MASTERS_STEP_LIMIT`] with several.
    limit: Duration,
}

impl Dialer {
    /// One dialer per master (`--master`, repeated), the TLS client built
    /// once for all. An address given twice is refused: it would only
    /// make every cycle of attempts longer.
    pub(crate) fn all(addrs: &[MasterAddr], opts: &TlsOptions) -> Result<Vec<Self>, WorkerError> {
        if addrs.is_empty() {
            return Err(WorkerError::Options("no --master given".into()));
        }
        for (i, addr) in addrs.iter().enumerate() {
            if addrs[..i].contains(addr) {
                return Err(WorkerError::Options(format!(
                    "--master {addr} is given twice"
                )));
            }
        }
        let limit = if addrs.len() > 1 {
            SEVERAL_MASTERS_STEP_LIMIT
        } else {
            CONNECT_TIMEOUT
        };
        let mut config = None;
        addrs
            .iter()
            .map(|addr| Self::with_config(addr, opts, &mut config, limit))
            .collect()
    }

    /// Check the options against the address and build the TLS client if
    /// the address asks for TLS, reusing the one in `config` (built there
    /// the first time a `tls://` address needs it).
    fn with_config(
        addr: &MasterAddr,
        opts: &TlsOptions,
        config: &mut Option<Arc<ClientConfig>>,
        limit: Duration,
    ) -> Result<Self, WorkerError> {
        let tls = match addr {
            MasterAddr::Tls(HostPort { host, .. }) => {
                let name = tls::server_name(opts, host).map_err(WorkerError::Options)?;
                let client = match config {
                    Some(client) => client.clone(),
                    None => config.insert(tls::client_config(opts)?).clone(),
                };
                Some((client, name))
            }
            MasterAddr::Unix(_) | MasterAddr::Tcp(_) => {
                if *opts != TlsOptions::default() {
                    return Err(WorkerError::Options(format!(
                        "--fingerprint, --ca, --tls-name and --client-cert apply to tls:// addresses only, not {addr}"
                    )));
                }
                None
            }
        };
        Ok(Dialer {
            addr: addr.clone(),
            tls,
            limit,
        })
    }

    /// The address dialled.
    pub(crate) fn addr(&self) -> &MasterAddr {
        &self.addr
    }

    /// How long each step of an attempt may take (the welcome included).
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Open one connection (TLS handshake included).
    pub(crate) async fn dial(&self) -> Result<Dialed, AttemptError> {
        match &self.addr {
            MasterAddr::Unix(path) => Ok(Dialed {
                conn: Box::new(connect_unix(path).await?),
                binding: Vec::new(),
            }),
            MasterAddr::Tcp(hp) => Ok(Dialed {
                conn: Box::new(connect_tcp(hp, self.limit).await?),
                binding: Vec::new(),
            }),
            MasterAddr::Tls(hp) => {
                let (config, name) = self.tls.as_ref().expect("built for tls://");
                let tcp = connect_tcp(hp, self.limit).await?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let handshake = connector.connect(name.clone(), tcp);
                let stream = match tokio::time::timeout(self.limit, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(tls_io_error(&self.addr, &e, "TLS handshake")),
                    Err(_) => {
                        return Err(AttemptError::Retry(format!(
                            "TLS handshake not done within {} s",
                            self.limit.as_secs()
                        )));
                    }
                };
                let binding = crate::net::channel_binding(stream.get_ref().1).map_err(|e| {
                    AttemptError::Fatal(WorkerError::Tls {
                        master: self.addr.to_string(),
                        reason: format!("cannot derive the channel binding: {e}"),
                    })
                })?;
                Ok(Dialed {
                    conn: Box::new(stream),
                    binding,
                })
            }
        }
    }
}

/// Sort an I/O error from a TLS stream: a TLS failure inside is fatal or
/// not as [`tls::classify`] says; a plain network error is retried.
pub(crate) fn tls_io_error(addr: &MasterAddr, e: &std::io::Error, during: &str) -> AttemptError {
    match tls::rustls_error(e).map(tls::classify) {
        Some(TlsFailure::Fatal(reason)) => AttemptError::Fatal(WorkerError::Tls {
            master: addr.to_string(),
            reason,
        }),
        Some(TlsFailure::Retry(reason)) => AttemptError::Retry(format!("{during}: {reason}")),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => AttemptError::Retry(format!(
            "connection closed during the {during} (the master restarting? a master with allow_plaintext = true is reached with tcp://)"
        )),
        None => AttemptError::Retry(format!("{during}: {e}")),
    }
}

/// Open the Unix socket; every failure to do so is worth a retry except a
/// path that can never name a socket.
async fn connect_unix(socket: &Path) -> Result<Stream, AttemptError> {
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

/// Resolve the host (again at each attempt: its address may change) and
/// connect to the first address that answers, each within `limit`
/// ([`CONNECT_TIMEOUT`] with one master). Every failure here is worth a
/// retry: DNS and networks come back.
async fn connect_tcp(hp: &HostPort, limit: Duration) -> Result<TcpStream, AttemptError> {
    let addrs: Vec<SocketAddr> = match &hp.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, hp.port)],
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), hp.port));
            match tokio::time::timeout(limit, lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    return Err(AttemptError::Retry(format!("cannot resolve {name}: {e}")));
                }
                Err(_) => {
                    return Err(AttemptError::Retry(format!(
                        "cannot resolve {name} within {} s",
                        limit.as_secs()
                    )));
                }
            }
        }
    };
    let mut last = format!("{} resolves to no address", hp.host);
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tune(&stream);
                return Ok(stream);
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => {
                last = format!("{addr}: no answer within {} s", limit.as_secs());
            }
        }
    }
    Err(AttemptError::Retry(last))
}

/// No Nagle delay (frames are small and latency matters), TCP keepalive
/// and a user timeout so that the kernel too gives up on a dead peer.
/// Best effort: a socket without them still works, the application's
/// pings and write deadline still bound a silent link.
fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_sockets_get_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hp = HostPort {
            host: Host::Name("localhost".into()),
            port,
        };
        // `localhost` may resolve to ::1 first: every address is tried.
        let Ok(stream) = connect_tcp(&hp, CONNECT_TIMEOUT).await else {
            panic!("cannot connect to localhost:{port}");
        };
        assert!(stream.nodelay().unwrap());
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), TCP_KEEPALIVE_IDLE);
    }

    #[tokio::test]
    async fn a_refused_port_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let hp = HostPort {
            host: Host::Ip([127, 0, 0, 1].into()),
            port,
        };
        match connect_tcp(&hp, CONNECT_TIMEOUT).await {
            Err(AttemptError::Retry(reason)) => assert!(reason.contains("refused"), "{reason}"),
            Err(AttemptError::Fatal(e)) => panic!("fatal: {e}"),
            Err(AttemptError::Refused(r)) => panic!("refused: {r}"),
            Err(AttemptError::NotLeader { reason, .. }) => panic!("not leader: {reason}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    }
}
