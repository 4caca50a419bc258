//! Hostile input against a real master: garbage and malformed frames on
//! both sockets, peers that stall or crowd the door, workers that lie about
//! whose steps they run, floods, full queues, shell metacharacters in
//! properties, and users who may not use the control socket.
//!
//! Every case checks that the bad peer gets a refusal, an error frame or a
//! clean close (never a hang), that the master is still up and answers
//! another client promptly afterwards, and that what it had accepted is
//! still there. `docs/security.md` maps each protection to these tests.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bbctl::protocol::frame::{decode, encode};
use bbctl::protocol::proof;
use bbctl::protocol::{
    ClientRequest, ErrorKind as ReplyKind, Hello, HelloReply, MasterToWorker, Request, Role,
    ServerMsg, StepEnd, WorkerProof, WorkerToMaster,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::{
    BBCTL, BBMASTER, Background, EXIT_TIMEOUT, Master, STARTUP_TIMEOUT, code, command, describe,
    process_gone, run_with_timeout, temp_dir, text, wait_child, wait_for_line_in, wait_until,
};

/// How long the master may take to answer `bbctl status` after an attack.
const PROMPT: Duration = Duration::from_secs(3);
/// The longest we wait for any one answer on a raw connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How much the master's resident memory may grow from one bad frame.
const RSS_SLACK_KB: u64 = 8 * 1024;

/// A remote worker `evil` whose secret the tests know, next to a local
/// worker that does the real work; frames are limited to 64 KiB after the
/// handshake so that oversized frames are cheap to send.
const TWO_WORKERS: &str = r#"
[master]
max_frame = "64KiB"

[[worker]]
name = "local-1"
local = true
max_builds = 2

[[worker]]
name = "evil"
secret = "evil-but-correct"

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo quick $BB_BUILD_ID"

[[builder]]
name = "slow"
workers = ["local-1"]

  [[builder.step]]
  name = "wait"
  shell = "echo start; echo up > @DIR@/started; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo end"

[[builder]]
name = "evilb"
workers = ["evil"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;

// ---------------------------------------------------------------------------
// A raw peer: bytes in, frames out, every wait bounded.

/// One raw connection to a master socket.
pub(crate) struct Peer {
    pub(crate) stream: UnixStream,
    what: String,
    /// The worker name and secret of a worker hello sent, to answer the
    /// master's challenge with.
    login: Option<(String, String)>,
}

/// What came back from the master.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A `HelloReply::Refused`, with its reason.
    Refused(String),
    /// A `HelloReply::Welcome`.
    Welcome,
    /// The master closed the connection without a frame.
    Closed,
}

impl Peer {
    pub(crate) fn connect(path: &Path, what: &str) -> Peer {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("{what}: cannot connect to {}: {e}", path.display()));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Peer {
            stream,
            what: what.to_string(),
            login: None,
        }
    }

    /// A control client past the handshake.
    pub(crate) fn client(m: &Master, what: &str) -> Peer {
        let mut p = Peer::connect(&m.control_socket(), what);
        p.send_msg(&Hello::new(Role::Client));
        match p.answer() {
            Answer::Welcome => p,
            other => panic!("{what}: a good hello got {other:?}"),
        }
    }

    /// Worker `name` past the handshake (the secret must be right).
    pub(crate) fn worker(m: &Master, name: &str, secret: &str, what: &str) -> Peer {
        let mut p = Peer::connect(&m.worker_socket(), what);
        p.send_worker_hello(name, secret);
        match p.answer() {
            Answer::Welcome => p,
            other => panic!("{what}: worker `{name}` was not welcomed: {other:?}"),
        }
    }

    /// Send bytes; the master may already have hung up, which is fine.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub(crate) fn send_msg<T: Serialize>(&mut self, msg: &T) {
        self.send(&encode(msg).expect("encode"));
    }

    /// Say hello as worker `name`; [`Peer::answer`] then proves `secret`
    /// when the master challenges.
    pub(crate) fn send_worker_hello(&mut self, name: &str, secret: &str) {
        self.send_hello_proving(&worker_hello(name), secret);
    }

    /// Send `hello` (a worker's); [`Peer::answer`] then proves `secret`.
    pub(crate) fn send_hello_proving(&mut self, hello: &Hello, secret: &str) {
        if let Role::Worker { name, .. } = &hello.role {
            self.login = Some((name.clone(), secret.to_string()));
        }
        self.send_msg(hello);
    }

    /// Close our side for writing: the master sees end of file.
    pub(crate) fn shut_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// The next frame body, or `None` once the master closed the connection.
    pub(crate) fn frame(&mut self) -> Option<Vec<u8>> {
        let mut prefix = [0u8; 4];
        if !self.fill(&mut prefix, true) {
            return None;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        assert!(
            len <= 16 << 20,
            "{}: master sent a {len}-byte frame",
            self.what
        );
        let mut body = vec![0u8; len];
        assert!(
            self.fill(&mut body, false),
            "{}: the master's frame was cut short",
            self.what
        );
        Some(body)
    }

    /// Fill `buf`; false on a close before the first byte (if allowed).
    pub(crate) fn fill(&mut self, buf: &mut [u8], may_close: bool) -> bool {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => {
                    assert!(
                        may_close && got == 0,
                        "{}: closed in the middle of a frame",
                        self.what
                    );
                    return false;
                }
                Ok(n) => got += n,
                // A close with our bytes still unread shows as a reset.
                Err(e) if e.kind() == ErrorKind::ConnectionReset && may_close && got == 0 => {
                    return false;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "{}: no answer from the master ({e}; waited up to {READ_TIMEOUT:?})",
                    self.what
                ),
            }
        }
        true
    }

    /// The master's answer to a hello (or to garbage sent instead of one).
    pub(crate) fn answer(&mut self) -> Answer {
        match self.frame() {
            None => Answer::Closed,
            Some(body) => match decode::<HelloReply>(&body) {
                Ok(HelloReply::Refused { reason, .. }) => Answer::Refused(reason),
                Ok(HelloReply::Welcome { .. }) => Answer::Welcome,
                Ok(HelloReply::Challenge { nonce }) => {
                    let (name, secret) = self.login.clone().unwrap_or_else(|| {
                        panic!("{}: challenged, but no worker hello was sent", self.what)
                    });
                    let mac = proof::prove(&secret, &nonce, &name, &[]);
                    self.send_msg(&WorkerProof { mac });
                    self.answer()
                }
                Err(e) => panic!(
                    "{}: the master sent a frame that is no HelloReply: {e}",
                    self.what
                ),
            },
        }
    }

    /// Expect a refusal whose reason contains `needle`, then the close.
    pub(crate) fn expect_refusal(&mut self, needle: &str) -> String {
        match self.answer() {
            Answer::Refused(reason) => {
                assert!(
                    reason.contains(needle),
                    "{}: refusal {reason:?} does not say {needle:?}",
                    self.what
                );
                self.expect_closed();
                reason
            }
            other => panic!(
                "{}: expected a refusal saying {needle:?}, got {other:?}",
                self.what
            ),
        }
    }

    /// Expect a refusal containing `needle` or a clean close.
    pub(crate) fn expect_refusal_or_close(&mut self, needle: &str) {
        match self.answer() {
            Answer::Closed => {}
            Answer::Refused(reason) => {
                assert!(
                    reason.contains(needle),
                    "{}: refusal {reason:?} does not say {needle:?}",
                    self.what
                );
                self.expect_closed();
            }
            Answer::Welcome => panic!("{}: welcomed", self.what),
        }
    }

    /// The master must close the connection: no further frame.
    pub(crate) fn expect_closed(&mut self) {
        if let Some(body) = self.frame() {
            panic!(
                "{}: expected the close, got another frame of {} bytes",
                self.what,
                body.len()
            );
        }
    }

    /// The next response on a client connection.
    pub(crate) fn response(&mut self) -> ServerMsg {
        let body = self
            .frame()
            .unwrap_or_else(|| panic!("{}: closed instead of answering", self.what));
        decode(&body).unwrap_or_else(|e| panic!("{}: not a ServerMsg: {e}", self.what))
    }

    /// Expect an error response (`rejected`) containing `needle`, then the close.
    pub(crate) fn expect_error_then_close(&mut self, needle: &str) {
        match self.response() {
            ServerMsg::Response { result: Err(e), .. } => {
                assert_eq!(e.kind, ReplyKind::Rejected, "{}: {e:?}", self.what);
                assert!(
                    e.message.contains(needle),
                    "{}: error {:?} does not say {needle:?}",
                    self.what,
                    e.message
                );
            }
            other => panic!("{}: expected an error response, got {other:?}", self.what),
        }
        self.expect_closed();
    }

    /// Send one request and return its answer.
    pub(crate) fn call(&mut self, id: u64, body: Request) -> ServerMsg {
        self.send_msg(&ClientRequest { id, body });
        self.response()
    }

    /// On a worker link: the next message other than a keepalive ping.
    pub(crate) fn next_to_worker(&mut self) -> Option<MasterToWorker> {
        loop {
            let body = self.frame()?;
            match decode::<MasterToWorker>(&body) {
                Ok(MasterToWorker::Ping { .. }) => continue,
                Ok(msg) => return Some(msg),
                Err(e) => panic!("{}: not a MasterToWorker: {e}", self.what),
            }
        }
    }

    /// On a worker link: expect a goodbye whose reason contains `needle`,
    /// then the close.
    pub(crate) fn expect_goodbye(&mut self, needle: &str) -> String {
        match self.next_to_worker() {
            Some(MasterToWorker::Goodbye { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{}: goodbye {reason:?} does not say {needle:?}",
                    self.what
                );
                self.expect_closed();
                reason
            }
            other => panic!("{}: expected a goodbye, got {other:?}", self.what),
        }
    }
}

