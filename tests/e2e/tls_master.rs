//! The master's TCP listeners for remote workers (`worker_listen`), driven
//! by a raw client written here (blocking rustls over a std TcpStream)
//! that does TLS and the worker handshake by hand: welcome over TLS on
//! IPv4 and IPv6 loopback, the fingerprint `bbctl status` shows, a wrong
//! proof, garbage and stalled handshakes, the cap on unauthenticated
//! connections, plain TCP, mutual TLS, and one worker, one link.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bbctl::protocol::frame::{decode, encode};
use bbctl::protocol::{
    Hello, HelloReply, MasterToWorker, RefusalKind, Role, WorkerProof, WorkerToMaster, proof,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use crate::harness::{Master, wait_until};

const SECRET: &str = "remote-secret-0123456789";

/// How long `bbctl status` may take while the TCP port is under attack.
const PROMPT: Duration = Duration::from_secs(3);

/// A master with one remote worker `remote-1` and `[master]` plus `extra`.
fn config(extra: &str) -> String {
    format!(
        r#"
[master]
keepalive = "1s"
{extra}

[[worker]]
name = "remote-1"
secret = "{SECRET}"

[[builder]]
name = "b"
workers = ["remote-1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#
    )
}

/// The listeners as `bbctl status --json` shows them.
fn tls_status(m: &Master) -> Value {
    m.bbctl_json(&["status"])["tls"].clone()
}

/// The first listen address of `status`.
fn listen_addr(m: &Master) -> SocketAddr {
    tls_status(m)["listen"][0]
        .as_str()
        .expect("status shows no listen address")
        .parse()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate and remembers it (the test compares its
/// fingerprint with the one `status` shows).
#[derive(Debug)]
struct Remember(Arc<Mutex<Option<Vec<u8>>>>);

impl ServerCertVerifier for Remember {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 offered".into()))
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
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

enum Stream {
    Tls(Box<rustls::StreamOwned<ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.read(buf),
            Stream::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Plain(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Plain(s) => s.flush(),
        }
    }
}

/// A remote worker connection, by hand.
struct Remote {
    stream: Stream,
    binding: Vec<u8>,
    /// The master's leaf certificate (TLS).
    cert: Option<Vec<u8>>,
    local: SocketAddr,
}

/// A client certificate and its key.
type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp
}

impl Remote {
    /// TLS to `addr`; `Err` when the TLS handshake fails.
    fn tls(addr: SocketAddr, client: Option<ClientCert>) -> Result<Remote, std::io::Error> {
        let seen = Arc::new(Mutex::new(None));
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Remember(Arc::clone(&seen))));
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        };
        let conn =
            ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp(addr));
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let binding = bbctl::net::channel_binding(&tls.conn).unwrap();
        let local = tls.sock.local_addr().unwrap();
        let cert = seen.lock().unwrap().clone();
        Ok(Remote {
            stream: Stream::Tls(Box::new(tls)),
            binding,
            cert,
            local,
        })
    }

    /// Plain TCP to `addr`.
    fn plain(addr: SocketAddr) -> Remote {
        let tcp = tcp(addr);
        Remote {
            local: tcp.local_addr().unwrap(),
            stream: Stream::Plain(tcp),
            binding: Vec::new(),
            cert: None,
        }
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) {
        let _ = self.stream.write_all(&encode(msg).unwrap());
        let _ = self.stream.flush();
    }

    /// The next frame, `None` at a close.
    fn frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(body)
    }

    /// The worker handshake as `name` proving `secret`: `Ok` at the
    /// welcome, else the refusal (or `Other` for a close).
    fn login(&mut self, name: &str, secret: &str) -> Result<(), (RefusalKind, String)> {
        self.send(&Hello::new(Role::Worker {
            name: name.into(),
            running: vec![],
            host: Some("tls-test".into()),
        }));
        loop {
            let Some(body) = self.frame() else {
                return Err((RefusalKind::Other, "closed".into()));
            };
            match decode::<HelloReply>(&body).expect("a HelloReply") {
                HelloReply::Challenge { nonce } => {
                    let mac = proof::prove(secret, &nonce, name, &self.binding);
                    self.send(&WorkerProof { mac });
                }
                HelloReply::Welcome { .. } => return Ok(()),
                HelloReply::Refused { reason, kind, .. } => return Err((kind, reason)),
            }
        }
    }

    /// Answer the master's pings until `stop`.
    fn answer_pings(mut self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        if let Stream::Tls(s) = &self.stream {
            s.sock
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut len = [0u8; 4];
                match self.stream.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue;
                    }
                    Err(_) => return,
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if self.stream.read_exact(&mut body).is_err() {
                    return;
                }
                if let Ok(MasterToWorker::Ping { seq }) = decode(&body) {
                    self.send(&WorkerToMaster::Pong { seq });
                }
            }
        })
    }
}

