//! What carries a connection between a worker and the master: a Unix
//! socket, TCP, or TLS over TCP. Both ends use these pieces, so that what
//! one computes (a certificate's fingerprint, a session's channel binding)
//! the other computes alike.
//!
//! The conversation itself (frames, handshake) is the same on every
//! transport and lives in `crate::protocol`.

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream of any transport, for code that must not care which.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// An owned connection of any transport.
pub type BoxConn = Box<dyn Conn>;

/// Which transport a worker link runs on, as `bbctl workers` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A Unix socket on the master's host.
    Unix,
    /// Plain TCP (`allow_plaintext = true`).
    Tcp,
    /// TLS 1.3 over TCP.
    Tls,
}

/// The SHA-256 fingerprint of a DER certificate, as the master logs it,
/// `bbctl status` shows it and `bbworker --fingerprint` takes it:
/// `sha256:` and 64 lowercase hex digits.
pub fn fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(cert_der);
    let mut out = String::from("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Parse a fingerprint as a person may paste it: `sha256:` (optional, any
/// case) then 64 hex digits, with or without `:` between pairs (as
/// `openssl x509 -fingerprint -sha256` prints them). Returns the 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let trimmed = text.trim();
    let hex = match trimmed.split_once(':') {
        Some((algo, rest)) if algo.eq_ignore_ascii_case("sha256") => rest,
        _ => trimmed,
    };
    let digits: String = hex.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{trimmed:?} is not a SHA-256 fingerprint (expected `sha256:` and 64 hex digits, \
             as `bbctl status` shows it)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// This TLS session's channel binding for the worker's proof (see
/// `crate::protocol::proof`): the same 32 bytes on both ends of one
/// session, different on every other.
pub fn channel_binding<D>(session: &rustls::ConnectionCommon<D>) -> Result<Vec<u8>, rustls::Error> {
    session.export_keying_material(
        vec![0u8; crate::protocol::proof::BINDING_LEN],
        crate::protocol::proof::BINDING_LABEL,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_in_every_pasted_form() {
        let fp = fingerprint(b"a certificate");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
        let bytes = parse_fingerprint(&fp).unwrap();
        let upper_with_colons = bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&upper_with_colons), Ok(bytes));
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{upper_with_colons}")),
            Ok(bytes)
        );
        assert_eq!(parse_fingerprint(&fp[7..]), Ok(bytes));
    }

    #[test]
    fn a_bad_fingerprint_says_what_is_expected() {
        for bad in ["", "sha256:abc", "md5:00", &"zz".repeat(32)] {
            let e = parse_fingerprint(bad).unwrap_err();
            assert!(e.contains("64 hex digits"), "{bad:?}: {e}");
        }
    }
}
