//! A fake master speaking the worker protocol by hand, for the worker's
//! tests: on a Unix socket (as the local workers use), plain TCP, or TLS
//! (with a certificate made here, optionally requiring client
//! certificates), computing the channel binding on its side as the real
//! master does.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use super::address::{Host, HostPort, MasterAddr};
use super::spool::DEFAULT_SPOOL_LIMIT;
use super::test_util::BOUND;
use super::tls::TlsOptions;
use super::{WorkerError, WorkerOptions, run};
use crate::net::BoxConn;
use crate::protocol::{
    FrameError, Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, MasterToWorker,
    PROTOCOL_VERSION, Role, RunningStep, StepAssignment, StepEnd, WireAction, WorkerProof,
    WorkerToMaster, proof, read_msg, write_msg,
};

/// A server certificate and its key, and the CA that signed it (if any).
pub(crate) struct ServerCert {
    /// The chain to present (leaf first).
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub(crate) key: PrivateKeyDer<'static>,
}

/// A test CA that signs server and client certificates.
pub(crate) struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A number no other CA of this process has: CAs with the same name
/// would look like one issuer (and fail on signatures, not on trust).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("bbworker test CA {}", unique()),
        );
        let cert = params.self_signed(&key).expect("ca cert");
        let issuer = rcgen::Issuer::new(params, key);
        TestCa { cert, issuer }
    }

    /// The CA certificate in PEM, for `--ca` or the master's `client_ca`.
    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by this CA.
    pub(crate) fn issue(&self, names: &[&str]) -> ServerCert {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.as_str());
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("key der"),
        }
    }

    /// The same leaf as PEM files in `dir`: (certificate, key).
    pub(crate) fn issue_files(&self, names: &[&str], dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let stem = names.first().copied().unwrap_or("leaf");
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

impl ServerCert {
    /// A self-signed certificate, as a master makes for itself.
    pub(crate) fn self_signed(names: &[&str]) -> Self {
        let (cert, key) = super::tls::tests::self_signed(names);
        ServerCert {
            chain: vec![cert],
            key,
        }
    }

    /// The fingerprint `bbctl status` would show.
    pub(crate) fn fingerprint(&self) -> String {
        crate::net::fingerprint(&self.chain[0])
    }
}

/// What the fake master listens on.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
    Tls(TcpListener, tokio_rustls::TlsAcceptor),
}

/// A listening fake master in a short temp dir (socket paths are limited
/// to 107 bytes).
pub(crate) struct FakeMaster {
    pub(crate) dir: TempDir,
    addr: MasterAddr,
    listener: Option<Listener>,
}

/// One accepted worker connection, handshake read.
pub(crate) struct Conn {
    pub(crate) r: ReadHalf<BoxConn>,
    pub(crate) w: WriteHalf<BoxConn>,
    pub(crate) hello: Hello,
    /// The worker's answer to our challenge, with the binding of this
    /// session as the master computes it.
    pub(crate) proof: proof::Proof,
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("bbw")
        .tempdir_in("/tmp")
        .expect("temp dir")
}

/// A loopback listener on an ephemeral port, and its address.
fn tcp_listener() -> (TcpListener, HostPort) {
    let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    std.set_nonblocking(true).expect("nonblocking");
    let port = std.local_addr().expect("addr").port();
    let hp = HostPort {
        host: Host::Ip([127, 0, 0, 1].into()),
        port,
    };
    (TcpListener::from_std(std).expect("tokio listener"), hp)
}

impl FakeMaster {
    pub(crate) fn new() -> Self {
        let dir = temp_dir();
        let socket = dir.path().join("m.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        FakeMaster {
            addr: MasterAddr::Unix(socket),
            dir,
            listener: Some(Listener::Unix(listener)),
        }
    }

    /// A master speaking plain TCP on loopback (`allow_plaintext`).
    pub(crate) fn tcp() -> Self {
        let dir = temp_dir();
        let (listener, hp) = tcp_listener();
        FakeMaster {
            dir,
            addr: MasterAddr::Tcp(hp),
            listener: Some(Listener::Tcp(listener)),
        }
    }

