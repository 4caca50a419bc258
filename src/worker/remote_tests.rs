//! The worker against a fake master over TCP and TLS: verification by pin
//! and by CA, mutual TLS, the channel binding of the proof, fatal
//! verification failures (one error, no retry), and the liveness of a
//! link whose peer goes silent or stops reading.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WorkerError;
use super::address::MasterAddr;
use super::fake_master::{Conn, FakeMaster, ServerCert, TestCa, finished};
use super::sender::Outgoing;
use super::session::write_loop;
use super::test_util::BOUND;
use super::tls::Verify;
use crate::net::{self, BoxConn};
use crate::protocol::{
    HelloReply, PROTOCOL_VERSION, RefusalKind, WorkerToMaster, proof, write_msg,
};

/// Welcome an accepted connection after checking its proof.
async fn welcome(conn: &mut Conn) {
    assert!(
        conn.proof.verify("s3cret", "w1"),
        "the proof verifies with this session's binding"
    );
    let welcome = HelloReply::Welcome {
        version: PROTOCOL_VERSION,
        software: "fake master".to_string(),
        master_pid: std::process::id(),
        keepalive_ms: None,
    };
    write_msg(&mut conn.w, &welcome).await.expect("welcome");
}

/// Welcome, say goodbye, and check the worker exits cleanly.
async fn serve_and_dismiss(
    master: &FakeMaster,
    worker: tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let mut conn = master.accept().await;
    welcome(&mut conn).await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

/// The error a worker exits with, which must come without a retry loop
/// (a retrying worker would never exit).
async fn fatal(
    master: &FakeMaster,
    worker: tokio::task::JoinHandle<Result<(), WorkerError>>,
) -> String {
    // The master's side of the failed handshake (or a link it closes).
    let _ = master.accept_transport().await;
    let e = finished(worker).await.expect_err("a fatal error");
    assert!(matches!(e, WorkerError::Tls { .. }), "{e:?}");
    let line = e.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[tokio::test]
async fn tls_with_a_pin_binds_the_proof_to_the_session() {
    let cert = ServerCert::self_signed(&["master.example"]);
    let pin = net::parse_fingerprint(&cert.fingerprint()).unwrap();
    let master = FakeMaster::tls(cert, None);
    let mut opts = master.options();
    opts.tls.verify = Verify::Fingerprint(pin);
    let worker = tokio::spawn(super::run(opts));

    // First session: refused as "already connected", so the worker comes
    // back on a second session.
    let mut first = master.accept().await;
    assert_eq!(first.proof.binding.len(), proof::BINDING_LEN);
    assert!(first.proof.verify("s3cret", "w1"));
    let refused = HelloReply::refused(RefusalKind::AlreadyConnected, "w1 is here");
    write_msg(&mut first.w, &refused).await.unwrap();
    let mut second = master.accept().await;
    assert_ne!(first.proof.binding, second.proof.binding);
    // The first proof, replayed on the second session, does not verify;
    // nor without any binding (a Unix-socket proof).
    for binding in [second.proof.binding.clone(), Vec::new()] {
        let replayed = proof::Proof {
            binding,
            ..first.proof.clone()
        };
        assert!(!replayed.verify("s3cret", "w1"));
    }
    welcome(&mut second).await;
    second.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn tls_with_a_ca_bundle_checks_the_name() {
    let ca = TestCa::new();
    let master = FakeMaster::tls(ca.issue(&["localhost", "127.0.0.1"]), None);
    let ca_file = master.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut opts = master.options();
    opts.tls.verify = Verify::Ca(ca_file);
    serve_and_dismiss(&master, tokio::spawn(super::run(opts))).await;
}

#[tokio::test]
async fn tls_name_overrides_the_host_for_the_check() {
    let ca = TestCa::new();
    let master = FakeMaster::tls(ca.issue(&["master.example"]), None);
    let ca_file = master.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut opts = master.options();
    opts.tls.verify = Verify::Ca(ca_file.clone());
    opts.tls.server_name = Some("master.example".into());
    serve_and_dismiss(&master, tokio::spawn(super::run(opts))).await;

    // Without it, the IP address of the URL is not in the certificate.
    let master2 = FakeMaster::tls(ca.issue(&["master.example"]), None);
    let mut opts = master2.options();
    opts.tls.verify = Verify::Ca(ca_file);
    let line = fatal(&master2, tokio::spawn(super::run(opts))).await;
    assert!(line.contains("not valid for this host name"), "{line}");
    assert!(line.contains(&master2.addr().to_string()), "{line}");
}

#[tokio::test]
async fn a_wrong_pin_is_one_fatal_error_naming_both_fingerprints() {
    let cert = ServerCert::self_signed(&["master.example"]);
    let presented = cert.fingerprint();
    let other = ServerCert::self_signed(&["master.example"]).fingerprint();
    let master = FakeMaster::tls(cert, None);
    let mut opts = master.options();
    opts.tls.verify = Verify::Fingerprint(net::parse_fingerprint(&other).unwrap());
    let started = Instant::now();
    let line = fatal(&master, tokio::spawn(super::run(opts))).await;
    assert!(line.contains(&presented) && line.contains(&other), "{line}");
    assert!(started.elapsed() < Duration::from_secs(5), "no retry delay");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_fatal() {
    let ca = TestCa::new();
    let foreign = TestCa::new();
    let master = FakeMaster::tls(foreign.issue(&["127.0.0.1"]), None);
    let ca_file = master.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut opts = master.options();
    opts.tls.verify = Verify::Ca(ca_file);
    let line = fatal(&master, tokio::spawn(super::run(opts))).await;
    assert!(line.contains("not signed by a trusted CA"), "{line}");
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let ca = TestCa::new();
    let master = FakeMaster::tls(ca.issue(&["127.0.0.1"]), Some(&ca));
    let ca_file = master.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key) = ca.issue_files(&["w1"], master.dir.path());
    let mut opts = master.options();
    opts.tls.verify = Verify::Ca(ca_file);
    opts.tls.client_cert = Some((cert, key));
    serve_and_dismiss(&master, tokio::spawn(super::run(opts))).await;
}

#[tokio::test]
async fn a_master_that_rejects_our_client_certificate_is_fatal() {
    // Under TLS 1.3 the client's handshake completes before the master
    // has checked its certificate: the refusal comes at the first read.
    let ca = TestCa::new();
    let foreign = TestCa::new();
    let master = FakeMaster::tls(ca.issue(&["127.0.0.1"]), Some(&ca));
    let ca_file = master.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    for client in [None, Some(foreign.issue_files(&["w1"], master.dir.path()))] {
        let mut opts = master.options();
        opts.tls.verify = Verify::Ca(ca_file.clone());
        opts.tls.client_cert = client;
        let line = fatal(&master, tokio::spawn(super::run(opts))).await;
        assert!(line.contains("client certificate"), "{line}");
    }
}

#[tokio::test]
async fn plain_tcp_connects_with_an_empty_binding() {
    let master = FakeMaster::tcp();
    let worker = master.spawn_worker();
    let mut conn = master.accept().await;
    assert!(conn.proof.binding.is_empty());
    welcome(&mut conn).await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn a_silent_tcp_peer_is_dropped_within_the_keepalive_window() {
    // A master that welcomed us, then neither sends nor reads (a cable
    // pulled, a NAT that forgot the flow): no FIN ever comes.
    let master = FakeMaster::tcp();
    let worker = master.spawn_worker();
    let silent = master.welcome_with(&[], Some(100)).await;
    let welcomed = Instant::now();
    let mut conn = master.welcome().await;
    let window = Duration::from_millis(100 * u64::from(super::MISSED_INTERVALS));
    let took = welcomed.elapsed();
    // The window, plus the first reconnect delay and slack for a busy
    // machine; a worker relying on TCP alone would take minutes.
    assert!(took >= window, "{took:?}");
    assert!(took < window + Duration::from_secs(2), "{took:?}");
    drop(silent);
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

/// A connected loopback pair with small buffers, so that a peer that does
/// not read blocks our writes quickly. Returns (our end, the peer's).
async fn small_buffer_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpSocket::new_v4().unwrap();
    listener.set_recv_buffer_size(4096).unwrap();
    listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.listen(1).unwrap();
    let ours = tokio::net::TcpSocket::new_v4().unwrap();
    ours.set_send_buffer_size(4096).unwrap();
    let (ours, peer) = tokio::join!(ours.connect(addr), listener.accept());
    (ours.unwrap(), peer.unwrap().0)
}

#[tokio::test]
async fn a_write_blocked_by_a_peer_that_stopped_reading_gives_up() {
    let (ours, mut peer) = small_buffer_pair().await;
    let (_r, w) = tokio::io::split(Box::new(ours) as BoxConn);
    let (tx, rx) = mpsc::channel(16);
    let limit = Duration::from_millis(300);
    let writer = tokio::spawn(write_loop(w, rx, limit));
    // Far more than the buffers hold; the peer reads none of it.
    let feeder = tokio::spawn(async move {
        for offset in 0..1000u64 {
            let msg = WorkerToMaster::Output {
                build: 1,
                step: 0,
                offset: offset * 65536,
                data: vec![b'x'; 65536],
            };
            if tx.send(Outgoing::plain(msg)).await.is_err() {
                return offset;
            }
        }
        1000
    });
    let started = Instant::now();
    tokio::time::timeout(BOUND, writer)
        .await
        .expect("the writer gives up on a peer that does not read")
        .unwrap();
    let took = started.elapsed();
    assert!(took >= limit, "{took:?}");
    assert!(took < limit + Duration::from_secs(3), "{took:?}");
    // The queue is dropped: senders notice the link is gone.
    let sent = tokio::time::timeout(BOUND, feeder).await.unwrap().unwrap();
    assert!(sent < 1000, "the writer stopped taking frames");
    // The peer is still there, it just never read.
    let mut byte = [0u8; 1];
    assert!(peer.read(&mut byte).await.unwrap() == 1);
}

#[tokio::test]
async fn tls_options_on_a_unix_or_tcp_address_are_refused() {
    let master = FakeMaster::tcp();
    let mut opts = master.options();
    opts.tls.server_name = Some("m.example".into());
    let e = super::run(opts).await.expect_err("refused");
    assert!(e.to_string().contains("tls:// addresses only"), "{e}");
}

#[tokio::test]
async fn a_tls_worker_against_a_plaintext_master_says_so() {
    // The master reads our ClientHello as a frame, finds it absurd and
    // hangs up, or answers in plaintext: either way no welcome; with an
    // orphan timeout the worker gives up naming the likely cause.
    let master = FakeMaster::tcp();
    let cert = ServerCert::self_signed(&["x"]);
    let mut opts = master.options();
    let MasterAddr::Tcp(hp) = master.addr().clone() else {
        unreachable!()
    };
    opts.masters = vec![MasterAddr::Tls(hp)];
    opts.tls.verify = Verify::Fingerprint(net::parse_fingerprint(&cert.fingerprint()).unwrap());
    let worker = tokio::spawn(super::run(opts));
    let (mut stream, _) = master.accept_transport().await.unwrap();
    let refused = HelloReply::refused(RefusalKind::Other, "not a hello");
    write_msg(&mut stream, &refused).await.unwrap();
    let e = finished(worker).await.expect_err("fatal");
    let line = e.to_string();
    assert!(line.contains("tcp://"), "{line}");
}