/// Whether the master closes `stream` within `bound` (an end of file or
/// a reset, not a read timeout).
fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// `bbctl status` answers within [`PROMPT`].
fn status_is_prompt(m: &Master) {
    let at = Instant::now();
    m.bbctl_ok(&["status"]);
    assert!(at.elapsed() < PROMPT, "status took {:?}", at.elapsed());
}

/// The worker's entry in `bbctl workers --json`.
fn worker_json(m: &Master) -> Value {
    m.bbctl_json(&["workers"])
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "remote-1")
        .cloned()
        .unwrap()
}

#[test]
fn a_worker_is_welcomed_over_tls_on_ipv4_and_ipv6_and_the_fingerprint_is_the_served_one() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0", "[::1]:0"]"#));
    let tls = tls_status(&m);
    let fingerprint = tls["fingerprint"].as_str().unwrap().to_string();
    assert!(fingerprint.starts_with("sha256:"), "{tls}");
    assert_eq!(tls["plaintext"], false, "{tls}");
    let listen: Vec<SocketAddr> = tls["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listen.len(), 2, "{tls}");
    assert!(listen[0].is_ipv4() && listen[1].is_ipv6(), "{tls}");
    assert!(listen.iter().all(|a| a.port() != 0), "{tls}");
    // The certificate was kept for the next start.
    assert!(m.state_dir().join("tls/cert.pem").exists());
    for addr in listen {
        let mut w = Remote::tls(addr, None).unwrap();
        assert_eq!(
            bbctl::net::fingerprint(w.cert.as_ref().unwrap()),
            fingerprint,
            "the certificate served on {addr}"
        );
        w.login("remote-1", SECRET)
            .unwrap_or_else(|e| panic!("not welcomed on {addr}: {e:?}"));
        let shown = worker_json(&m);
        assert_eq!(shown["transport"], "tls", "{shown}");
        assert_eq!(shown["tls_version"], "TLSv1.3", "{shown}");
        assert_eq!(
            shown["peer"]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap(),
            w.local,
            "{shown}"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let answering = w.answer_pings(Arc::clone(&stop));
        wait_until(
            "a keepalive round trip measured",
            Duration::from_secs(10),
            || worker_json(&m)["ping_rtt_ms"].is_number(),
        );
        stop.store(true, Ordering::Relaxed);
        answering.join().unwrap();
        wait_until("the link seen lost", Duration::from_secs(10), || {
            worker_json(&m)["transport"].is_null()
        });
    }
}

#[test]
fn worker_command_prints_the_line_for_a_second_host() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let addr = listen_addr(&m);
    let fp = tls_status(&m)["fingerprint"].as_str().unwrap().to_string();
    let out = m.bbctl_code(&["worker-command", "remote-1"], 0);
    let line = crate::harness::text(&out.stdout);
    assert_eq!(
        line.trim_end(),
        format!(
            "bbworker --master tls://127.0.0.1:{} --fingerprint {fp} --name remote-1 \
             --secret-file /etc/bbworker/remote-1.secret --dir /var/lib/bbworker/remote-1",
            addr.port()
        )
    );
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        crate::harness::text(&out.stderr).contains("inline `secret`"),
        "{}",
        crate::harness::describe(&out)
    );
    assert!(!line.contains(SECRET), "{line}");
    m.bbctl_code(&["worker-command", "nobody"], 1);
}

