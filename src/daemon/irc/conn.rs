//! Opening the connection to the IRC server: TCP, then TLS with the
//! server's certificate verified (the system's CAs, a CA file, or a pinned
//! fingerprint; the same verifier as the worker's, `crate::worker::tls`).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::IrcSettings;
use crate::worker::tls::{FingerprintMismatch, TlsOptions, Verify, client_config, rustls_error};

/// How long TCP connect and TLS handshake may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to the server, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects as `settings` say; the error is one line for the log and
/// `status`.
pub async fn connect(settings: &IrcSettings) -> Result<Box<dyn Stream>, String> {
    let addr = format!("{}:{}", settings.server, settings.port);
    let open = async {
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if !settings.tls {
            return Ok(Box::new(tcp) as Box<dyn Stream>);
        }
        let verify = match (&settings.tls_fingerprint, &settings.tls_ca) {
            (Some(pin), _) => Verify::Fingerprint(*pin),
            (None, Some(ca)) => Verify::Ca(ca.clone()),
            (None, None) => Verify::SystemRoots,
        };
        let config = client_config(&TlsOptions {
            verify,
            server_name: None,
            client_cert: None,
        })
        .map_err(|e| format!("cannot set up TLS for {addr}: {e}"))?;
        let name = match settings.server.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls::pki_types::ServerName::try_from(settings.server.clone())
                .map_err(|_| format!("{:?} is not a DNS name", settings.server))?,
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {addr} failed: {}", tls_words(&e)))?;
        Ok(Box::new(tls) as Box<dyn Stream>)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "cannot connect to {addr} within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })
}

/// A failed TLS handshake in words that name the setting to look at: a
/// pinned fingerprint that does not match says both fingerprints, a
/// certificate refused says why.
pub fn tls_words(e: &std::io::Error) -> String {
    use rustls::CertificateError;
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            match other.0.downcast_ref::<FingerprintMismatch>() {
                Some(m) => format!(
                    "the server's certificate fingerprint is {}, not the pinned {} (tls_fingerprint in [irc])",
                    m.actual, m.expected
                ),
                None => format!("the server's certificate is refused: {e}"),
            }
        }
        Some(rustls::Error::InvalidCertificate(cert)) => {
            let why = match cert {
                CertificateError::UnknownIssuer => {
                    "it is not signed by a trusted CA (set tls_ca or tls_fingerprint in [irc])"
                        .to_string()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    format!("it is not valid for this server name ({cert}; see server in [irc])")
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("it has expired ({cert})")
                }
                other => other.to_string(),
            };
            format!("the server's certificate is refused: {why}")
        }
        Some(other) => format!("{other}"),
        None => e.to_string(),
    }
}

/// The wait before the next attempt: exponential from 1 s to 5 min, with
/// "equal jitter" (half fixed, half random) so that many bots cut off
/// together do not come back together. `jitter` is in [0, 1).
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(9)).min(Duration::from_secs(300));
    base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A random number in [0, 1) for [`backoff`].
pub fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn a_refused_certificate_is_said_in_words_naming_the_setting() {
        let mismatch = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(std::sync::Arc::new(FingerprintMismatch {
                expected: "sha256:aa".into(),
                actual: "sha256:bb".into(),
            })),
        ));
        assert_eq!(
            tls_words(&io(mismatch)),
            "the server's certificate fingerprint is sha256:bb, not the pinned sha256:aa (tls_fingerprint in [irc])"
        );
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(
            tls_words(&io(unknown)).contains("not signed by a trusted CA (set tls_ca"),
            "{}",
            tls_words(&io(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )))
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(tls_words(&plain), "reset");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(
            backoff(0, 0.999_999),
            Duration::from_millis(999) + Duration::from_nanos(999_500)
        );
        assert_eq!(backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, 0.0), Duration::from_secs(150));
        assert!(backoff(30, 0.99) <= Duration::from_secs(300));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
