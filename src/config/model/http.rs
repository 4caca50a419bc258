//! The HTTP listener settings: hooks, tokens, TLS identity and client CA.

use std::path::PathBuf;

use super::*;

/// The `[http]` table (docs/http.md): where the web server listens and
/// who may write through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The address to bind (loopback unless the config says otherwise).
    pub listen: std::net::SocketAddr,
    /// How people reach it (behind a proxy): links in pages start with it.
    pub base_url: Option<String>,
    /// Believe `X-Forwarded-Host` for the check that a page's form was
    /// posted from this server (only behind a proxy that sets it).
    pub trust_proxy: bool,
    /// Serve HTTPS with the workers' listeners' certificate.
    pub tls: bool,
    /// Open HTTP connections at once; more wait to be accepted.
    pub max_connections: u32,
    /// Bearer tokens and what each may do.
    pub tokens: Vec<HttpToken>,
    /// Webhooks that add changes (`/hooks/NAME`).
    pub hooks: Vec<HttpHook>,
}

/// One `[[http.hook]]`: `POST /hooks/NAME`, signed with HMAC-SHA256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHook {
    /// Its name: the path `/hooks/NAME`, and the change source `hook:NAME`.
    pub name: String,
    /// Whose payloads it reads: `github`, `gitea` or `json`.
    pub kind: String,
    /// The HMAC secret (from `secret_file`); `Debug` never shows it.
    pub secret: Secret,
}

impl HttpSettings {
    /// `bbmaster --http ADDR` without an `[http]` table: read-only.
    pub fn quick(listen: std::net::SocketAddr) -> Self {
        HttpSettings {
            listen,
            base_url: None,
            trust_proxy: false,
            tls: false,
            max_connections: 256,
            tokens: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

/// One `[[http.token]]`: a bearer token (read from its `token_file`) and
/// the writes it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpToken {
    /// Its name: the principal in logs and in the history's reasons.
    pub name: String,
    /// The token itself; `Debug` never shows it.
    pub token: Secret,
    /// What it may do: `force`, `stop`, `cancel`.
    pub may: Vec<String>,
}

/// The listeners' certificate chain and key as read from `tls_cert` and
/// `tls_key`: kept in the config so that a reload that changes the files
/// is a change, and so that a bad file is a config error, not a late one.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// Where the chain was read (for messages).
    pub cert_file: PathBuf,
    /// Where the key was read (for messages).
    pub key_file: PathBuf,
    /// The chain, leaf first.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The private key (never shown by `Debug`).
    pub key: TlsKey,
}

/// A private key, compared by value and never printed.
pub struct TlsKey(pub rustls::pki_types::PrivateKeyDer<'static>);

impl Clone for TlsKey {
    fn clone(&self) -> Self {
        TlsKey(self.0.clone_key())
    }
}

impl PartialEq for TlsKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

impl Eq for TlsKey {}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// `client_ca`: the CA certificates worker certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    /// Where they were read.
    pub file: PathBuf,
    /// The CA certificates.
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
}
