//! The fault-injecting proxy of the harness (tests/e2e/harness/proxy.rs),
//! checked against a tiny echo server: each fault does what the TLS tests
//! rely on, and nothing else.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Proxy, wait_until};

const WAIT: Duration = Duration::from_secs(5);

/// An echo server on 127.0.0.1 counting the connections it accepted.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        // Ends with the test process; each connection ends with its peer.
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Echo { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn connect(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Read exactly `n` bytes (bounded by the read timeout).
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Whether the peer closed `s` (EOF or reset) within the read timeout;
/// panics if data comes instead.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("got {n} bytes instead of a close"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

#[test]
fn proxy_passes_bytes_both_ways_and_counts_links() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    a.write_all(b"hello").unwrap();
    b.write_all(b"world").unwrap();
    assert_eq!(read_n(&mut a, 5), b"hello");
    assert_eq!(read_n(&mut b, 5), b"world");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut a = a.try_clone().unwrap();
        let big = big.clone();
        thread::spawn(move || a.write_all(&big).unwrap())
    };
    assert_eq!(read_n(&mut a, big.len()), big);
    writer.join().unwrap();
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(echo.accepted(), 2);
    assert_eq!(proxy.open_links(), 2);
    // A pump counts what it wrote just after the write.
    wait_until("the bytes to be counted", WAIT, || {
        proxy.forwarded() == (200_010, 200_010)
    });

    // A half-close passes on, and the link is forgotten once both ways end.
    a.shutdown(Shutdown::Write).unwrap();
    assert!(closed(&mut a), "the echo's close did not pass");
    wait_until("the closed link to be forgotten", WAIT, || {
        proxy.open_links() == 1
    });
}

#[test]
fn proxy_drop_all_closes_every_link_and_takes_new_ones() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    a.write_all(b"x").unwrap();
    b.write_all(b"y").unwrap();
    read_n(&mut a, 1);
    read_n(&mut b, 1);

    let started = Instant::now();
    proxy.drop_all();
    assert!(closed(&mut a) && closed(&mut b), "a link stayed open");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(proxy.open_links(), 0);

    let mut c = connect(&proxy);
    c.write_all(b"z").unwrap();
    assert_eq!(read_n(&mut c, 1), b"z");
    assert_eq!(proxy.accepted(), 3);
}

#[test]
fn proxy_cut_mid_frame_forwards_part_of_a_chunk_then_closes() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    a.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut a, 4), b"ping");

    proxy.cut_mid_frame();
    a.write_all(b"0123456789").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match a.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        got.len() < 10 && b"0123456789".starts_with(&got),
        "the cut passed {got:?}"
    );
    assert_eq!(proxy.cuts(), 1);
    // One cut only: the next link passes whole.
    let mut b = connect(&proxy);
    b.write_all(b"0123456789").unwrap();
    assert_eq!(read_n(&mut b, 10), b"0123456789");
}

#[test]
fn proxy_stall_holds_data_without_closing_until_unstalled() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    a.write_all(b"one").unwrap();
    assert_eq!(read_n(&mut a, 3), b"one");

    proxy.stall();
    a.write_all(b"two").unwrap();
    a.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Neither data nor a close comes: half-open.
    assert!(!closed(&mut a));
    assert_eq!(proxy.open_links(), 1);

    proxy.unstall();
    a.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_n(&mut a, 3), b"two");
}

#[test]
fn proxy_delay_slows_each_way() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut a = connect(&proxy);
    proxy.delay(Duration::from_millis(150));
    let started = Instant::now();
    a.write_all(b"slow").unwrap();
    assert_eq!(read_n(&mut a, 4), b"slow");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "a round trip through a 150 ms delay took {took:?}"
    );
    proxy.pass();
    let started = Instant::now();
    a.write_all(b"fast").unwrap();
    assert_eq!(read_n(&mut a, 4), b"fast");
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[test]
fn proxy_refuse_new_closes_new_connections_only() {
    let echo = Echo::start();
    let proxy = Proxy::start(echo.addr);
    let mut old = connect(&proxy);
    old.write_all(b"a").unwrap();
    read_n(&mut old, 1);

    proxy.refuse_new(true);
    let mut refused = connect(&proxy);
    let _ = refused.write_all(b"b");
    assert!(closed(&mut refused), "a refused connection stayed open");
    assert_eq!(proxy.refused(), 1);
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(
        echo.accepted(),
        1,
        "a refused connection reached the target"
    );
    // The old link still passes.
    old.write_all(b"c").unwrap();
    assert_eq!(read_n(&mut old, 1), b"c");

    proxy.refuse_new(false);
    let mut again = connect(&proxy);
    again.write_all(b"d").unwrap();
    assert_eq!(read_n(&mut again, 1), b"d");
    assert_eq!(proxy.accepted(), 2);
}

#[test]
fn proxy_with_no_target_closes_the_connection() {
    // A port nobody listens on: bind, read the port, close.
    let gone = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(gone);
    let mut a = connect(&proxy);
    assert!(closed(&mut a));
    let echo = Echo::start();
    proxy.set_target(echo.addr);
    let mut b = connect(&proxy);
    b.write_all(b"e").unwrap();
    assert_eq!(read_n(&mut b, 1), b"e");
}
