//! Bad input at the web's door (issue 18, docs/http.md "Limits"): each
//! kind has a bound and a clear answer, and the master keeps serving
//! everyone else meanwhile. The slow cases wait for the server's 10 s
//! bounds, so they run side by side in one test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::client::{get, open};
use super::start;

/// The server's bounds on a request's head and on a request with a body
/// (`HEADER_TIMEOUT`, `BODY_TIMEOUT` in `src/daemon/web/mod.rs`).
const BOUND: Duration = Duration::from_secs(10);
/// How much later than [`BOUND`] the server may act.
const SLACK: Duration = Duration::from_secs(8);

/// Connect and send `bytes`; the connection, its reads bounded.
fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(BOUND + SLACK)).unwrap();
    c.write_all(bytes).unwrap();
    c
}

/// Everything the server sends until it closes (or the read bound
/// passes: then the text ends with "(still open)"); and when that was.
fn until_closed(mut c: TcpStream) -> (String, Instant) {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => {
                got.extend_from_slice(b"(still open)");
                break;
            }
            // A reset is the server closing with our bytes unread.
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// Huge headers get 431 at once; a head sent too slowly (slowloris), a
/// body sent too slowly, and 1,000 connections that send nothing are
/// each closed within their bound (the slow body with a 408 naming it);
/// meanwhile, and after, the master answers `bbctl` and the web answers
/// new clients. An idle event stream gets its keepalive comment after
/// 15 s.
#[test]
fn huge_heads_slow_clients_and_idle_crowds_are_bounded() {
    let (m, addr) = start();

    // Huge headers: past the 64 KiB head limit.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "y".repeat(100 << 10)
    );
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may stop reading (and reset) before all is written.
    let _ = c.write_all(big.as_bytes());
    let (answer, _) = until_closed(c);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "huge headers: {answer:.200}"
    );

    let start_at = Instant::now();
    // An idle event stream: a keepalive comment every 15 s.
    let mut events = open(addr, "/api/v1/events", &[]);
    assert_eq!(events.status, 200);
    // Slowloris: half a head, then nothing.
    let slow_head = send(addr, b"GET / HTTP/1.1\r\nhost: x\r\n");
    // A body that never comes whole: 100 bytes promised, 10 sent.
    let slow_body = send(
        addr,
        b"POST /hooks/changes HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n[{\"a\": 1,",
    );
    // A crowd that sends nothing at all: the first 256 take every slot,
    // the rest are answered 503 at once.
    let crowd: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(BOUND + SLACK)).unwrap();
            c
        })
        .collect();

    // Meanwhile the master serves its own door.
    let status = m.bbctl(&["status", "--json"]);
    assert!(status.status.success(), "{}", super::describe(&status));

    let slow = std::thread::spawn(move || (until_closed(slow_head), until_closed(slow_body)));
    let crowd = std::thread::spawn(move || {
        crowd
            .into_iter()
            .map(|c| until_closed(c).0)
            .collect::<Vec<_>>()
    });
    let ((head, head_at), (body, body_at)) = slow.join().unwrap();
    let crowd = crowd.join().unwrap();

    assert!(
        !head.ends_with("(still open)"),
        "a half-sent head is never closed: {head:.200}"
    );
    assert!(head_at - start_at <= BOUND + SLACK);
    assert!(
        body.starts_with("HTTP/1.1 408") && body.contains("did not arrive within 10 s"),
        "a half-sent body: {body:.300}"
    );
    assert!(body_at - start_at >= BOUND - Duration::from_secs(1));
    assert!(body_at - start_at <= BOUND + SLACK);
    let refused = crowd
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    let open = crowd.iter().filter(|a| a.ends_with("(still open)")).count();
    assert_eq!(open, 0, "idle connections never closed");
    assert!(refused >= 1000 - 256, "{refused} of 1000 got 503");

    // And the web serves again.
    assert_eq!(get(addr, "/api/v1/status").status, 200);

    // The stream's first keepalive (nothing happened meanwhile).
    // (The master's first events, its workers connecting, came at once;
    // the keepalive is due 15 s after the stream's last event.)
    while events.line().expect("the event stream ended") != ": keepalive" {
        assert!(
            start_at.elapsed() < Duration::from_secs(20),
            "no keepalive within 20 s"
        );
    }
    let waited = start_at.elapsed();
    assert!(
        waited >= Duration::from_secs(14) && waited <= Duration::from_secs(20),
        "the keepalive came after {waited:?}"
    );
}