pub(crate) fn worker_hello(name: &str) -> Hello {
    Hello::new(Role::Worker {
        name: name.into(),
        running: vec![],
        host: Some("hostile-test".into()),
    })
}

/// A frame whose body is `value` encoded as MessagePack (maps for objects),
/// for messages our types cannot express.
fn raw_msgpack(value: &Value) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(value).expect("encode");
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// A length prefix announcing `len` bytes, followed by `body`.
pub(crate) fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The resident memory of `pid`, in KiB.
pub(crate) fn rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// The master is still running and answers `bbctl status` promptly.
pub(crate) fn assert_serves(m: &Master, after: &str) {
    assert!(
        !process_gone(m.pid() as i32),
        "the master exited after {after}\n--- its stderr\n{}",
        m.stderr()
    );
    let started = Instant::now();
    let out = m.bbctl(&["--json", "status"]);
    let took = started.elapsed();
    assert_eq!(
        code(&out),
        0,
        "bbctl status after {after}: {}\n--- master stderr\n{}",
        describe(&out),
        m.stderr()
    );
    assert!(
        took < PROMPT,
        "bbctl status took {took:?} after {after} (at most {PROMPT:?})"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(v["master_pid"], m.pid(), "another master answered: {v}");
}

/// The builds the master knows, newest first.
pub(crate) fn builds(m: &Master) -> Vec<Value> {
    m.bbctl_json(&["builds"])
        .as_array()
        .cloned()
        .expect("builds is an array")
}

// ---------------------------------------------------------------------------
// The control socket.

/// Garbage, truncated frames, oversized lengths (4 GiB and just over the
/// handshake limit), wrong versions and magic, a worker's hello, and bad
/// requests after a good hello: each gets a refusal or an error frame and
/// a close, the master's memory does not jump, every other client is still
/// served, and the build accepted before the attack is still in history.
#[test]
fn control_socket_bad_bytes_get_a_refusal_or_a_close() {
    let m = Master::start(TWO_WORKERS);
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    let sock = m.control_socket();
    let pid = m.pid();

    // Before the hello: (what, bytes, what the refusal must say). A refusal
    // may also be a plain close where the peer's own bytes were cut short.
    let pre_hello: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: bb\r\n\r\n".to_vec(),
            "over the limit",
        ),
        (
            "a body that is not MessagePack",
            prefixed(8, &[0xc1; 8]),
            "bad handshake: malformed message",
        ),
        ("an empty frame", prefixed(0, &[]), "bad handshake"),
        ("noise", noise(7, 64), "bad handshake"),
        (
            "noise behind a small length",
            prefixed(200, &noise(11, 200)),
            "bad handshake",
        ),
        (
            "a hello map missing its fields",
            raw_msgpack(&json!({"magic": "bbp"})),
            "bad handshake: malformed message",
        ),
        (
            "a hello with a role we do not know",
            raw_msgpack(&json!({"magic": "bbp", "version": 1, "software": "x", "role": "admin"})),
            "bad handshake: malformed message",
        ),
        (
            "a hello followed by a stray byte in its frame",
            {
                let mut f = encode(&Hello::new(Role::Client)).unwrap();
                f.push(0);
                let len = (f.len() - 4) as u32;
                f[..4].copy_from_slice(&len.to_be_bytes());
                f
            },
            "unexpected bytes after the message",
        ),
        (
            "a frame over max_handshake_frame",
            prefixed(64 * 1024 + 1, &vec![0x90; 60_000]),
            "frame of 65537 bytes is over the limit of 65536",
        ),
        (
            "a worker's hello",
            encode(&worker_hello("evil")).unwrap(),
            "workers connect to the worker socket",
        ),
    ];
    for (what, bytes, needle) in &pre_hello {
        let mut p = Peer::connect(&sock, what);
        p.send(bytes);
        p.expect_refusal(needle);
        assert_serves(&m, what);
    }

    // A 4 GiB length prefix: refused from the prefix alone, nothing allocated.
    let before = rss_kb(pid);
    for n in 0..20 {
        let mut p = Peer::connect(&sock, &format!("4 GiB length prefix #{n}"));
        p.send(&[0xff; 4]);
        p.expect_refusal("frame of 4294967295 bytes is over the limit of 65536 bytes");
    }
    let after = rss_kb(pid);
    assert!(
        after <= before + RSS_SLACK_KB,
        "master RSS went from {before} KiB to {after} KiB after 4 GiB length prefixes"
    );
    assert_serves(&m, "4 GiB length prefixes");

    // Truncated: a prefix cut short, a body cut short, then end of file.
    for (what, bytes) in [
        ("half a length prefix, then EOF", vec![0u8, 0]),
        ("a body cut short, then EOF", prefixed(100, &[0x80; 10])),
    ] {
        let mut p = Peer::connect(&sock, what);
        p.send(&bytes);
        p.shut_write();
        p.expect_refusal_or_close("connection closed");
        assert_serves(&m, what);
    }

    // Wrong protocol version: refused naming both versions.
    let mut hello = Hello::new(Role::Client);
    hello.version = bbctl::protocol::PROTOCOL_VERSION + 1;
    hello.software = "bbctl-suite 9.9.9".into();
    let mut p = Peer::connect(&sock, "a hello of the next protocol version");
    p.send_msg(&hello);
    let reason = p.expect_refusal("protocol version mismatch");
    let (theirs, ours) = (
        bbctl::protocol::PROTOCOL_VERSION + 1,
        bbctl::protocol::PROTOCOL_VERSION,
    );
    assert!(
        reason.contains(&format!("bbctl-suite 9.9.9 speaks version {theirs}"))
            && reason.contains(&format!("speaks version {ours}")),
        "the refusal does not name both versions: {reason}"
    );
    assert_serves(&m, "a wrong protocol version");

    // Wrong magic.
    let mut hello = Hello::new(Role::Client);
    hello.magic = "HTTP".into();
    let mut p = Peer::connect(&sock, "a hello with the wrong magic");
    p.send_msg(&hello);
    p.expect_refusal("not a bbctl protocol peer (magic \"HTTP\", expected \"bbp\")");
    assert_serves(&m, "a wrong magic");

    // After a good hello: bad requests get an error response, then a close.
    let after_hello: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an unknown request kind",
            raw_msgpack(&json!({"id": 7, "body": "explode"})),
            "malformed request",
        ),
        (
            "a request kind with a payload we do not know",
            raw_msgpack(&json!({"id": 7, "body": {"format_disk": {"now": true}}})),
            "malformed request",
        ),
        (
            "a request of the wrong shape",
            raw_msgpack(&json!({"id": "seven", "body": "status"})),
            "malformed request",
        ),
        (
            "a request that is not MessagePack",
            prefixed(3, &[0xc1, 0xc1, 0xc1]),
            "malformed request",
        ),
        (
            "noise after the hello",
            prefixed(300, &noise(3, 300)),
            "malformed request",
        ),
        (
            "a 4 GiB length prefix after the hello",
            vec![0xff; 4],
            "frame of 4294967295 bytes is over the limit of 65536 bytes",
        ),
    ];
    for (what, bytes, needle) in &after_hello {
        let mut p = Peer::client(&m, what);
        p.send(bytes);
        p.expect_error_then_close(needle);
        assert_serves(&m, what);
    }

    // A request cut short: a clean close, no answer owed.
    let mut p = Peer::client(&m, "a request cut short");
    p.send(&prefixed(50, &[0x80; 5]));
    p.shut_write();
    p.expect_closed();
    assert_serves(&m, "a request cut short");

    // Nothing accepted was lost, and the master still builds.
    let b = builds(&m);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["result"], "success", "{b:?}");
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert!(
        m.stderr().lines().all(|l| !l.contains("panicked")),
        "{}",
        m.stderr()
    );
}

