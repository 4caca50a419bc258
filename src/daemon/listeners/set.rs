//! The TCP listeners of `[master] worker_listen`, kept in step with the
//! config: at start every address must bind (or the master does not
//! start); a reload opens added addresses, closes removed ones (links
//! already made stay), and gives new connections a changed certificate,
//! `client_ca` or `allow_plaintext`. What they are is published for
//! `bbctl status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{ClientCa, MasterSettings, TlsIdentity};
use crate::daemon::listeners::tcp::{self, Security, TcpDoor};
use crate::daemon::listeners::{WorkerDoor, accept_loop};
use crate::daemon::tls::{self, TlsError};
use crate::protocol::TlsStatus;

/// Why the TCP listeners cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The certificate or the TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An address cannot be bound.
    #[error("cannot listen on {addr} (`worker_listen`): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What `bbctl status` shows of the listeners; shared with the handle.
pub type SharedStatus = Arc<RwLock<Option<TlsStatus>>>;

/// The settings that make the listeners' security.
#[derive(PartialEq)]
struct SecurityKey {
    identity: Option<TlsIdentity>,
    client_ca: Option<ClientCa>,
    plaintext: bool,
}

impl SecurityKey {
    fn of(m: &MasterSettings) -> Self {
        SecurityKey {
            identity: m.tls_identity.clone(),
            client_ca: m.client_ca.clone(),
            plaintext: m.allow_plaintext,
        }
    }
}

/// One bound address and its accept loop.
struct Bound {
    /// As the config writes it (port 0 stays 0).
    wanted: SocketAddr,
    /// As bound (the real port).
    actual: SocketAddr,
    task: JoinHandle<()>,
}

/// The TCP listeners.
pub struct TcpListeners {
    door: Arc<WorkerDoor>,
    tcp: Option<Arc<TcpDoor>>,
    open: mpsc::Sender<()>,
    bound: Vec<Bound>,
    status: SharedStatus,
    state_dir: PathBuf,
    security: Option<SecurityKey>,
    fingerprint: Option<String>,
}

impl TcpListeners {
    /// No listeners yet; [`TcpListeners::apply`] opens them.
    pub fn new(
        door: Arc<WorkerDoor>,
        open: mpsc::Sender<()>,
        status: SharedStatus,
        state_dir: PathBuf,
    ) -> Self {
        TcpListeners {
            door,
            tcp: None,
            open,
            bound: Vec::new(),
            status,
            state_dir,
            security: None,
            fingerprint: None,
        }
    }

    /// Close every listener and wait until their sockets are closed (a
    /// standby's, before the leader binds the same addresses); links made
    /// stay.
    pub async fn close(&mut self) {
        for b in self.bound.drain(..) {
            b.task.abort();
            let _ = b.task.await;
        }
        self.publish();
    }

    /// Make the listeners what `m` says. On error nothing of the failed
    /// part changed (at start the master stops; after a reload it is
    /// logged and the listeners stay as they were).
    pub fn apply(&mut self, m: &MasterSettings) -> Result<(), ListenError> {
        let result = self.apply_inner(m);
        self.publish();
        result
    }

    fn apply_inner(&mut self, m: &MasterSettings) -> Result<(), ListenError> {
        // Closed first, so that an address moved from one entry to
        // another (say, a port 0) can be bound again.
        self.bound.retain(|b| {
            let keep = m.worker_listen.contains(&b.wanted);
            if !keep {
                b.task.abort();
                info!(address = %b.actual, "stopped listening for workers (links made stay)");
            }
            keep
        });
        if m.worker_listen.is_empty() {
            return Ok(());
        }
        let key = SecurityKey::of(m);
        if self.security.as_ref() != Some(&key) {
            let (security, fingerprint) = self.security_of(m)?;
            match &self.tcp {
                Some(tcp) => {
                    tcp.set_security(security);
                    info!("new worker connections use the reloaded TLS settings");
                }
                None => {
                    self.tcp = Some(Arc::new(TcpDoor::new(
                        Arc::clone(&self.door),
                        security,
                        m.keepalive,
                    )));
                }
            }
            self.fingerprint = fingerprint;
            self.security = Some(key);
        }
        let tcp = Arc::clone(self.tcp.as_ref().expect("set above"));
        for &wanted in &m.worker_listen {
            if self.bound.iter().any(|b| b.wanted == wanted) {
                continue;
            }
            let listener = tcp::bind(wanted).map_err(|source| ListenError::Bind {
                addr: wanted,
                source,
            })?;
            let actual = listener.local_addr().unwrap_or(wanted);
            let door = Arc::clone(&tcp);
            let task = tokio::spawn(accept_loop(
                format!("worker listener {actual}"),
                listener,
                self.open.clone(),
                move |(stream, addr)| Arc::clone(&door).serve(stream, addr),
            ));
            match &self.fingerprint {
                Some(fp) => {
                    info!(address = %actual, fingerprint = %fp, "listening for workers (TLS 1.3)")
                }
                None => {
                    warn!(address = %actual, "listening for workers over plain TCP (allow_plaintext): links are not encrypted")
                }
            }
            self.bound.push(Bound {
                wanted,
                actual,
                task,
            });
        }
        Ok(())
    }

    /// Plain, or TLS with the configured or self-signed certificate.
    fn security_of(&self, m: &MasterSettings) -> Result<(Security, Option<String>), ListenError> {
        if m.allow_plaintext {
            return Ok((Security::Plain, None));
        }
        let identity = tls::identity(m, &self.state_dir)?;
        let config = tls::server_config(&identity, m.client_ca.as_ref())?;
        info!(
            fingerprint = %identity.fingerprint,
            certificate = %identity.origin,
            client_ca = ?m.client_ca.as_ref().map(|c| c.file.display().to_string()),
            "TLS certificate of the worker listeners"
        );
        Ok((
            Security::Tls(tokio_rustls::TlsAcceptor::from(config)),
            Some(identity.fingerprint),
        ))
    }

    /// Apply a reloaded config: failures are logged, not fatal.
    pub fn reload(&mut self, m: &MasterSettings) {
        if let Err(e) = self.apply(m) {
            error!("worker listeners after reload: {e}; the others are unchanged");
        }
    }

    fn publish(&self) {
        let status = (!self.bound.is_empty()).then(|| TlsStatus {
            fingerprint: self.fingerprint.clone(),
            listen: self.bound.iter().map(|b| b.actual.to_string()).collect(),
            plaintext: self.fingerprint.is_none(),
        });
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = status;
    }
}

impl Drop for TcpListeners {
    fn drop(&mut self) {
        for b in &self.bound {
            b.task.abort();
        }
    }
}
