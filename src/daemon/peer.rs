//! Who is at the other end of a worker connection, as its transport tells
//! it: filled in by the listener that accepted it, read by the worker link
//! (checks) and shown by `bbctl workers`.
//!
//! A leaf: the listeners make it and the worker link takes it, and
//! neither imports the other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::sync::OwnedSemaphorePermit;

use crate::daemon::login_gate::AddressGate;
use crate::net::Transport;

/// What the transport knows about a worker connection.
#[derive(Debug)]
pub struct PeerInfo {
    /// Unix socket, TCP or TLS.
    pub transport: Transport,
    /// The peer's process id (Unix socket only): a build step's lineage
    /// is checked and refused.
    pub pid: Option<i32>,
    /// The peer's address (TCP and TLS).
    pub addr: Option<SocketAddr>,
    /// The negotiated TLS version ("TLSv1.3").
    pub tls_version: Option<String>,
    /// The TLS session's channel binding, which the worker's proof covers
    /// (empty on a Unix socket and plain TCP).
    pub binding: Vec<u8>,
    /// The client certificate that `client_ca` verified (mTLS): it must
    /// name the worker.
    pub client_cert: Option<CertificateDer<'static>>,
    /// A slot among the connections not yet authenticated: held until the
    /// hello is answered.
    pub slot: Option<OwnedSemaphorePermit>,
    /// Failed proofs from this peer's address are slowed here.
    pub gate: Option<Arc<AddressGate>>,
}

impl PeerInfo {
    /// A Unix socket peer with its process id.
    pub fn unix(pid: Option<i32>) -> Self {
        PeerInfo {
            transport: Transport::Unix,
            pid,
            addr: None,
            tls_version: None,
            binding: Vec::new(),
            client_cert: None,
            slot: None,
            gate: None,
        }
    }

    /// The peer's IP address, when it has one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.map(|a| a.ip().to_canonical())
    }

    /// The peer failed to prove a secret: its address waits longer next
    /// time.
    pub fn failed_proof(&self) {
        if let (Some(gate), Some(ip)) = (&self.gate, self.ip()) {
            gate.failed(ip);
        }
    }

    /// The peer proved its secret: its address is forgiven.
    pub fn proved(&self) {
        if let (Some(gate), Some(ip)) = (&self.gate, self.ip()) {
            gate.succeeded(ip);
        }
    }

    /// With mTLS, whether the client certificate names worker `name` (a
    /// DNS name among its subject alternative names); `Ok` without mTLS.
    pub fn check_client_name(&self, name: &str) -> Result<(), String> {
        let Some(der) = &self.client_cert else {
            return Ok(());
        };
        let parsed = rustls::server::ParsedCertificate::try_from(der)
            .map_err(|e| format!("the client certificate cannot be read: {e}"))?;
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            format!("worker name `{name}` cannot be a certificate name (a DNS name)")
        })?;
        rustls::client::verify_server_name(&parsed, &server_name).map_err(|_| {
            format!(
                "the client certificate does not name worker `{name}` (its DNS subject \
                 alternative names must include it)"
            )
        })
    }
}