#[test]
fn reload_opens_and_closes_listeners_but_keeps_their_links() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let first = listen_addr(&m);
    let mut w = Remote::tls(first, None).unwrap();
    w.login("remote-1", SECRET).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answering = w.answer_pings(Arc::clone(&stop));
    m.write_config(&config(r#"worker_listen = ["127.0.0.1:0", "[::1]:0"]"#));
    m.bbctl_ok(&["reload"]);
    wait_until(
        "the added address listened on",
        Duration::from_secs(10),
        || tls_status(&m)["listen"].as_array().unwrap().len() == 2,
    );
    let second: SocketAddr = tls_status(&m)["listen"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(second.is_ipv6());
    // Removing the first address closes its listener, not its link.
    m.write_config(&config(r#"worker_listen = ["[::1]:0"]"#));
    m.bbctl_ok(&["reload"]);
    wait_until(
        "the removed address closed",
        Duration::from_secs(10),
        || tls_status(&m)["listen"].as_array().unwrap().len() == 1,
    );
    assert!(
        TcpStream::connect_timeout(&first, Duration::from_secs(2)).is_err(),
        "{first} still takes connections"
    );
    assert_eq!(worker_json(&m)["transport"], "tls");
    assert!(worker_json(&m)["connected"].as_bool().unwrap());
    stop.store(true, Ordering::Relaxed);
    answering.join().unwrap();
}

#[test]
fn a_restarted_master_serves_the_same_self_signed_certificate() {
    let mut m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let first = tls_status(&m)["fingerprint"].clone();
    m.bbctl_ok(&["shutdown"]);
    m.wait_exit(crate::harness::EXIT_TIMEOUT);
    m.spawn();
    assert_eq!(tls_status(&m)["fingerprint"], first);
    let mut w = Remote::tls(listen_addr(&m), None).unwrap();
    assert_eq!(
        Value::from(bbctl::net::fingerprint(w.cert.as_ref().unwrap())),
        first
    );
    w.login("remote-1", SECRET).unwrap();
}

#[test]
fn a_wrong_proof_is_refused_and_its_address_waits() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let addr = listen_addr(&m);
    let mut w = Remote::tls(addr, None).unwrap();
    let (kind, reason) = w.login("remote-1", "not-the-secret-at-all").unwrap_err();
    assert_eq!(kind, RefusalKind::WrongSecret, "{reason}");
    // The same address is turned away at once for a while ...
    let mut next = tcp(addr);
    assert!(
        closed_within(&mut next, Duration::from_millis(500)),
        "a connection right after a failed proof was not closed at once"
    );
    status_is_prompt(&m);
    // ... and then the right secret is welcome again.
    wait_until("the address's delay over", Duration::from_secs(10), || {
        Remote::tls(addr, None).is_ok_and(|mut w| w.login("remote-1", SECRET).is_ok())
    });
}

#[test]
fn garbage_and_stalled_handshakes_are_closed_within_the_bound() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let addr = listen_addr(&m);
    let mut garbage = tcp(addr);
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(2)),
        "not-TLS bytes were not closed quickly"
    );
    let started = Instant::now();
    let mut stalled = tcp(addr);
    status_is_prompt(&m);
    assert!(
        closed_within(&mut stalled, Duration::from_secs(9)),
        "a TLS handshake that never starts was kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "closed before the handshake deadline: {:?}",
        started.elapsed()
    );
    // TLS done, then silence: the protocol handshake has the same bound.
    let started = Instant::now();
    let Stream::Tls(quiet) = Remote::tls(addr, None).unwrap().stream else {
        unreachable!()
    };
    let mut quiet = *quiet;
    quiet
        .sock
        .set_read_timeout(Some(Duration::from_secs(9)))
        .unwrap();
    let mut buf = [0u8; 64];
    let _ = quiet.read(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a silent peer after TLS was kept open"
    );
    status_is_prompt(&m);
}

#[test]
fn connections_beyond_the_cap_of_unauthenticated_ones_are_closed_at_once() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let addr = listen_addr(&m);
    let started = Instant::now();
    let crowd: Vec<TcpStream> = (0..256).map(|_| tcp(addr)).collect();
    let mut extra = Vec::new();
    wait_until(
        "a connection beyond the cap closed at once",
        Duration::from_secs(4),
        || {
            let mut one = tcp(addr);
            let closed = closed_within(&mut one, Duration::from_millis(300));
            extra.push(one);
            closed
        },
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    status_is_prompt(&m);
    // Once the crowd's handshake time is over, workers get in again.
    wait_until(
        "a worker welcomed after the crowd",
        Duration::from_secs(15),
        || Remote::tls(addr, None).is_ok_and(|mut w| w.login("remote-1", SECRET).is_ok()),
    );
    drop(crowd);
}

