//! The TLS side of the worker listeners: the master's certificate (the
//! configured `tls_cert`/`tls_key`, or one it makes itself on first start
//! and keeps in `<state_dir>/tls/`), and the rustls server configuration
//! (TLS 1.3 only, the ring provider given explicitly, client certificates
//! of `client_ca` when set).

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::info;

use crate::config::{ClientCa, MasterSettings};
use crate::daemon::state_dir;

/// Why the listeners' TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of `<state_dir>/tls` cannot be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kept certificate or key is damaged.
    #[error("{}: {why} (move the directory {} away and restart: the master makes a new \
             certificate, whose fingerprint workers must then be given)", path.display(),
             path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Making a certificate failed.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("`client_ca` {}: {why}", file.display())]
    ClientCa {
        /// The CA file.
        file: PathBuf,
        /// Why.
        why: String,
    },
}

/// The master's certificate chain and key, with the leaf's fingerprint.
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// `sha256:...` of the leaf, as workers pin it.
    pub fingerprint: String,
    /// Where it came from (for the log).
    pub origin: String,
}

/// Where a master keeps the certificate it made itself.
pub fn self_signed_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

/// The configured certificate, or the master's own (made now if there is
/// none yet).
pub fn identity(settings: &MasterSettings, state_dir: &Path) -> Result<Identity, TlsError> {
    if let Some(id) = &settings.tls_identity {
        return Ok(Identity {
            fingerprint: crate::net::fingerprint(&id.chain[0]),
            chain: id.chain.clone(),
            key: id.key.0.clone_key(),
            origin: id.cert_file.display().to_string(),
        });
    }
    self_signed(&self_signed_dir(state_dir), &settings.worker_listen)
}

/// Read the kept self-signed certificate of `dir`, or make and keep one.
fn self_signed(dir: &Path, listen: &[SocketAddr]) -> Result<Identity, TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { what, path, source }
    };
    if !cert_path.exists() && !key_path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create", dir))?;
        let made = rcgen::generate_simple_self_signed(subject_names(listen))?;
        // The key first: a cert without its key is never left behind.
        let mut key_file = state_dir::private_file()
            .write(true)
            .create_new(true)
            .open(&key_path)
            .map_err(io("cannot create", &key_path))?;
        key_file
            .write_all(made.signing_key.serialize_pem().as_bytes())
            .and_then(|()| key_file.sync_all())
            .map_err(io("cannot write", &key_path))?;
        let mut cert_file = state_dir::private_file()
            .write(true)
            .create_new(true)
            .open(&cert_path)
            .map_err(io("cannot create", &cert_path))?;
        cert_file
            .write_all(made.cert.pem().as_bytes())
            .and_then(|()| cert_file.sync_all())
            .map_err(io("cannot write", &cert_path))?;
        info!(cert = %cert_path.display(), "made a self-signed certificate for the worker listeners");
    }
    let read = |path: &Path| std::fs::read(path).map_err(io("cannot read", path));
    let damaged = |path: &Path, why: String| TlsError::Damaged {
        path: path.to_path_buf(),
        why,
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| damaged(&cert_path, format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(damaged(&cert_path, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| damaged(&key_path, format!("no usable private key: {e}")))?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
        .map_err(|e| damaged(&key_path, format!("does not fit cert.pem: {e}")))?;
    Ok(Identity {
        fingerprint: crate::net::fingerprint(&chain[0]),
        chain,
        key,
        origin: cert_path.display().to_string(),
    })
}

/// The names a self-signed certificate is made for: this host's name,
/// `localhost`, the loopback addresses and every listen address that is
/// not a wildcard.
fn subject_names(listen: &[SocketAddr]) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = host_name() {
        names.push(host);
    }
    for fixed in ["localhost", "127.0.0.1", "::1"] {
        names.push(fixed.to_string());
    }
    for addr in listen {
        let ip = addr.ip().to_string();
        if !addr.ip().is_unspecified() && !names.contains(&ip) {
            names.push(ip);
        }
    }
    names.dedup();
    names
}

/// This host's name, when it can be a certificate's DNS name.
pub fn host_name() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim();
    (!host.is_empty() && rustls::pki_types::DnsName::try_from(host).is_ok())
        .then(|| host.to_string())
}

/// The crypto provider of every TLS configuration here: ring, given
/// explicitly (the process-wide default is never installed or used).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A rustls server configuration: TLS 1.3 only, and with `client_ca` a
/// client certificate is required and verified against it.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &ca.certs {
                roots.add(cert.clone()).map_err(|e| TlsError::ClientCa {
                    file: ca.file.clone(),
                    why: e.to_string(),
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        file: ca.file.clone(),
                        why: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let listen = [
            "192.0.2.7:9989".parse().unwrap(),
            "[::]:9989".parse().unwrap(),
        ];
        let first = self_signed(&tls, &listen).unwrap();
        let again = self_signed(&tls, &listen).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint, crate::net::fingerprint(&again.chain[0]));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tls), 0o700);
        assert_eq!(mode(&tls.join("key.pem")), 0o600);
        let names = subject_names(&listen);
        assert!(names.contains(&"192.0.2.7".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n == "::"), "{names:?}");
        server_config(&first, None).unwrap();
    }

    #[test]
    fn a_damaged_kept_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        self_signed(&tls, &[]).unwrap();
        std::fs::write(tls.join("key.pem"), "garbage").unwrap();
        let e = self_signed(&tls, &[]).err().unwrap().to_string();
        assert!(e.contains("key.pem"), "{e}");
    }
}
