//! The worker's TLS client: how it verifies the master (a pinned
//! fingerprint, a CA bundle, or the system roots), its optional client
//! certificate, and which TLS failures are worth a retry.
//!
//! TLS 1.3 only, with the ring provider given explicitly (never a
//! process-level default). Built once at start, so that a missing file is
//! one clear error before any connection is tried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::net;

/// How the worker checks the master's certificate (`--fingerprint`,
/// `--ca`, or neither).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verify {
    /// The system's trust store (rustls-native-certs), name checked.
    #[default]
    SystemRoots,
    /// A PEM bundle of CAs, name checked.
    Ca(PathBuf),
    /// The SHA-256 of the master's own certificate, like SSH's known
    /// hosts: neither name nor expiry is checked.
    Fingerprint([u8; 32]),
    /// Any of these SHA-256s, as [`Verify::Fingerprint`]: a worker given
    /// several masters (a leader and its standbys), each with its own
    /// self-signed certificate, pins them all.
    Fingerprints(Vec<[u8; 32]>),
}

/// The TLS settings from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// How to verify the master.
    pub verify: Verify,
    /// The name to check the master's certificate against instead of the
    /// URL's host (`--tls-name`).
    pub server_name: Option<String>,
    /// A client certificate chain and its key for mutual TLS (PEM files).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Why the TLS client cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("cannot use {what} {}: {reason}", path.display())]
    File {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// No trust anchor at all.
    #[error(
        "no trusted CA certificate found in the system's store ({0}); give --ca FILE or --fingerprint sha256:..."
    )]
    NoSystemRoots(String),
    /// rustls refused the configuration (a key that does not match its
    /// certificate, say).
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the client configuration: TLS 1.3 only, the chosen verifier,
/// the client certificate if any.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &opts.verify {
        Verify::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pins: vec![*pin],
                provider,
            })),
        Verify::Fingerprints(pins) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    pins: pins.clone(),
                    provider,
                }))
        }
        Verify::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let certs = read_certs(path, "the CA bundle")?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError::File {
                    what: "the CA bundle",
                    path: path.clone(),
                    reason: "no usable certificate in it".into(),
                });
            }
            builder.with_root_certificates(roots)
        }
        Verify::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "it is empty".to_string(), ToString::to_string);
                return Err(TlsSetupError::NoSystemRoots(why));
            }
            builder.with_root_certificates(roots)
        }
    };
    let config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert, "the client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::File {
                what: "the client key",
                path: key.clone(),
                reason: pem_reason(&e),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let file_error = |reason: String| TlsSetupError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// A PEM error in words.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The name the master's certificate is checked against (and sent as
/// SNI): `--tls-name`, else the URL's host.
pub fn server_name(
    opts: &TlsOptions,
    host: &super::address::Host,
) -> Result<ServerName<'static>, String> {
    use super::address::Host;
    match (&opts.server_name, host) {
        (Some(name), _) => ServerName::try_from(name.clone())
            .map_err(|_| format!("--tls-name {name:?} is not a DNS name or IP address")),
        (None, Host::Ip(ip)) => Ok(ServerName::IpAddress((*ip).into())),
        (None, Host::Name(name)) => {
            ServerName::try_from(name.clone()).map_err(|_| format!("{name:?} is not a DNS name"))
        }
    }
}

/// Accepts the master's certificate iff its SHA-256 is a pinned one.
/// The handshake's signatures are still checked, so that only the holder
/// of that certificate's key can complete it.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

/// The master presented another certificate than the pinned one(s).
#[derive(Debug, thiserror::Error)]
#[error("the master's certificate fingerprint is {actual}, expected {expected} (--fingerprint)")]
pub struct FingerprintMismatch {
    /// The pinned fingerprint, or `one of A, B` when several are pinned.
    pub expected: String,
    /// The presented certificate's.
    pub actual: String,
}

/// `sha256:` and hex, as `net::fingerprint` writes it.
fn pin_text(pin: &[u8; 32]) -> String {
    let mut out = String::from("sha256:");
    for byte in pin {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = net::fingerprint(end_entity);
        let pinned: Vec<String> = self.pins.iter().map(pin_text).collect();
        // Public values: no need for a constant-time comparison.
        if pinned.contains(&actual) {
            Ok(ServerCertVerified::assertion())
        } else {
            let expected = match pinned.as_slice() {
                [one] => one.clone(),
                several => format!("one of {}", several.join(", ")),
            };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(FingerprintMismatch { expected, actual })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What to do about a TLS failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// The same answer would come again: one line, exit.
    Fatal(String),
    /// Could pass (the master restarting mid-handshake).
    Retry(String),
}

/// The rustls error inside an I/O error, as tokio-rustls reports them.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Sort a rustls failure: anything about certificates (ours rejected by
/// the master, or the master's by us), protocol versions or a peer that
/// does not speak TLS is fatal; the rest may pass.
pub(crate) fn classify(e: &rustls::Error) -> TlsFailure {
    use rustls::Error;
    match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<FingerprintMismatch>() {
                Some(mismatch) => TlsFailure::Fatal(mismatch.to_string()),
                None => TlsFailure::Fatal(format!("the master's certificate is refused: {e}")),
            }
        }
        Error::InvalidCertificate(cert) => TlsFailure::Fatal(format!(
            "the master's certificate is refused: {}",
            certificate_words(cert)
        )),
        Error::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied => TlsFailure::Fatal(format!(
                "the master refused this worker's TLS client certificate (alert: {alert:?}); check --client-cert and the master's client_ca"
            )),
            AlertDescription::ProtocolVersion
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure
            | AlertDescription::InsufficientSecurity
            | AlertDescription::IllegalParameter => TlsFailure::Fatal(format!(
                "the master refused the TLS handshake (alert: {alert:?}); it must speak TLS 1.3 and accept this worker's client certificate, if any"
            )),
            other => TlsFailure::Retry(format!("TLS alert from the master: {other:?}")),
        },
        Error::InvalidMessage(_) | Error::PeerMisbehaved(_) | Error::PeerIncompatible(_) => {
            TlsFailure::Fatal(format!(
                "the master does not speak TLS 1.3 as expected ({e}); a master with allow_plaintext = true is reached with tcp://"
            ))
        }
        Error::NoCertificatesPresented => {
            TlsFailure::Fatal("the master presented no certificate".into())
        }
        other => TlsFailure::Retry(format!("TLS error: {other}")),
    }
}

