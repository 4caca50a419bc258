//! Certificates made in the test (rcgen): a CA and the server and client
//! certificates the TLS tests need, good and bad, written as PEM files into
//! the test's temp dir. Nothing here is a secret worth keeping: every run
//! makes new keys.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its key, as PEM files, and the certificate's
/// fingerprint as `bbctl status` shows one (`sha256:<hex>`).
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: PathBuf,
    /// `bbctl::net::fingerprint` of the certificate's DER.
    pub fingerprint: String,
}

/// A certificate authority that signs what the tests ask for.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("cannot generate a CA key");
        Authority { params, key }
    }

    /// The CA's own (self-signed) certificate, PEM.
    fn cert_pem(&self) -> String {
        self.params
            .self_signed(&self.key)
            .expect("cannot self-sign the CA")
            .pem()
    }

    /// Sign `params` with this CA; returns (certificate PEM, DER, key PEM).
    fn sign(&self, params: &CertificateParams) -> (String, Vec<u8>, String) {
        let key = KeyPair::generate().expect("cannot generate a key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("cannot sign a certificate");
        (cert.pem(), cert.der().to_vec(), key.serialize_pem())
    }
}

/// The names a master on loopback answers to.
pub const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// Parameters of a leaf certificate for `names` (IP or DNS) with
/// `usage`, the first name as its common name.
fn leaf(names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    // A fixed, long validity keeps the fixtures independent of the clock.
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2090, 1, 1);
    params
}

/// The fixtures of the TLS tests: a CA, a foreign CA, and server
/// certificates good and bad, as files in `dir`.
pub struct Certs {
    dir: PathBuf,
    ca: Authority,
    /// The CA's certificate (what `bbworker --ca` and `client_ca` take).
    pub ca_cert: PathBuf,
    /// Another CA's certificate, which signed [`Certs::foreign`].
    pub foreign_ca_cert: PathBuf,
    /// A server certificate for 127.0.0.1, ::1 and localhost, signed by
    /// the CA.
    pub server: CertFiles,
    /// Signed by the CA, but for `elsewhere.invalid` only.
    pub wrong_name: CertFiles,
    /// Signed by the CA, for the loopback names, expired in 2001.
    pub expired: CertFiles,
    /// For the loopback names, signed by the foreign CA.
    pub foreign: CertFiles,
}

impl Certs {
    /// Make the CAs and server certificates under `<dir>/certs/`.
    pub fn make(dir: &Path) -> Certs {
        let dir = dir.join("certs");
        fs::create_dir_all(&dir).expect("cannot create the certs dir");
        let ca = Authority::new("bb test CA");
        let foreign_ca = Authority::new("bb foreign CA");
        let ca_cert = dir.join("ca.pem");
        fs::write(&ca_cert, ca.cert_pem()).expect("cannot write ca.pem");
        let foreign_ca_cert = dir.join("foreign-ca.pem");
        fs::write(&foreign_ca_cert, foreign_ca.cert_pem()).expect("cannot write foreign-ca.pem");

        let server_params = leaf(&LOOPBACK_NAMES, ExtendedKeyUsagePurpose::ServerAuth);
        let server = write_pair(&dir, "server", ca.sign(&server_params));
        let wrong_name = write_pair(
            &dir,
            "wrong-name",
            ca.sign(&leaf(
                &["elsewhere.invalid"],
                ExtendedKeyUsagePurpose::ServerAuth,
            )),
        );
        let mut expired_params = server_params.clone();
        expired_params.not_before = date_time_ymd(2000, 1, 1);
        expired_params.not_after = date_time_ymd(2001, 1, 1);
        let expired = write_pair(&dir, "expired", ca.sign(&expired_params));
        let foreign = write_pair(&dir, "foreign", foreign_ca.sign(&server_params));
        Certs {
            dir,
            ca,
            ca_cert,
            foreign_ca_cert,
            server,
            wrong_name,
            expired,
            foreign,
        }
    }

    /// A client certificate signed by the CA whose DNS name (and common
    /// name) is `worker`, for mutual TLS.
    pub fn client(&self, worker: &str) -> CertFiles {
        let params = leaf(&[worker], ExtendedKeyUsagePurpose::ClientAuth);
        write_pair(
            &self.dir,
            &format!("client-{worker}"),
            self.ca.sign(&params),
        )
    }
}

/// Write `<dir>/<name>.pem` and `<dir>/<name>.key` (0600).
fn write_pair(dir: &Path, name: &str, (cert, der, key): (String, Vec<u8>, String)) -> CertFiles {
    use std::os::unix::fs::PermissionsExt;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    fs::write(&cert_path, cert).expect("cannot write a certificate");
    fs::write(&key_path, key).expect("cannot write a key");
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
        .expect("cannot narrow a key's mode");
    CertFiles {
        cert: cert_path,
        key: key_path,
        fingerprint: bbctl::net::fingerprint(&der),
    }
}

/// The fixtures are what they claim: rustls's own verification (the one
/// `bbworker --ca` and `client_ca` use) accepts the good ones and fails
/// each bad one for its own reason, so that a TLS test refused for another
/// reason cannot pass by accident.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, Error, RootCertStore};

    use super::*;

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).expect("not a PEM certificate")
    }

    fn roots(ca: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca)).expect("cannot add the CA");
        Arc::new(roots)
    }

    fn verify(certs: &Certs, pair: &CertFiles, name: &str) -> Result<(), Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&certs.ca_cert), provider)
            .build()
            .expect("a verifier");
        let name = ServerName::try_from(name.to_string()).expect("a server name");
        verifier
            .verify_server_cert(&der(&pair.cert), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn certificate_fixtures_fail_verification_each_for_its_reason() {
        let dir = crate::harness::temp_dir();
        let certs = Certs::make(dir.path());
        for name in LOOPBACK_NAMES {
            verify(&certs, &certs.server, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = |pair: &CertFiles| verify(&certs, pair, "127.0.0.1").unwrap_err();
        assert!(
            matches!(
                err(&certs.wrong_name),
                Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
            ),
            "{}",
            err(&certs.wrong_name)
        );
        assert!(
            matches!(
                err(&certs.expired),
                Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{}",
            err(&certs.expired)
        );
        assert!(
            matches!(
                err(&certs.foreign),
                Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{}",
            err(&certs.foreign)
        );

        // Fingerprints are of the certificate's DER, all different.
        assert_eq!(
            certs.server.fingerprint,
            bbctl::net::fingerprint(&der(&certs.server.cert))
        );
        assert_ne!(certs.server.fingerprint, certs.foreign.fingerprint);

        // Keys load, and match a signing algorithm rustls has.
        for pair in [&certs.server, &certs.expired] {
            let key = PrivateKeyDer::from_pem_file(&pair.key).expect("not a PEM key");
            rustls::crypto::ring::sign::any_supported_type(&key).expect("an unusable key");
        }

        // A client certificate verifies against the CA (and not another).
        let client = certs.client("w1");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&certs.ca_cert), provider.clone())
                .build()
                .expect("a client verifier");
        verifier
            .verify_client_cert(&der(&client.cert), &[], UnixTime::now())
            .expect("the client certificate does not verify");
        let foreign =
            WebPkiClientVerifier::builder_with_provider(roots(&certs.foreign_ca_cert), provider)
                .build()
                .expect("a client verifier");
        assert!(
            foreign
                .verify_client_cert(&der(&client.cert), &[], UnixTime::now())
                .is_err()
        );
    }
}
