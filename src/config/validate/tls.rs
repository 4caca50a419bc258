//! `[master]` keys of the TCP listeners for remote workers:
//! `worker_listen`, `tls_cert`/`tls_key`, `allow_plaintext`, `client_ca`.
//!
//! The PEM files are read and checked here, so that a bad certificate is
//! a config error with its file and key named (at start, in `check-config`
//! and in a reload), never a failure of the first worker's handshake.

use std::net::SocketAddr;
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::super::model::{ClientCa, TlsIdentity, TlsKey};
use super::super::raw::RawMaster;
use super::Checker;

impl Checker<'_> {
    /// `worker_listen`: socket addresses with a port, each once.
    pub(super) fn worker_listen(&mut self, raw: &RawMaster) -> Vec<SocketAddr> {
        let Some(list) = &raw.worker_listen else {
            return Vec::new();
        };
        let mut out: Vec<SocketAddr> = Vec::new();
        for entry in list.get_ref() {
            match entry.get_ref().trim().parse::<SocketAddr>() {
                Ok(addr) if out.contains(&addr) => self.report(
                    &entry.span(),
                    format!("master: `worker_listen` lists {:?} twice", entry.get_ref()),
                ),
                Ok(addr) => out.push(addr),
                Err(_) => self.report(
                    &entry.span(),
                    format!(
                        "master: `worker_listen` entry {:?} is not an address with a port; \
                         write it like \"0.0.0.0:9989\", \"[::]:9989\" or \"127.0.0.1:9989\"",
                        entry.get_ref()
                    ),
                ),
            }
        }
        if raw.allow_plaintext.as_ref().is_some_and(|p| *p.get_ref()) && !out.is_empty() {
            self.warn(
                &list.span(),
                "master: `allow_plaintext = true`: remote workers' links are not encrypted and \
                 workers cannot check the master; use it only on loopback or a trusted network \
                 (a VPN)"
                    .to_string(),
            );
        }
        out
    }

    /// `tls_cert` and `tls_key`: both or neither; readable PEM; the key
    /// belongs to the certificate.
    pub(super) fn tls_identity(&mut self, raw: &RawMaster) -> Option<TlsIdentity> {
        let (cert, key) = match (&raw.tls_cert, &raw.tls_key) {
            (None, None) => return None,
            (Some(cert), Some(key)) => (cert, key),
            (Some(given), None) | (None, Some(given)) => {
                let (set, missing) = if raw.tls_cert.is_some() {
                    ("tls_cert", "tls_key")
                } else {
                    ("tls_key", "tls_cert")
                };
                self.report(
                    &given.span(),
                    format!(
                        "master: `{set}` is set but `{missing}` is not; give both, or neither \
                         for a self-signed certificate the master makes itself"
                    ),
                );
                return None;
            }
        };
        let cert_file = self.path("tls_cert", &raw.tls_cert)?;
        let key_file = self.path("tls_key", &raw.tls_key)?;
        // Both files are looked at, so that one pass reports both.
        let chain = self.pem_certs("tls_cert", cert, &cert_file);
        let key_der = self.pem_key(key, &key_file);
        let (chain, key_der) = (chain?, key_der?);
        self.loose_key_file(key, &key_file);
        let provider = rustls::crypto::ring::default_provider();
        if let Err(e) =
            rustls::sign::CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider)
        {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "does not belong to the certificate of `tls_cert` {}",
                    cert_file.display()
                ),
                other => format!("is not a usable key: {other}"),
            };
            self.report(
                &key.span(),
                format!("master: `tls_key` {} {why}", key_file.display()),
            );
            return None;
        }
        Some(TlsIdentity {
            cert_file,
            key_file,
            chain,
            key: TlsKey(key_der),
        })
    }

    /// `client_ca`: CA certificates (PEM); needs TLS.
    pub(super) fn client_ca(&mut self, raw: &RawMaster) -> Option<ClientCa> {
        let at = raw.client_ca.as_ref()?;
        if raw.allow_plaintext.as_ref().is_some_and(|p| *p.get_ref()) {
            self.report(
                &at.span(),
                "master: `client_ca` needs TLS, but `allow_plaintext = true` turns it off"
                    .to_string(),
            );
            return None;
        }
        let file = self.path("client_ca", &raw.client_ca)?;
        let certs = self.pem_certs("client_ca", at, &file)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in &certs {
            if let Err(e) = roots.add(cert.clone()) {
                self.report(
                    &at.span(),
                    format!(
                        "master: `client_ca` {}: not a usable CA certificate: {e}",
                        file.display()
                    ),
                );
                return None;
            }
        }
        Some(ClientCa { file, certs })
    }

    /// The private key of `tls_key`.
    fn pem_key(
        &mut self,
        key: &Spanned<String>,
        key_file: &Path,
    ) -> Option<PrivateKeyDer<'static>> {
        let bytes = self.read_pem("tls_key", key, key_file)?;
        match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(k) => Some(k),
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                self.report(
                    &key.span(),
                    format!(
                        "master: `tls_key` {} holds no PEM private key \
                         (\"-----BEGIN PRIVATE KEY-----\")",
                        key_file.display()
                    ),
                );
                None
            }
            Err(e) => {
                self.report(
                    &key.span(),
                    format!("master: `tls_key` {}: invalid PEM: {e}", key_file.display()),
                );
                None
            }
        }
    }

    /// A file's bytes, or a problem naming the key and the file.
    fn read_pem(&mut self, key: &str, at: &Spanned<String>, path: &Path) -> Option<Vec<u8>> {
        match super::files::read_small_file(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.report(
                    &at.span(),
                    format!("master: cannot read `{key}` {}: {e}", path.display()),
                );
                None
            }
        }
    }

    /// The PEM certificates of a file: at least one.
    fn pem_certs(
        &mut self,
        key: &str,
        at: &Spanned<String>,
        path: &Path,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.read_pem(key, at, path)?;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match certs {
            Ok(certs) if certs.is_empty() => {
                self.report(
                    &at.span(),
                    format!(
                        "master: `{key}` {} holds no PEM certificate \
                         (\"-----BEGIN CERTIFICATE-----\")",
                        path.display()
                    ),
                );
                None
            }
            Ok(certs) => Some(certs),
            Err(e) => {
                self.report(
                    &at.span(),
                    format!("master: `{key}` {}: invalid PEM: {e}", path.display()),
                );
                None
            }
        }
    }

    /// A key file others may read draws a warning.
    fn loose_key_file(&mut self, at: &Spanned<String>, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(mode) = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777)
            && mode & 0o044 != 0
        {
            self.warn(
                &at.span(),
                format!(
                    "master: `tls_key` {} is readable by others (mode {mode:o}); `chmod 600` it",
                    path.display()
                ),
            );
        }
    }
}