#[test]
fn plaintext_mode_speaks_plain_tcp_and_says_so() {
    let m = Master::start(&config(
        "worker_listen = [\"127.0.0.1:0\"]\nallow_plaintext = true",
    ));
    let tls = tls_status(&m);
    assert_eq!(tls["plaintext"], true, "{tls}");
    assert!(tls["fingerprint"].is_null(), "{tls}");
    assert!(m.stderr().contains("allow_plaintext"), "{}", m.stderr());
    let mut w = Remote::plain(listen_addr(&m));
    w.login("remote-1", SECRET).unwrap();
    let shown = worker_json(&m);
    assert_eq!(shown["transport"], "tcp", "{shown}");
    assert!(shown["tls_version"].is_null(), "{shown}");
}

/// A CA and client certificates it signs, named as asked.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test workers CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn client(&self, name: &str) -> ClientCert {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }
}

#[test]
fn with_client_ca_the_certificate_must_name_the_worker() {
    let ca = Ca::new();
    let m = Master::start_with_files(
        &config("worker_listen = [\"127.0.0.1:0\"]\nclient_ca = \"ca.pem\""),
        &[("ca.pem", &ca.issuer.pem())],
    );
    let addr = listen_addr(&m);
    let mut right = Remote::tls(addr, Some(ca.client("remote-1"))).unwrap();
    right.login("remote-1", SECRET).unwrap();
    drop(right);
    wait_until("the link seen lost", Duration::from_secs(10), || {
        worker_json(&m)["transport"].is_null()
    });
    let mut wrong = Remote::tls(addr, Some(ca.client("someone-else"))).unwrap();
    let (kind, reason) = wrong.login("remote-1", SECRET).unwrap_err();
    assert_eq!(kind, RefusalKind::Certificate, "{reason}");
    assert!(reason.contains("remote-1"), "{reason}");
    // Without a certificate, TLS itself fails (at the first read in 1.3).
    wait_until(
        "the address's delay over",
        Duration::from_secs(10),
        || match Remote::tls(addr, None) {
            Err(_) => true,
            Ok(mut w) => match w.login("remote-1", SECRET) {
                Ok(()) => panic!("welcomed without a client certificate"),
                Err((kind, _)) => kind == RefusalKind::Other,
            },
        },
    );
    status_is_prompt(&m);
}

#[test]
fn a_second_connection_is_refused_while_the_first_answers_and_wins_when_it_is_silent() {
    let m = Master::start(&config(r#"worker_listen = ["127.0.0.1:0"]"#));
    let addr = listen_addr(&m);
    // A live first link answers the master's ping: the second is refused.
    let mut first = Remote::tls(addr, None).unwrap();
    first.login("remote-1", SECRET).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let answering = first.answer_pings(Arc::clone(&stop));
    let mut second = Remote::tls(addr, None).unwrap();
    let (kind, reason) = second.login("remote-1", SECRET).unwrap_err();
    assert_eq!(kind, RefusalKind::AlreadyConnected, "{reason}");
    stop.store(true, Ordering::Relaxed);
    answering.join().unwrap();
    wait_until("the first link seen lost", Duration::from_secs(10), || {
        worker_json(&m)["transport"].is_null()
    });
    // A silent first link (it never reads again) gives way to the new one,
    // well before its keepalive would have declared it lost.
    let mut silent = Remote::tls(addr, None).unwrap();
    silent.login("remote-1", SECRET).unwrap();
    let mut third = Remote::tls(addr, None).unwrap();
    third
        .login("remote-1", SECRET)
        .unwrap_or_else(|e| panic!("the new link lost to a silent one: {e:?}"));
    let shown = worker_json(&m);
    assert_eq!(
        shown["peer"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap(),
        third.local,
        "{shown}"
    );
    drop(silent);
}
