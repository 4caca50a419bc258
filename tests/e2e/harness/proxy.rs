//! [`Proxy`]: a fault-injecting TCP proxy between a worker and its master,
//! for the faults a real network makes: a link dropped, a link cut in the
//! middle of a frame, a link that stops passing data without closing
//! (half-open), latency, and connections refused.
//!
//! Plain std threads: an acceptor, and two pumps per link (one per
//! direction). Faults are switched at run time and apply to every link,
//! current and new. Everything stops when the proxy drops.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the proxy tries to reach its target for one new link.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most one pump reads (and forwards) at once.
const CHUNK: usize = 16 * 1024;

/// The faults in force.
#[derive(Debug, Default)]
struct Faults {
    /// Stop forwarding both ways (data read is held, nothing is closed).
    stalled: bool,
    /// Wait this long before forwarding each chunk.
    delay: Duration,
    /// Close new connections at once (with a reset), never reaching the
    /// target.
    refuse_new: bool,
    /// Forward only part of the next chunk (either way), then reset its link.
    cut_next: bool,
}

/// One link's two sockets (clones of the pumps' ones), to close it from
/// outside.
struct LinkEnds {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    dead: Arc<AtomicBool>,
}

impl LinkEnds {
    /// Close both sides abortively: a reset where the stack allows it.
    fn abort(&self) {
        self.dead.store(true, Ordering::SeqCst);
        abort_stream(&self.client);
        abort_stream(&self.server);
    }
}

/// Make the last close of `stream` send a reset, and shut it down both
/// ways now (which also wakes a thread blocked reading it).
fn abort_stream(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}

/// What the acceptor and the pumps share with the [`Proxy`] handle.
struct Shared {
    target: Mutex<SocketAddr>,
    faults: Mutex<Faults>,
    /// Signalled whenever `faults` changes or a link is aborted.
    changed: Condvar,
    links: Mutex<Vec<LinkEnds>>,
    next_id: AtomicU64,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    cuts: AtomicUsize,
    to_target: AtomicU64,
    from_target: AtomicU64,
    closing: AtomicBool,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn links(&self) -> MutexGuard<'_, Vec<LinkEnds>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults());
        self.changed.notify_all();
    }

    /// Abort link `id` and forget it.
    fn abort_link(&self, id: u64) {
        let mut links = self.links();
        if let Some(i) = links.iter().position(|l| l.id == id) {
            links.swap_remove(i).abort();
        }
        drop(links);
        self.changed.notify_all();
    }
}

/// A TCP proxy on 127.0.0.1 (an ephemeral port) forwarding every
/// connection to a target address, with faults switched at run time.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Start a proxy to `target`, passing everything.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            faults: Mutex::new(Faults::default()),
            changed: Condvar::new(),
            links: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            to_target: AtomicU64::new(0),
            from_target: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let for_acceptor = shared.clone();
        let acceptor = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, for_acceptor))
            .expect("cannot start the proxy's acceptor");
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Forward new links to `target` from now on (current links stay).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Clear every fault: forward everything, at once, and accept new
    /// links.
    pub fn pass(&self) {
        self.shared.set(|f| *f = Faults::default());
    }

    /// Close both sides of every current link (with a reset).
    pub fn drop_all(&self) {
        let links: Vec<LinkEnds> = self.shared.links().drain(..).collect();
        for link in &links {
            link.abort();
        }
        self.shared.changed.notify_all();
    }

    /// Forward only part of the next chunk that comes (either way: a TLS
    /// record or a frame cut in the middle), then reset that link.
    /// [`Proxy::cuts`] counts the cuts done.
    pub fn cut_mid_frame(&self) {
        self.shared.set(|f| f.cut_next = true);
    }

    /// Stop forwarding both ways without closing anything: every link is
    /// half-open (what a pulled cable or a NAT that forgot the flow does).
    pub fn stall(&self) {
        self.shared.set(|f| f.stalled = true);
    }

    /// Forward again what a [`Proxy::stall`] held, and what comes next.
    pub fn unstall(&self) {
        self.shared.set(|f| f.stalled = false);
    }

    /// Wait `delay` before forwarding each chunk, both ways (zero: none).
    pub fn delay(&self, delay: Duration) {
        self.shared.set(|f| f.delay = delay);
    }

    /// Close new connections at once, before they reach the target (`true`),
    /// or accept them again (`false`).
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.set(|f| f.refuse_new = refuse);
    }

    /// Connections accepted and forwarded so far (refused ones not counted).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused by [`Proxy::refuse_new`] so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Links open now.
    pub fn open_links(&self) -> usize {
        self.shared.links().len()
    }

    /// How many [`Proxy::cut_mid_frame`] cuts were done.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far: (towards the target, from the target).
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.shared.to_target.load(Ordering::SeqCst),
            self.shared.from_target.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wake the acceptor with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.drop_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let client = match client {
            Ok(client) => client,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("proxy: accept failed: {e}");
                // EMFILE and the like: let the pressure pass.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.faults().refuse_new {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            abort_stream(&client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        thread::spawn(move || open_link(client, shared));
    }
}