/// With `max_frame = "64KiB"`, a request of exactly 64 KiB is served and
/// one byte more closes the connection with an error frame, on the control
/// socket and (with a goodbye) on an authenticated worker link.
#[test]
fn frames_over_max_frame_after_the_handshake_close_the_connection() {
    let m = Master::start(TWO_WORKERS);
    let limit = 64 * 1024;

    // A force-build whose frame is exactly `limit` bytes, then one more.
    let request = |reason_len: usize| ClientRequest {
        id: 1,
        body: Request::ForceBuild {
            builder: "quick".into(),
            reason: Some("r".repeat(reason_len)),
            properties: BTreeMap::new(),
            priority: 0,
            source: None,
        },
    };
    let probe = encode(&request(60_000)).unwrap().len() - 4;
    let exact = encode(&request(60_000 + limit - probe)).unwrap();
    assert_eq!(exact.len() - 4, limit);
    let mut p = Peer::client(&m, "a request of exactly max_frame");
    p.send(&exact);
    match p.response() {
        ServerMsg::Response { result: Ok(_), .. } => {}
        other => panic!("a request of exactly max_frame was not served: {other:?}"),
    }
    let over = encode(&request(60_000 + limit - probe + 1)).unwrap();
    assert_eq!(over.len() - 4, limit + 1);
    p.send(&over);
    p.expect_error_then_close("frame of 65537 bytes is over the limit of 65536 bytes");
    assert_serves(&m, "an oversized request");

    // The same on the worker socket, from a worker that authenticated.
    let mut w = Peer::worker(&m, "evil", "evil-but-correct", "an oversized worker frame");
    w.send(&prefixed(limit as u32 + 1, &vec![0x90; 1000]));
    w.expect_goodbye("protocol error: frame of 65537 bytes is over the limit of 65536 bytes");
    assert_serves(&m, "an oversized worker frame");
    wait_until("evil to be seen as gone", Duration::from_secs(5), || {
        worker_connected(&m, "evil") == Some(false)
    });
    // Garbage from an authenticated worker: a goodbye, too.
    let mut w = Peer::worker(&m, "evil", "evil-but-correct", "garbage from a worker");
    w.send(&prefixed(5, &[0xc1; 5]));
    w.expect_goodbye("protocol error: malformed message");
    assert_serves(&m, "garbage from a worker");

    // The accepted request ran; nothing was lost.
    wait_until(
        "the accepted build to finish",
        Duration::from_secs(10),
        || builds(&m).first().is_some_and(|b| b["result"] == "success"),
    );
    assert_eq!(builds(&m).len(), 1);
}