    /// A master speaking TLS 1.3 on loopback with `cert`; with
    /// `client_ca`, it requires a client certificate signed by it.
    pub(crate) fn tls(cert: ServerCert, client_ca: Option<&TestCa>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls 1.3");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.der()).expect("client ca");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(cert.chain, cert.key)
            .expect("server cert");
        let dir = temp_dir();
        let (listener, hp) = tcp_listener();
        FakeMaster {
            dir,
            addr: MasterAddr::Tls(hp),
            listener: Some(Listener::Tls(
                listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            )),
        }
    }

    /// Where workers reach this master.
    pub(crate) fn addr(&self) -> &MasterAddr {
        &self.addr
    }

    pub(crate) fn options(&self) -> WorkerOptions {
        WorkerOptions {
            masters: vec![self.addr.clone()],
            tls: TlsOptions::default(),
            name: "w1".to_string(),
            secret: "s3cret".to_string(),
            dir: self.dir.path().join("work"),
            orphan_timeout: None,
            spool_limit: DEFAULT_SPOOL_LIMIT,
            guard_exe: None,
        }
    }

    pub(crate) fn spawn_worker(&self) -> JoinHandle<Result<(), WorkerError>> {
        tokio::spawn(run(self.options()))
    }

    /// Stop listening: connections are refused from now on.
    pub(crate) fn close(&mut self) {
        self.listener = None;
    }

    /// Accept one connection and finish its transport's handshake: the
    /// stream and this session's channel binding. For TLS, the error is
    /// the server side's view of a failed handshake.
    pub(crate) async fn accept_transport(&self) -> Result<(BoxConn, Vec<u8>), std::io::Error> {
        let listener = self.listener.as_ref().expect("listening");
        let accepted = async {
            match listener {
                Listener::Unix(l) => {
                    let (s, _) = l.accept().await?;
                    Ok((Box::new(s) as BoxConn, Vec::new()))
                }
                Listener::Tcp(l) => {
                    let (s, _) = l.accept().await?;
                    Ok((Box::new(s) as BoxConn, Vec::new()))
                }
                Listener::Tls(l, acceptor) => {
                    let (s, _) = l.accept().await?;
                    let tls = acceptor.accept(s).await?;
                    let binding = crate::net::channel_binding(tls.get_ref().1)
                        .map_err(std::io::Error::other)?;
                    Ok((Box::new(tls) as BoxConn, binding))
                }
            }
        };
        tokio::time::timeout(BOUND, accepted)
            .await
            .expect("worker connects in time")
    }

    pub(crate) async fn accept(&self) -> Conn {
        let (stream, binding) = self.accept_transport().await.expect("accept");
        let (mut r, mut w) = tokio::io::split(stream);
        let hello: Hello = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("hello");
        let nonce = proof::nonce().to_vec();
        write_msg(
            &mut w,
            &HelloReply::Challenge {
                nonce: nonce.clone(),
            },
        )
        .await
        .expect("challenge");
        let answer: WorkerProof = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("proof");
        let proof = proof::Proof {
            nonce,
            binding,
            mac: answer.mac,
        };
        Conn { r, w, hello, proof }
    }

    /// Accept, read the Hello and refuse it as a standby does, naming
    /// `leader` (when given) as where to go. The Hello, to check the steps
    /// it lists.
    pub(crate) async fn refuse_not_leader(&self, leader: Option<&str>) -> Hello {
        let (stream, _) = self.accept_transport().await.expect("accept");
        let (mut r, mut w) = tokio::io::split(stream);
        let hello: Hello = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("hello");
        let refusal =
            HelloReply::not_leader("this master is a standby", leader.map(ToString::to_string));
        write_msg(&mut w, &refusal).await.expect("refusal");
        hello
    }