/// Connect `client` to the target and start its two pumps.
fn open_link(client: TcpStream, shared: Arc<Shared>) {
    let target = *shared.target.lock().unwrap_or_else(|e| e.into_inner());
    let server = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(_) => {
            // Like a refused connection, as seen through a proxy.
            abort_stream(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let dead = Arc::new(AtomicBool::new(false));
    let clones = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    );
    let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
        abort_stream(&client);
        abort_stream(&server);
        return;
    };
    shared.links().push(LinkEnds {
        id,
        client: c1,
        server: s1,
        dead: dead.clone(),
    });
    let ends = Arc::new(AtomicUsize::new(2));
    let up = Pump {
        id,
        shared: shared.clone(),
        dead: dead.clone(),
        ends: ends.clone(),
        to_target: true,
    };
    thread::spawn(move || up.run(c2, s2));
    let down = Pump {
        id,
        shared,
        dead,
        ends,
        to_target: false,
    };
    down.run(server, client);
}

/// One direction of one link.
struct Pump {
    id: u64,
    shared: Arc<Shared>,
    dead: Arc<AtomicBool>,
    /// Pumps of this link still running; the last one forgets the link.
    ends: Arc<AtomicUsize>,
    to_target: bool,
}

impl Pump {
    fn run(self, mut from: TcpStream, mut to: TcpStream) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => {
                    // An orderly close: pass the half-close on.
                    let _ = to.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.shared.abort_link(self.id);
                    break;
                }
            };
            let Some((delay, cut)) = self.gate() else {
                break;
            };
            if !delay.is_zero() {
                // The delay is the fault itself, not a synchronisation.
                thread::sleep(delay);
            }
            if cut {
                let part = if n > 1 { n / 2 } else { n };
                let _ = to.write_all(&buf[..part]);
                let _ = to.flush();
                self.shared.cuts.fetch_add(1, Ordering::SeqCst);
                self.shared.abort_link(self.id);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                self.shared.abort_link(self.id);
                break;
            }
            let counter = if self.to_target {
                &self.shared.to_target
            } else {
                &self.shared.from_target
            };
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
        if self.ends.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut links = self.shared.links();
            if let Some(i) = links.iter().position(|l| l.id == self.id) {
                links.swap_remove(i);
            }
        }
    }

    /// Wait while the proxy is stalled; then the delay to apply and
    /// whether to cut this chunk. `None`: the link was aborted meanwhile.
    fn gate(&self) -> Option<(Duration, bool)> {
        let mut faults = self.shared.faults();
        loop {
            if self.dead.load(Ordering::SeqCst) {
                return None;
            }
            if !faults.stalled {
                break;
            }
            faults = self
                .shared
                .changed
                .wait(faults)
                .unwrap_or_else(|e| e.into_inner());
        }
        let cut = std::mem::take(&mut faults.cut_next);
        Some((faults.delay, cut))
    }
}