/// A client that connects and sends nothing (and one that sends half a
/// length prefix) is closed after the 5 s handshake timeout, on both
/// sockets; meanwhile other clients are served and a build runs.
#[test]
fn an_idle_peer_is_closed_after_the_handshake_timeout_while_others_are_served() {
    let m = Master::start(TWO_WORKERS);
    let started = Instant::now();
    let idle: Vec<_> = [
        ("silent control client", m.control_socket(), vec![]),
        ("half a prefix on control", m.control_socket(), vec![0u8, 0]),
        ("silent worker", m.worker_socket(), vec![]),
    ]
    .into_iter()
    .map(|(what, path, bytes)| {
        let mut p = Peer::connect(&path, what);
        p.send(&bytes);
        thread::spawn(move || {
            p.expect_refusal("handshake not finished in time");
            (what, started.elapsed())
        })
    })
    .collect();

    // Served meanwhile, each promptly: five statuses and a whole build,
    // all while the idle peers still hold their connections.
    for n in 0..5 {
        assert_serves(&m, &format!("idle peers connected (status #{n})"));
    }
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert!(
        idle.iter().all(|h| !h.is_finished()),
        "the idle peers were closed after {:?}, before the others were served",
        started.elapsed()
    );

    for h in idle {
        let (what, after) = h.join().expect("an idle peer's thread");
        assert!(
            after >= Duration::from_millis(4500) && after <= Duration::from_secs(8),
            "{what} was closed after {after:?}, not after about 5 s"
        );
    }
    assert_serves(&m, "idle peers");
    assert_eq!(builds(&m).len(), 1);
}