/// A certificate error in plain words, naming the fix.
fn certificate_words(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "it is not signed by a trusted CA (unknown issuer; give --ca FILE or --fingerprint)"
                .into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("it is not valid for this host name ({e}; see --tls-name)")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("it has expired ({e})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("it is not valid yet ({e}; is this host's clock right?)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names`, and its key, in DER.
    pub(crate) fn self_signed(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (
            cert.der().clone(),
            PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        )
    }

    fn pin_verifier(pin: [u8; 32]) -> PinVerifier {
        PinVerifier {
            pins: vec![pin],
            provider: provider(),
        }
    }

    fn check(v: &PinVerifier, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("anything.invalid").unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn the_pin_accepts_its_certificate_whatever_the_name() {
        let (cert, _) = self_signed(&["master.example"]);
        let pin = net::parse_fingerprint(&net::fingerprint(&cert)).unwrap();
        assert!(check(&pin_verifier(pin), &cert).is_ok());
    }

    #[test]
    fn several_pins_accept_any_of_their_certificates() {
        let (a, _) = self_signed(&["a.example"]);
        let (b, _) = self_signed(&["b.example"]);
        let (c, _) = self_signed(&["c.example"]);
        let pin = |cert: &CertificateDer<'_>| net::parse_fingerprint(&net::fingerprint(cert));
        let v = PinVerifier {
            pins: vec![pin(&a).unwrap(), pin(&b).unwrap()],
            provider: provider(),
        };
        assert!(check(&v, &a).is_ok());
        assert!(check(&v, &b).is_ok());
        let e = check(&v, &c).unwrap_err();
        let TlsFailure::Fatal(line) = classify(&e) else {
            panic!("a mismatch is fatal: {e}");
        };
        for cert in [&a, &b, &c] {
            assert!(line.contains(&net::fingerprint(cert)), "{line}");
        }
        assert!(line.contains("expected one of"), "{line}");
    }

    #[test]
    fn another_certificate_is_one_fatal_line_with_both_fingerprints() {
        let (cert, _) = self_signed(&["master.example"]);
        let (other, _) = self_signed(&["master.example"]);
        let pin = net::parse_fingerprint(&net::fingerprint(&other)).unwrap();
        let e = check(&pin_verifier(pin), &cert).unwrap_err();
        let TlsFailure::Fatal(line) = classify(&e) else {
            panic!("a mismatch is fatal: {e}");
        };
        assert!(line.contains(&net::fingerprint(&cert)), "{line}");
        assert!(line.contains(&net::fingerprint(&other)), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn certificate_and_version_failures_are_fatal_the_rest_retries() {
        use rustls::Error;
        for fatal in [
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
            Error::InvalidCertificate(CertificateError::NotValidForName),
            Error::InvalidCertificate(CertificateError::Expired),
            Error::AlertReceived(AlertDescription::CertificateRequired),
            Error::AlertReceived(AlertDescription::BadCertificate),
            Error::AlertReceived(AlertDescription::UnknownCA),
            Error::AlertReceived(AlertDescription::ProtocolVersion),
            Error::AlertReceived(AlertDescription::DecryptError),
            Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        ] {
            assert!(
                matches!(classify(&fatal), TlsFailure::Fatal(_)),
                "{fatal:?}"
            );
        }
        for retry in [
            Error::AlertReceived(AlertDescription::InternalError),
            Error::General("whatever".into()),
        ] {
            assert!(
                matches!(classify(&retry), TlsFailure::Retry(_)),
                "{retry:?}"
            );
        }
        let TlsFailure::Fatal(line) =
            classify(&Error::InvalidCertificate(CertificateError::UnknownIssuer))
        else {
            unreachable!()
        };
        assert!(line.contains("--ca"), "{line}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        for path in [missing, empty] {
            let opts = TlsOptions {
                verify: Verify::Ca(path.clone()),
                ..TlsOptions::default()
            };
            let e = client_config(&opts).unwrap_err().to_string();
            assert!(
                e.contains("the CA bundle") && e.contains(&path.display().to_string()),
                "{e}"
            );
        }
    }
}
