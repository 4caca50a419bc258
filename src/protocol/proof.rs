//! How a worker proves it knows its secret without sending it.
//!
//! The master sends a fresh random nonce ([`HelloReply::Challenge`]); the
//! worker answers with HMAC-SHA256 keyed by its secret over the nonce, its
//! name and, on TLS, the connection's channel binding (a keying-material
//! export both ends of *this* TLS session compute alike). A proof is
//! therefore useless on any other connection: a listener that records it,
//! or a relay between two TLS sessions, learns nothing it can replay. The
//! master checks with [`Proof::verify`], in constant time (ring's
//! `hmac::verify`).
//!
//! [`HelloReply::Challenge`]: super::HelloReply::Challenge

use ring::hmac;

/// Bytes in a challenge nonce.
pub const NONCE_LEN: usize = 32;

/// The TLS exporter label for the channel binding (RFC 8446 section 7.5).
pub const BINDING_LABEL: &[u8] = b"EXPORTER-bbp-worker-proof";

/// Bytes of channel binding exported from a TLS session.
pub const BINDING_LEN: usize = 32;

/// What is signed, domain-separated so a proof can never be mistaken for
/// another use of the same key.
const DOMAIN: &[u8] = b"bbp worker proof v3";

/// A fresh random nonce for a challenge.
pub fn nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom as _;
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .expect("the operating system's random number generator failed");
    nonce
}

/// The worker's side: the MAC to send for `nonce`.
pub fn prove(secret: &str, nonce: &[u8], name: &str, binding: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, &message(nonce, name, binding))
        .as_ref()
        .to_vec()
}

/// Everything the master needs to check one worker's proof, gathered by
/// the connection task and checked by the loop, which knows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    /// The nonce the master sent on this connection.
    pub nonce: Vec<u8>,
    /// This connection's channel binding; empty without TLS.
    pub binding: Vec<u8>,
    /// What the worker answered.
    pub mac: Vec<u8>,
}

impl Proof {
    /// True when `mac` is the proof of `secret` for worker `name`;
    /// constant time in where a wrong MAC differs.
    pub fn verify(&self, secret: &str, name: &str) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        hmac::verify(&key, &message(&self.nonce, name, &self.binding), &self.mac).is_ok()
    }
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proof")
            .field("nonce_len", &self.nonce.len())
            .field("binding_len", &self.binding.len())
            .finish_non_exhaustive()
    }
}

/// Length-prefixed fields after the domain, so that no two different
/// (nonce, name, binding) triples sign the same bytes.
fn message(nonce: &[u8], name: &str, binding: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + nonce.len() + name.len() + binding.len() + 12);
    m.extend_from_slice(DOMAIN);
    for field in [nonce, name.as_bytes(), binding] {
        m.extend_from_slice(&(field.len() as u32).to_be_bytes());
        m.extend_from_slice(field);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(secret: &str, nonce: &[u8], name: &str, binding: &[u8]) -> Proof {
        Proof {
            nonce: nonce.to_vec(),
            binding: binding.to_vec(),
            mac: prove(secret, nonce, name, binding),
        }
    }

    #[test]
    fn the_right_secret_verifies() {
        let n = nonce();
        assert!(proof("s3cret", &n, "w1", b"").verify("s3cret", "w1"));
        assert!(proof("s3cret", &n, "w1", &[7; 32]).verify("s3cret", "w1"));
    }

    #[test]
    fn anything_else_fails() {
        let n = nonce();
        let p = proof("s3cret", &n, "w1", &[7; 32]);
        assert!(!p.verify("s3creT", "w1"), "wrong secret");
        assert!(!p.verify("s3cret", "w2"), "another worker's name");
        let mut other_nonce = p.clone();
        other_nonce.nonce = nonce().to_vec();
        assert!(
            !other_nonce.verify("s3cret", "w1"),
            "replayed on another challenge"
        );
        let mut other_session = p.clone();
        other_session.binding = vec![8; 32];
        assert!(
            !other_session.verify("s3cret", "w1"),
            "relayed to another TLS session"
        );
        let mut truncated = p;
        truncated.mac.pop();
        assert!(!truncated.verify("s3cret", "w1"), "truncated MAC");
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        // Same concatenated bytes, different split between name and binding.
        let n = [1u8; NONCE_LEN];
        assert_ne!(prove("k", &n, "ab", b"c"), prove("k", &n, "a", b"bc"));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(nonce(), nonce());
    }
}