/// 300 connections at once against `max_clients = 16`, all of the owner's
/// uid: exactly 16 are welcomed, plus the slots kept for the owner
/// (`OWNER_RESERVE`), the others refused with "too many connections"
/// (`bbctl` too, exit 3); once they close, `bbctl status` works again.
#[test]
fn connections_beyond_max_clients_are_refused_and_the_master_recovers() {
    let config = TWO_WORKERS.replace("[master]\n", "[master]\nmax_clients = 16\n");
    let m = Master::start(&config);
    let sock = m.control_socket();
    let mut peers: Vec<Peer> = (0..300)
        .map(|n| {
            let mut p = Peer::connect(&sock, &format!("crowd #{n}"));
            p.send_msg(&Hello::new(Role::Client));
            p
        })
        .collect();
    let mut welcomed = 0;
    let mut refused = 0;
    for p in &mut peers {
        match p.answer() {
            Answer::Welcome => welcomed += 1,
            Answer::Refused(reason) => {
                assert!(
                    reason.contains("too many connections")
                        && reason.contains("at most 16 clients"),
                    "{}: {reason}",
                    p.what
                );
                refused += 1;
            }
            Answer::Closed => panic!("{}: closed without a word", p.what),
        }
    }
    let reserve = bbctl::daemon::client_slots::OWNER_RESERVE;
    assert_eq!((welcomed, refused), (16 + reserve, 284 - reserve));

    let out = m.bbctl(&["status"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("too many connections"),
        "{}",
        describe(&out)
    );

    drop(peers);
    wait_until("bbctl status to work again", Duration::from_secs(5), || {
        code(&m.bbctl(&["status"])) == 0
    });
    assert_serves(&m, "300 connections");
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
}

/// The control socket and the worker socket are mode 0600 and the state
/// dir 0700. (A second master on the same state dir is refused naming the
/// running one's pid: `lifecycle::second_master_on_same_state_dir_is_refused`.)
#[test]
fn sockets_are_owner_only_in_an_owner_only_state_dir() {
    let m = Master::start(TWO_WORKERS);
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode(&m.state_dir()), 0o700, "state dir");
    assert_eq!(mode(&m.control_socket()), 0o600, "control socket");
    assert_eq!(mode(&m.worker_socket()), 0o600, "worker socket");
    let uid = nix::unistd::geteuid().as_raw();
    for p in [m.state_dir(), m.control_socket(), m.worker_socket()] {
        assert_eq!(fs::metadata(&p).unwrap().uid(), uid, "{}", p.display());
    }
}

// ---------------------------------------------------------------------------
// The worker socket.

pub(crate) fn worker_connected(m: &Master, name: &str) -> Option<bool> {
    let s = m.bbctl_json(&["status"]);
    s["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["connected"].as_bool())
}

/// A client's hello on the worker socket is sent to the control socket;
/// a wrong secret, an unknown name and garbage are refused, the failed
/// authentications after a second's delay and with a line in the master's
/// log.
#[test]
fn worker_socket_refuses_clients_garbage_and_wrong_secrets() {
    let m = Master::start(TWO_WORKERS);
    let sock = m.worker_socket();

    let mut p = Peer::connect(&sock, "a client's hello on the worker socket");
    p.send_msg(&Hello::new(Role::Client));
    p.expect_refusal("this is the worker socket; bbctl connects to the control socket");
    assert_serves(&m, "a client's hello on the worker socket");

    for (what, bytes, needle) in [
        (
            "garbage on the worker socket",
            noise(5, 100),
            "bad handshake",
        ),
        (
            "a 4 GiB prefix on the worker socket",
            vec![0xff; 4],
            "frame of 4294967295 bytes is over the limit of 65536",
        ),
        (
            "a worker hello of version 99",
            {
                let mut h = worker_hello("evil");
                h.version = 99;
                encode(&h).unwrap()
            },
            "protocol version mismatch",
        ),
    ] {
        let mut p = Peer::connect(&sock, what);
        p.send(&bytes);
        p.expect_refusal(needle);
        assert_serves(&m, what);
    }

    // Wrong secrets: refused after about a second, each on its own.
    let started = Instant::now();
    let tries: Vec<_> = [
        ("evil", "evil-but-wrong", "wrong secret for worker `evil`"),
        ("evil", "", "wrong secret for worker `evil`"),
        ("local-1", "guess", "wrong secret for worker `local-1`"),
        ("nobody-here", "x", "no worker named `nobody-here`"),
    ]
    .into_iter()
    .map(|(name, secret, needle)| {
        let mut p = Peer::connect(&sock, &format!("worker {name} with secret {secret:?}"));
        p.send_worker_hello(name, secret);
        thread::spawn(move || {
            p.expect_refusal(needle);
            started.elapsed()
        })
    })
    .collect();
    // The refusals are pending: others are served meanwhile.
    assert_serves(&m, "wrong secrets pending");
    for t in tries {
        let after = t.join().expect("a refused worker's thread");
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(4),
            "a refused worker heard back after {after:?}, not after about 1 s"
        );
    }
    let log = m.stderr();
    assert!(
        log.matches("worker authentication failed").count() >= 4,
        "the master did not log the failed authentications:\n{log}"
    );
    assert_eq!(worker_connected(&m, "evil"), Some(false));
    // The right secret still works after all that.
    let _w = Peer::worker(&m, "evil", "evil-but-correct", "evil, correctly");
    wait_until("evil to be connected", Duration::from_secs(5), || {
        worker_connected(&m, "evil") == Some(true)
    });
}