    /// True when a worker has dialled this master and is waiting to be
    /// accepted (the connection is taken, and dropped). Does not wait.
    pub(crate) fn was_dialled(&self) -> bool {
        // The sockets are non-blocking: accept(2) answers at once.
        let socket = match self.listener.as_ref().expect("listening") {
            Listener::Unix(l) => socket2::SockRef::from(l),
            Listener::Tcp(l) | Listener::Tls(l, _) => socket2::SockRef::from(l),
        };
        match socket.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    /// Accept, check the Hello lists no step, welcome.
    pub(crate) async fn welcome(&self) -> Conn {
        self.welcome_with(&[], None).await
    }

    /// Accept, check the Hello lists exactly `running`, welcome with this
    /// keepalive.
    pub(crate) async fn welcome_with(
        &self,
        running: &[(u64, u32)],
        keepalive_ms: Option<u64>,
    ) -> Conn {
        let mut conn = self.accept().await;
        assert!(conn.hello.check().is_ok());
        match &conn.hello.role {
            Role::Worker {
                name,
                running: listed,
                ..
            } => {
                assert_eq!(name, "w1");
                assert!(
                    conn.proof.verify("s3cret", "w1"),
                    "the worker proved its secret"
                );
                let expected: Vec<RunningStep> = running
                    .iter()
                    .map(|&(build, step)| RunningStep { build, step })
                    .collect();
                assert_eq!(listed, &expected, "steps listed in the Hello");
            }
            Role::Client => panic!("worker said it is a client"),
        }
        let welcome = HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            software: "fake master".to_string(),
            master_pid: std::process::id(),
            keepalive_ms,
        };
        write_msg(&mut conn.w, &welcome).await.expect("welcome");
        conn
    }
}

impl Conn {
    pub(crate) async fn send(&mut self, msg: MasterToWorker) {
        write_msg(&mut self.w, &msg).await.expect("send to worker");
    }

    /// The next frame, or why there is none, with a bound.
    pub(crate) async fn try_recv(&mut self) -> Result<WorkerToMaster, FrameError> {
        tokio::time::timeout(BOUND, read_msg(&mut self.r, MAX_FRAME))
            .await
            .expect("worker message in time")
    }

    /// The next frame that is not a keepalive.
    pub(crate) async fn recv(&mut self) -> WorkerToMaster {
        loop {
            match self.try_recv().await.expect("worker message") {
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
                other => return other,
            }
        }
    }

    /// Output up to the step's end, checking offsets are contiguous from
    /// `from`; the end is acknowledged as a master does once it stored it.
    pub(crate) async fn until_end_from(&mut self, from: u64) -> (Vec<u8>, StepEnd) {
        let (out, (build, step), end) = self.until_end_unkept(from).await;
        // As a real master's, this receipt may find the link closed (a
        // worker that leaves does not wait for it).
        let _ = write_msg(&mut self.w, &MasterToWorker::EndKept { build, step }).await;
        (out, end)
    }

    /// Output from `from` up to the step's end, like a master killed
    /// before it stored the end: no `EndKept`.
    pub(crate) async fn until_end_unkept(&mut self, from: u64) -> (Vec<u8>, (u64, u32), StepEnd) {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                WorkerToMaster::Output { offset, data, .. } => {
                    assert_eq!(offset, from + out.len() as u64, "contiguous offsets");
                    out.extend_from_slice(&data);
                }
                WorkerToMaster::StepEnded { build, step, end } => return (out, (build, step), end),
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Output up to the step's end, which is then acknowledged as a
    /// master does once it has stored it.
    pub(crate) async fn until_end(&mut self) -> (Vec<u8>, StepEnd) {
        self.until_end_from(0).await
    }

    pub(crate) async fn goodbye(&mut self) {
        self.send(MasterToWorker::Goodbye {
            reason: "test over".to_string(),
        })
        .await;
    }
}

pub(crate) fn step(build: u64, line: &str) -> MasterToWorker {
    MasterToWorker::StartStep(StepAssignment {
        build,
        step: 0,
        builder: "hello".to_string(),
        name: "say".to_string(),
        action: WireAction::Shell(line.to_string()),
        env: vec![("GREETING".to_string(), "hi".to_string())],
        pass_env: Vec::new(),
        timeout_ms: None,
        max_output: None,
    })
}

pub(crate) async fn finished(
    worker: JoinHandle<Result<(), WorkerError>>,
) -> Result<(), WorkerError> {
    tokio::time::timeout(BOUND, worker)
        .await
        .expect("worker exits in time")
        .expect("worker does not panic")
}