/// A worker that authenticates correctly but reports output or an end for
/// a build running on another worker (or for a build that does not exist)
/// is told why and cut off, the master logs it, and the real build
/// finishes with its true result and an unpolluted log.
#[test]
fn a_worker_cannot_report_on_another_workers_build() {
    let m = Master::start(TWO_WORKERS);
    m.force_build("slow");
    wait_for_line_in(&m.path().join("started"), Duration::from_secs(10));
    let running = m.bbctl_json(&["status"])["running"].clone();
    assert_eq!(running[0]["worker"], "local-1", "{running}");
    let build = running[0]["build"].as_u64().expect("a running build");

    let lies: Vec<(&str, WorkerToMaster)> = vec![
        (
            "output for another worker's build",
            WorkerToMaster::Output {
                build,
                step: 0,
                offset: 0,
                data: b"POISON from evil\n".to_vec(),
            },
        ),
        (
            "output past the real output",
            WorkerToMaster::Output {
                build,
                step: 0,
                offset: 6,
                data: b"POISON again\n".to_vec(),
            },
        ),
        (
            "a failed end for another worker's step",
            WorkerToMaster::StepEnded {
                build,
                step: 0,
                end: StepEnd::Exited { code: 1 },
            },
        ),
        (
            "an end for a step the build has not reached",
            WorkerToMaster::StepEnded {
                build,
                step: 5,
                end: StepEnd::Exited { code: 0 },
            },
        ),
        (
            "an end for a build that does not exist",
            WorkerToMaster::StepEnded {
                build: 999,
                step: 0,
                end: StepEnd::Stopped,
            },
        ),
    ];
    for (what, lie) in &lies {
        wait_until("evil to be seen as gone", Duration::from_secs(5), || {
            worker_connected(&m, "evil") == Some(false)
        });
        let mut w = Peer::worker(&m, "evil", "evil-but-correct", what);
        w.send_msg(lie);
        w.expect_goodbye("which this worker was not given");
        assert_serves(&m, what);
    }
    let log = m.stderr();
    assert!(
        log.matches("which this worker was not given; closing the link")
            .count()
            >= lies.len(),
        "the master did not log the lies:\n{log}"
    );

    // The real build is untouched: still running, then succeeds with its own output.
    let running = m.bbctl_json(&["status"])["running"].clone();
    assert_eq!(running[0]["build"], build, "{running}");
    fs::write(m.path().join("go"), "").unwrap();
    wait_until("the real build to finish", Duration::from_secs(10), || {
        builds(&m)
            .iter()
            .any(|b| b["id"] == build && !b["result"].is_null())
    });
    let b = builds(&m);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["result"], "success", "{b:?}");
    assert_eq!(b[0]["worker"], "local-1", "{b:?}");
    assert_eq!(m.bbctl_ok(&["log", &build.to_string()]), "start\nend\n");
}

// ---------------------------------------------------------------------------
// Limits that keep the master alive.

/// A step that floods output (`yes` for 2 s) with `max_log_size = "1MiB"`:
/// the log holds exactly the first MiB and one marker line, the master's
/// memory stays small, and the build succeeds.
#[test]
fn a_flood_of_output_is_capped_at_max_log_size_with_a_marker() {
    // The default max_frame: a worker's output chunks are 64 KiB of data
    // plus their header (see the test below for max_frame = "64KiB").
    let config = TWO_WORKERS
        .replace("max_frame = \"64KiB\"\n", "max_log_size = \"1MiB\"\n")
        .replace(
            "shell = \"echo quick $BB_BUILD_ID\"",
            "shell = \"timeout 2 yes || true\"",
        );
    let m = Master::start(&config);
    let pid = m.pid();
    let flood = m.bbctl_spawn(&["force-build", "quick", "--wait"]);
    let mut peak = rss_kb(pid);
    let started = Instant::now();
    while !process_gone(flood.pid() as i32) {
        peak = peak.max(rss_kb(pid));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flooding build did not finish in 30 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let out = flood.finish(Duration::from_secs(5));
    assert_eq!(
        code(&out),
        0,
        "the flooding build failed: {}",
        describe(&out)
    );
    assert!(
        peak < 64 * 1024,
        "the master's RSS reached {peak} KiB during the flood (limit 64 MiB)"
    );
    let b = builds(&m);
    assert_eq!(b[0]["result"], "success", "{b:?}");
    let build = b[0]["id"].as_u64().unwrap();
    let log = fs::read(
        m.state_dir()
            .join("logs")
            .join(build.to_string())
            .join("0.log"),
    )
    .expect("the step's log");
    let marker = "\n[bbmaster: output truncated at 1048576 bytes (max_log_size)]\n";
    assert_eq!(
        log.len(),
        (1 << 20) + marker.len(),
        "log is {} bytes",
        log.len()
    );
    assert!(
        log[..1 << 20].chunks(2).all(|c| c == b"y\n"),
        "the kept MiB is not yes's output"
    );
    assert_eq!(text(&log[1 << 20..]), marker);
    assert_serves(&m, "a flood");
    // For the record: what the flood left on disk (the worker's spool is
    // capped separately, at 1 GiB per step).
    let du = Command::new("du").arg("-sk").arg(m.path()).output();
    if let Ok(du) = du {
        println!(
            "disk used by the flood's temp dir: {}",
            text(&du.stdout).trim()
        );
    }
}

/// At the smallest `max_frame` the config accepts (64 KiB), a step that
/// prints more than 64 KiB at once still succeeds: the worker's output
/// frames must fit the master's limit.
#[test]
fn a_step_with_much_output_works_at_the_smallest_max_frame() {
    let config = TWO_WORKERS.replace(
        "shell = \"echo quick $BB_BUILD_ID\"",
        "shell = \"head -c 300000 /dev/zero | tr '\\\\0' x\"",
    );
    let m = Master::start(&config);
    let out = m.bbctl(&["force-build", "quick", "--wait"]);
    assert_eq!(
        code(&out),
        0,
        "{}\n--- master stderr\n{}",
        describe(&out),
        m.stderr()
    );
    let b = builds(&m);
    assert_eq!(b.len(), 1, "the build was retried: {b:?}");
    assert_eq!(b[0]["result"], "success", "{b:?}");
    let log = m.bbctl_ok(&["log", &b[0]["id"].to_string()]);
    assert_eq!(log.len(), 300_000);
    assert!(!m.stderr().contains("protocol error"), "{}", m.stderr());
}

/// With `max_queued = 3`, a fourth request for a builder whose worker is
/// away exits 5 saying the queue is full; the three are kept, and other
/// builders still take requests.
#[test]
fn a_full_queue_refuses_more_requests() {
    let config = TWO_WORKERS.replace("[master]\n", "[master]\nmax_queued = 3\n");
    let m = Master::start(&config);
    for n in 1..=3 {
        assert_eq!(m.force_build("evilb"), n);
    }
    let out = m.bbctl_code(&["force-build", "evilb"], 5);
    let err = text(&out.stderr);
    assert!(
        err.contains("the queue of builder `evilb` is full (3 requests, max_queued)"),
        "{err}"
    );
    let q = m.bbctl_json(&["queue"]);
    let ids: Vec<_> = q
        .as_array()
        .expect("queue is an array")
        .iter()
        .map(|r| r["request"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3], "{q}");
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert_serves(&m, "a full queue");
}

/// A property value full of shell metacharacters reaches the step as the
/// very same bytes and runs nothing; bad names are refused by `bbctl`
/// (exit 2) and, sent raw over the socket, by the master (`rejected`, which
/// `bbctl` maps to exit 5); bad values and too many properties likewise.
#[test]
fn properties_are_passed_literally_and_bad_ones_rejected() {
    let dir = "@DIR@";
    let config = TWO_WORKERS.replace(
        "shell = \"echo quick $BB_BUILD_ID\"",
        "shell = 'printf \"%s|\\n\" \"$BB_PROP_X\"'",
    );
    let m = Master::start(&config);
    let value = format!(
        "$(touch {dir}/pwned1) `touch {dir}/pwned2`; touch {dir}/pwned3 && echo hi | cat > {dir}/pwned4 \
         ' \" \\ * ? [a] ~ $HOME ${{IFS}} %s\ttab\nsecond line"
    )
    .replace("@DIR@", &m.path().to_string_lossy());
    let prop = format!("X={value}");
    let out = m.bbctl_code(&["force-build", "quick", "-p", &prop, "--follow"], 0);
    assert_eq!(text(&out.stdout), format!("{value}|\n"));
    for n in 1..=4 {
        assert!(
            !m.path().join(format!("pwned{n}")).exists(),
            "a property value was run by a shell (pwned{n})"
        );
    }

    // Client side: a name that cannot be a variable never leaves bbctl.
    for bad in ["A-B=x", "1A=x", "A B=x", "=x"] {
        let out = m.bbctl_code(&["force-build", "quick", "-p", bad], 2);
        assert!(
            text(&out.stderr).contains("invalid property name"),
            "{bad}: {}",
            describe(&out)
        );
    }

    // Over the socket: the master checks for itself.
    let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let many: BTreeMap<_, _> = (0..65)
        .map(|n| (format!("P{n}"), "v".to_string()))
        .collect();
    let bad_requests = [
        (
            "a name with `-`",
            one("A-B", "x"),
            "invalid property name `A-B`",
        ),
        (
            "a name starting with a digit",
            one("1A", "x"),
            "invalid property name `1A`",
        ),
        ("an empty name", one("", "x"), "invalid property name ``"),
        (
            "a name with `=`",
            one("A=B", "x"),
            "invalid property name `A=B`",
        ),
        (
            "a name of 129 bytes",
            one(&"N".repeat(129), "x"),
            "invalid property name",
        ),
        (
            "a value with a NUL byte",
            one("X", "a\0b"),
            "it contains a NUL byte",
        ),
        (
            "a value of 4097 bytes",
            one("X", &"v".repeat(4097)),
            "4097 bytes long, at most 4096",
        ),
        (
            "65 properties",
            many,
            "too many properties: 65 (at most 64)",
        ),
    ];
    let mut p = Peer::client(&m, "crafted force-builds");
    for (n, (what, properties, needle)) in bad_requests.into_iter().enumerate() {
        let id = 100 + n as u64;
        let answer = p.call(
            id,
            Request::ForceBuild {
                builder: "quick".into(),
                reason: None,
                properties,
                priority: 0,
                source: None,
            },
        );
        match answer {
            ServerMsg::Response {
                id: got,
                result: Err(e),
            } => {
                assert_eq!(got, id, "{what}");
                assert_eq!(e.kind, ReplyKind::Rejected, "{what}: {e:?}");
                assert!(e.message.contains(needle), "{what}: {:?}", e.message);
            }
            other => panic!("{what}: expected a rejection, got {other:?}"),
        }
    }
    // The connection is still good after the rejections.
    assert!(matches!(
        p.call(200, Request::Status(Default::default())),
        ServerMsg::Response { result: Ok(_), .. }
    ));
    drop(p);
    assert_eq!(builds(&m).len(), 1, "a rejected request was built");
    assert_eq!(m.bbctl_json(&["queue"]), json!([]));
    assert_serves(&m, "bad properties");
}

// ---------------------------------------------------------------------------
// Who may use the control socket.

/// A master started by hand with its control socket in a directory others
/// may traverse (the harness's fixture expects the socket in the state dir).
struct SideMaster {
    dir: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
}

impl SideMaster {
    /// Start a master whose `[master]` table holds `master_keys`.
    fn start(master_keys: &str) -> SideMaster {
        let dir = temp_dir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("c.sock");
        let config = format!(
            "[master]\ncontrol_socket = \"{}\"\n{master_keys}\n\n\
             [[worker]]\nname = \"w\"\nsecret = \"s-0123456789abcdef\"\n\n\
             [[builder]]\nname = \"b\"\nworkers = [\"w\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n",
            socket.display()
        );
        let config_path = dir.path().join("master.toml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("master.log")).unwrap();
        let child = command(BBMASTER)
            .arg("--state-dir")
            .arg(dir.path().join("s"))
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start bbmaster");
        let mut side = SideMaster { dir, child, socket };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while UnixStream::connect(&side.socket).is_err() {
            if let Ok(Some(status)) = side.child.try_wait() {
                panic!(
                    "bbmaster exited during start-up ({status}):\n{}",
                    side.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "bbmaster did not listen on {} in time:\n{}",
                side.socket.display(),
                side.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
        side
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    /// `bbctl status` run as `uid`:`gid` through `setpriv`, using a copy of
    /// bbctl in the world-readable dir (the build dir may not be).
    fn status_as(&self, uid: u32, gid: u32) -> std::process::Output {
        let exe = self.dir.path().join("bbctl");
        if !exe.exists() {
            fs::copy(BBCTL, &exe).expect("cannot copy bbctl");
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut cmd = command("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(&exe)
            .arg("--socket")
            .arg(&self.socket)
            .arg("status");
        run_with_timeout(cmd, Duration::from_secs(10))
    }
}

impl Drop for SideMaster {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        if wait_child(&mut self.child, EXIT_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The uid and gid of `nobody`, if this machine can run a command as
/// another user (`setpriv`, as root).
fn other_user() -> Result<(u32, u32), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the tests do not run as root, so they cannot switch users".into());
    }
    let user = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .ok_or("there is no user `nobody`")?;
    let probe = Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
        ])
        .args(["--clear-groups", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(s) => Err(format!("`setpriv ... true` as nobody failed ({s})")),
        Err(e) => Err(format!("`setpriv` cannot be run: {e}")),
    }
}

/// The peer-uid check, from another real user (`nobody`, via `setpriv`):
/// a socket opened to others by `allowed_uids` (mode 0666) still refuses a
/// uid not on the list with "permission denied" from the master itself;
/// the listed uid gets in; `allowed_gid` lets in that group (mode 0660).
#[test]
fn peer_uid_check_refuses_users_not_allowed() {
    let (uid, gid) = match other_user() {
        Ok(ids) => ids,
        Err(why) => {
            println!("SKIPPED peer_uid_check_refuses_users_not_allowed: {why}");
            eprintln!("SKIPPED peer_uid_check_refuses_users_not_allowed: {why}");
            return;
        }
    };
    let unrelated = if uid == 4242 { 4243 } else { 4242 };

    // Reachable (0666), but nobody's uid is not on the list.
    let m = SideMaster::start(&format!("allowed_uids = [{unrelated}]"));
    let mode = fs::metadata(&m.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "control socket with allowed_uids");
    let out = m.status_as(uid, gid);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "permission denied: uid {uid} may not use this master"
        )),
        "the refusal did not come from the peer-uid check: {err}"
    );
    assert!(
        m.stderr()
            .contains("control connection from a user not allowed refused"),
        "{}",
        m.stderr()
    );
    // The master's own user is still served.
    let own = run_with_timeout(
        {
            let mut c = command(BBCTL);
            c.arg("--socket").arg(&m.socket).arg("status");
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(code(&own), 0, "{}", describe(&own));
    drop(m);

    // Listed: nobody gets in.
    let m = SideMaster::start(&format!("allowed_uids = [{unrelated}, {uid}]"));
    let out = m.status_as(uid, gid);
    assert_eq!(code(&out), 0, "{}\n{}", describe(&out), m.stderr());
    drop(m);

    // By group: 0660, group-owned by the allowed gid, and nobody's group gets in.
    let m = SideMaster::start(&format!("allowed_gid = {gid}"));
    let meta = fs::metadata(&m.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    let out = m.status_as(uid, gid);
    assert_eq!(code(&out), 0, "{}\n{}", describe(&out), m.stderr());
    // Another group, same uid: no.
    let out = m.status_as(uid, if gid == 4242 { 4243 } else { 4242 });
    assert_ne!(code(&out), 0, "{}", describe(&out));
}

/// One allowed user cannot take every client slot: `nobody`, allowed by
/// `allowed_uids`, holds at most half of `max_clients`, and the owner gets
/// in while nobody holds its share.
#[test]
fn one_user_cannot_take_every_client_slot() {
    let (uid, gid) = match other_user() {
        Ok(ids) => ids,
        Err(why) => {
            println!("SKIPPED one_user_cannot_take_every_client_slot: {why}");
            eprintln!("SKIPPED one_user_cannot_take_every_client_slot: {why}");
            return;
        }
    };
    let m = SideMaster::start(&format!("allowed_uids = [{uid}]\nmax_clients = 4"));
    // Two streams held open by nobody: its share of four. Each retries
    // until it holds a slot (a slot of a connection that just closed is
    // freed a moment later, when the master notices).
    let exe = m.dir.path().join("bbctl");
    m.status_as(uid, gid); // copies bbctl where nobody can run it
    let holders: Vec<Background> = (0..2)
        .map(|_| {
            let mut cmd = command("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("sh")
                .arg("-c")
                .arg(format!(
                    "until '{}' --socket '{}' events; do sleep 0.05; done",
                    exe.display(),
                    m.socket.display()
                ));
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            Background::spawn(cmd)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let out = m.status_as(uid, gid);
        let refused = code(&out) == 3
            && text(&out.stderr).contains(&format!("too many connections from uid {uid}"));
        if refused {
            break describe(&out);
        }
        assert!(
            Instant::now() < deadline,
            "nobody still gets in while holding two streams: {}\n{}",
            describe(&out),
            m.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let own = run_with_timeout(
        {
            let mut c = command(BBCTL);
            c.arg("--socket").arg(&m.socket).arg("status");
            c
        },
        Duration::from_secs(10),
    );
    assert_eq!(code(&own), 0, "{}\nlast refusal: {last}", describe(&own));
    for h in holders {
        let _ = nix::sys::signal::killpg(Pid::from_raw(h.pid() as i32), Signal::SIGKILL);
        h.kill9();
    }
    wait_until("nobody to get in again", Duration::from_secs(10), || {
        code(&m.status_as(uid, gid)) == 0
    });
}
