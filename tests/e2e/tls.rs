//! Remote workers over TLS (issue 14): real `bbmaster` and `bbworker` on
//! 127.0.0.1 and [::1], certificates made in the test (harness/certs.rs);
//! a worker that cannot verify its master gives up at once with one clear
//! line; mutual TLS; and the faults of a real network injected by the
//! harness's proxy (harness/proxy.rs) between worker and master: a dropped
//! link, a link cut mid-frame, a silent half-open link, latency and a
//! master restart. In each, the build ends exactly once with the right
//! result, its log is exactly what the step printed, and the step ran once.

use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    BBWORKER, Background, CertFiles, Certs, Master, Proxy, Transport, code, command, describe,
    start_worker_with, temp_dir, text, tls_worker_args, wait_until, worker_command,
};
use crate::storage::wait_finished;

/// How long a connection, a build or an exit may take.
const WAIT: Duration = Duration::from_secs(20);
/// How soon a worker must give up on a master it cannot verify.
const PROMPT: Duration = Duration::from_secs(5);
/// The keepalive of the fault tests.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// What "noticed" may take: three missed intervals (up to a fourth by
/// phase), plus slack for a loaded machine.
const NOTICE: Duration = Duration::from_secs(6);

/// What a worker logs once the master welcomed it, and only then.
const CONNECTED: &str = "connected to the master";

const W1_SECRET: &str = "w1-secret-0123456789\n";
const W2_SECRET: &str = "w2-secret-9876543210\n";

/// The step of the fault tests: it counts its runs in `@DIR@/runs`
/// (outside its work dir), then prints numbered lines, each also appended
/// to `@DIR@/printed`, until `@DIR@/go` exists, and prints `end`.
const STREAM: &str = "echo ran >> @DIR@/runs; i=0; \
    while [ ! -e @DIR@/go ]; do i=$((i+1)); \
    printf 'line %d %0100d\\n' $i $i | tee -a @DIR@/printed; sleep 0.01; done; \
    echo end | tee -a @DIR@/printed";

/// A config whose `[master]` table holds `master`, with workers `w1` and
/// `w2` (secret files `@DIR@/w1.secret`, `@DIR@/w2.secret`), builder `b`
/// on `w1` running `shell` and builder `b2` on `w2` printing `two`.
fn config(master: &str, shell: &str) -> String {
    format!(
        r#"
[master]
{master}

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[worker]]
name = "w2"
secret_file = "@DIR@/w2.secret"

[[builder]]
name = "b"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = '''{shell}'''

[[builder]]
name = "b2"
workers = ["w2"]

  [[builder.step]]
  name = "s"
  shell = "echo two"
"#
    )
}

/// A master on [`config`] with both secrets written.
fn start_master(master: &str, shell: &str) -> Master {
    Master::start_with_files(
        &config(master, shell),
        &[("w1.secret", W1_SECRET), ("w2.secret", W2_SECRET)],
    )
}

/// `[master]` lines: listen on `listen` with the certificate `cert`.
fn with_cert(listen: &str, cert: &CertFiles) -> String {
    format!(
        "worker_listen = [\"{listen}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.cert.display(),
        cert.key.display()
    )
}

/// The TLS listener of `m` and its fingerprint, from `bbctl status`.
fn tls_of(m: &Master) -> (SocketAddr, String) {
    m.tls_status()
        .unwrap_or_else(|| panic!("no TLS listener in status: {}", m.bbctl_json(&["status"])))
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn path_arg(flag: &str, path: &Path) -> Vec<OsString> {
    vec![flag.into(), path.into()]
}

/// Start remote worker `name` of `m` dialing `tls://addr` with the
/// verification (and client certificate) arguments `verify`.
fn tls_worker(m: &Master, name: &str, addr: SocketAddr, verify: &[OsString]) -> Background {
    let mut args = os(&["--master", &format!("tls://{addr}")]);
    args.extend_from_slice(verify);
    start_worker_with(
        &args,
        name,
        &m.path().join(format!("{name}.secret")),
        &m.path().join(format!("w-{name}")),
        &[],
    )
}

/// Worker `name`'s entry in `bbctl --json workers`.
fn worker_row(m: &Master, name: &str) -> Value {
    let v = m.bbctl_json(&["workers"]);
    v.as_array()
        .unwrap_or_else(|| panic!("workers --json is not an array: {v}"))
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {v}"))
        .clone()
}

fn connected(m: &Master, name: &str) -> bool {
    worker_row(m, name)["connected"] == true
}

fn wait_connected(m: &Master, name: &str) {
    wait_until(&format!("{name} to connect"), WAIT, || connected(m, name));
}

/// Run builder `builder` to its end with `force-build --follow`; its log.
fn build_log(m: &Master, builder: &str) -> String {
    text(
        &m.bbctl_code(&["force-build", builder, "--follow"], 0)
            .stdout,
    )
}

/// The lines of `stderr` that are the worker's fatal error.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("bbworker: error:"))
        .collect()
}

/// Whether this machine has an IPv6 loopback to listen on.
fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Over 127.0.0.1 and [::1], a master with a CA-signed certificate and a
/// worker verifying it with `--ca`: the worker connects, builds run, and
/// `status` and `workers` show the link (TLS 1.3, the peer, the
/// certificate's fingerprint).
#[test]
fn a_ca_signed_master_over_ipv4_and_ipv6() {
    let dir = temp_dir();
    let certs = Certs::make(dir.path());
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        if listen.starts_with('[') && !ipv6_loopback() {
            eprintln!("SKIPPED the [::1] case: no IPv6 loopback here");
            continue;
        }
        let m = start_master(&with_cert(listen, &certs.server), "echo hello over tls");
        let (addr, fingerprint) = tls_of(&m);
        assert_eq!(addr.ip(), listen.parse::<SocketAddr>().unwrap().ip());
        assert_ne!(addr.port(), 0, "status shows port 0, not the bound one");
        assert_eq!(
            fingerprint, certs.server.fingerprint,
            "status shows another certificate"
        );
        assert_eq!(m.bbctl_json(&["status"])["tls"]["plaintext"], false);

        let w = tls_worker(&m, "w1", addr, &path_arg("--ca", &certs.ca_cert));
        wait_connected(&m, "w1");
        assert_eq!(build_log(&m, "b"), "hello over tls\n");
        let row = worker_row(&m, "w1");
        assert_eq!(row["transport"], "tls", "{row}");
        assert_eq!(row["tls_version"], "TLSv1.3", "{row}");
        let peer: SocketAddr = row["peer"]
            .as_str()
            .unwrap_or_else(|| panic!("no peer: {row}"))
            .parse()
            .unwrap_or_else(|e| panic!("peer is no address ({e}): {row}"));
        assert_eq!(peer.ip(), addr.ip(), "{row}");
        assert!(row["connected_since_ms"].is_u64(), "{row}");
        drop(w);
    }
}

/// What a worker that must refuse its master is given, and what its one
/// error line must say (any of `needles`, case-insensitively).
struct Refusal<'a> {
    what: &'a str,
    master_cert: &'a CertFiles,
    verify: Vec<OsString>,
    needles: &'a [&'a str],
}

/// A worker that cannot verify its master (a certificate for another
/// name, an expired one, one from a foreign CA, a pinned fingerprint that
/// does not match) exits non-zero promptly with one error line naming the
/// problem, after one connection (no retry); the master goes on serving:
/// a worker pinning that same certificate's fingerprint (which checks
/// neither name nor expiry) then connects and builds.
#[test]
fn a_worker_refuses_a_master_it_cannot_verify() {
    let dir = temp_dir();
    let certs = Certs::make(dir.path());
    let ca = path_arg("--ca", &certs.ca_cert);
    let cases = [
        Refusal {
            what: "a certificate for another name",
            master_cert: &certs.wrong_name,
            verify: ca.clone(),
            needles: &["name", "not valid for"],
        },
        Refusal {
            what: "an expired certificate",
            master_cert: &certs.expired,
            verify: ca.clone(),
            needles: &["expired"],
        },
        Refusal {
            what: "a certificate from a foreign CA",
            master_cert: &certs.foreign,
            verify: ca.clone(),
            needles: &["issuer", "trust", "unknown ca"],
        },
        Refusal {
            what: "a fingerprint that does not match",
            master_cert: &certs.server,
            verify: os(&["--fingerprint", &certs.foreign.fingerprint]),
            needles: &["fingerprint"],
        },
    ];
    for case in cases {
        let what = case.what;
        let m = start_master(
            &with_cert("127.0.0.1:0", case.master_cert),
            "echo still here",
        );
        let (addr, fingerprint) = tls_of(&m);
        let proxy = Proxy::start(addr);
        let started = Instant::now();
        let out = tls_worker(&m, "w1", proxy.addr(), &case.verify).finish(PROMPT);
        let took = started.elapsed();
        let stderr = text(&out.stderr);
        assert_ne!(
            code(&out),
            0,
            "{what}: the worker accepted it\n{}",
            describe(&out)
        );
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{what}: not one error line\n{stderr}");
        let line = errors[0].to_lowercase();
        assert!(
            case.needles.iter().any(|n| line.contains(n)),
            "{what}: the error does not name the problem (any of {:?}): {}",
            case.needles,
            errors[0]
        );
        assert_eq!(
            proxy.accepted(),
            1,
            "{what}: the worker tried again ({took:?}):\n{stderr}"
        );
        assert!(!stderr.contains(CONNECTED), "{what}:\n{stderr}");
        eprintln!("{what}: {took:?}: {}", errors[0]);
        assert!(!connected(&m, "w1"));

        // The master goes on: a worker pinning this very certificate.
        let w = tls_worker(&m, "w1", addr, &os(&["--fingerprint", &fingerprint]));
        wait_connected(&m, "w1");
        assert_eq!(build_log(&m, "b"), "still here\n", "{what}");
        drop(w);
    }
}

/// A worker with a wrong secret over TLS (its proof fails; the secret
/// itself never crosses the link) is refused: it exits non-zero with one
/// line saying so, after one connection, never connected; the master logs
/// the failed authentication and serves the right `w1` on.
#[test]
fn a_wrong_secret_over_tls_is_refused_once() {
    let m = start_master("worker_listen = [\"127.0.0.1:0\"]", "echo right");
    let (addr, fingerprint) = tls_of(&m);
    let proxy = Proxy::start(addr);
    fs::write(m.path().join("wrong.secret"), "not-the-secret-of-w1\n").unwrap();
    let out = Background::spawn(worker_command(
        &tls_worker_args(proxy.addr(), &fingerprint),
        "w1",
        &m.path().join("wrong.secret"),
        &m.path().join("w-wrong"),
        &[],
    ))
    .finish(WAIT);
    let stderr = text(&out.stderr);
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "not one error line:\n{stderr}");
    assert!(errors[0].contains("refused"), "{}", errors[0]);
    assert!(!stderr.contains(CONNECTED), "{stderr}");
    assert_eq!(proxy.accepted(), 1, "the worker tried again:\n{stderr}");
    eprintln!("a wrong secret: {}", errors[0]);
    wait_until("the master to log the failed authentication", WAIT, || {
        m.stderr().contains("authentication failed")
    });
    assert!(
        !m.stderr().contains("not-the-secret"),
        "the secret was logged"
    );

    let w = tls_worker(&m, "w1", addr, &os(&["--fingerprint", &fingerprint]));
    wait_connected(&m, "w1");
    assert_eq!(build_log(&m, "b"), "right\n");
    drop(w);
}

/// With no `tls_cert`, the master makes a self-signed certificate under
/// its state dir (key 0600, dir 0700), logs and shows its fingerprint,
/// and keeps it across restarts: a worker pinning the fingerprint from
/// `bbctl status` (and one given it as `openssl` prints it: upper case
/// with colons) connects, and both come back after a `kill -9` of the
/// master.
#[test]
fn a_self_signed_master_is_pinned_by_the_fingerprint_from_status() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = Master::start_over(
        Transport::Tls,
        &config("", "echo pinned"),
        &[("w1.secret", W1_SECRET), ("w2.secret", W2_SECRET)],
    );
    let fingerprint = m.tls_fingerprint();
    let tls_dir = m.state_dir().join("tls");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls_dir), 0o700);
    assert_eq!(mode(&tls_dir.join("key.pem")), 0o600);
    let der = {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(tls_dir.join("cert.pem")).expect("cert.pem is no PEM")
    };
    assert_eq!(bbctl::net::fingerprint(&der), fingerprint);
    assert!(
        m.stderr().contains(&fingerprint),
        "the fingerprint is not logged:\n{}",
        m.stderr()
    );

    let w1 = tls_worker(
        &m,
        "w1",
        m.tls_addr(),
        &os(&["--fingerprint", &fingerprint]),
    );
    let hex = fingerprint.trim_start_matches("sha256:").to_uppercase();
    let colons: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
    let w2 = tls_worker(
        &m,
        "w2",
        m.tls_addr(),
        &os(&["--fingerprint", &colons.join(":")]),
    );
    wait_connected(&m, "w1");
    wait_connected(&m, "w2");
    assert_eq!(build_log(&m, "b"), "pinned\n");

    m.kill9();
    // The harness checks the address and the fingerprint are the same.
    m.spawn();
    wait_connected(&m, "w1");
    wait_connected(&m, "w2");
    assert_eq!(build_log(&m, "b"), "pinned\n");
    assert_eq!(build_log(&m, "b2"), "two\n");
    drop((w1, w2));
}

/// With `client_ca`, a worker must show a client certificate signed by it
/// whose name is its own: `w1` with its own connects and builds; `w2`
/// with `w1`'s certificate is refused (one line about the certificate,
/// non-zero exit, never connected), and so is `w2` with none; `w1` serves
/// on.
#[test]
fn mutual_tls_the_client_certificate_must_name_the_worker() {
    let dir = temp_dir();
    let certs = Certs::make(dir.path());
    let master = format!(
        "{}\nclient_ca = \"{}\"",
        with_cert("127.0.0.1:0", &certs.server),
        certs.ca_cert.display()
    );
    let m = start_master(&master, "echo mutual");
    let (addr, _) = tls_of(&m);
    let client_args = |cert: &CertFiles| {
        let mut args = path_arg("--ca", &certs.ca_cert);
        args.extend(path_arg("--client-cert", &cert.cert));
        args.extend(path_arg("--client-key", &cert.key));
        args
    };
    let w1_cert = certs.client("w1");
    let w1 = tls_worker(&m, "w1", addr, &client_args(&w1_cert));
    wait_connected(&m, "w1");
    assert_eq!(build_log(&m, "b"), "mutual\n");

    // w2 with a certificate naming w1.
    let mentions = || m.stderr().matches("certificate").count();
    let before = mentions();
    let started = Instant::now();
    let out = tls_worker(&m, "w2", addr, &client_args(&w1_cert)).finish(WAIT);
    let stderr = text(&out.stderr);
    assert_ne!(
        code(&out),
        0,
        "w2 with w1's certificate: {}",
        describe(&out)
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "not one error line:\n{stderr}");
    assert!(errors[0].contains("certificate"), "{}", errors[0]);
    assert!(!stderr.contains(CONNECTED), "{stderr}");
    eprintln!(
        "w2 with w1's certificate: {:?}: {}",
        started.elapsed(),
        errors[0]
    );
    assert!(!connected(&m, "w2"));
    wait_until("the master to log the refusal", WAIT, || {
        mentions() > before
    });

    // w2 with no client certificate at all: the handshake is refused
    // (under TLS 1.3 the worker learns it on its first read, after its
    // side of the handshake is done); it must say so, give up, and never
    // say it is connected.
    let out = tls_worker(&m, "w2", addr, &path_arg("--ca", &certs.ca_cert)).finish(WAIT);
    let stderr = text(&out.stderr);
    assert_ne!(
        code(&out),
        0,
        "w2 without a certificate: {}",
        describe(&out)
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "not one error line:\n{stderr}");
    assert!(errors[0].contains("certificate"), "{}", errors[0]);
    assert!(!stderr.contains(CONNECTED), "{stderr}");
    eprintln!("w2 with no certificate: {}", errors[0]);
    assert!(!connected(&m, "w2"));

    assert!(connected(&m, "w1"));
    assert_eq!(build_log(&m, "b"), "mutual\n");
    drop(w1);
}

/// `bbctl worker-command NAME` prints one line that, run as it is (the
/// program path aside, and the work dir moved into the test's dir), is a
/// worker that connects and builds: over TLS (`tls://`, the fingerprint)
/// and, with `allow_plaintext`, over plain TCP (`tcp://`, no fingerprint).
#[test]
fn worker_command_prints_a_line_that_runs_the_worker() {
    for plaintext in [false, true] {
        let master = if plaintext {
            "worker_listen = [\"127.0.0.1:0\"]\nallow_plaintext = true"
        } else {
            "worker_listen = [\"127.0.0.1:0\"]"
        };
        let m = start_master(master, "echo from the printed line");
        let status = m.bbctl_json(&["status"]);
        assert_eq!(status["tls"]["plaintext"], plaintext, "{status}");
        let addr = status["tls"]["listen"][0].as_str().unwrap().to_string();

        let out = m.bbctl_code(&["worker-command", "w1"], 0);
        let line = text(&out.stdout);
        assert_eq!(line.lines().count(), 1, "not one line: {}", describe(&out));
        let mut args: Vec<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(args[0], "bbworker", "{line}");
        let value = |flag: &str| -> Option<String> {
            let i = args.iter().position(|a| a == flag)?;
            args.get(i + 1).cloned()
        };
        let scheme = if plaintext { "tcp" } else { "tls" };
        assert_eq!(
            value("--master"),
            Some(format!("{scheme}://{addr}")),
            "{line}"
        );
        if plaintext {
            assert_eq!(value("--fingerprint"), None, "{line}");
        } else {
            assert_eq!(
                value("--fingerprint").as_deref(),
                status["tls"]["fingerprint"].as_str(),
                "{line}"
            );
        }
        assert_eq!(value("--name").as_deref(), Some("w1"), "{line}");
        let secret = m.path().join("w1.secret");
        assert_eq!(
            value("--secret-file").map(PathBuf::from),
            Some(secret),
            "{line}"
        );
        assert!(
            !line.contains(W1_SECRET.trim()),
            "the secret is on the line"
        );
        let dir = value("--dir").unwrap_or_else(|| panic!("no --dir: {line}"));
        if !Path::new(&dir).starts_with(m.path()) {
            // Not the test's to create: run it in the test's dir instead.
            let i = args.iter().position(|a| a == "--dir").unwrap();
            args[i + 1] = m.path().join("w-w1").to_string_lossy().into_owned();
        }

        let mut cmd = command(BBWORKER);
        cmd.args(&args[1..]);
        let w = Background::spawn(cmd);
        wait_connected(&m, "w1");
        assert_eq!(build_log(&m, "b"), "from the printed line\n");
        let transport = worker_row(&m, "w1")["transport"].clone();
        assert_eq!(transport, scheme, "plaintext = {plaintext}");
        drop(w);

        let out = m.bbctl(&["worker-command", "nope"]);
        assert_ne!(code(&out), 0, "{}", describe(&out));
        assert!(text(&out.stderr).contains("nope"), "{}", describe(&out));
    }
}

/// A master on 127.0.0.1:0 with `keepalive = "1s"` and `worker_grace =
/// "60s"`, its builder `b` running `shell` (the fault tests: [`STREAM`]),
/// and `w1` connected to it through a [`Proxy`], pinning the fingerprint.
struct Faulty {
    // Dropped in this order: the worker, the proxy, then the master.
    worker: Background,
    proxy: Proxy,
    m: Master,
}

impl Faulty {
    fn start(shell: &str) -> Faulty {
        Faulty::with_keepalive(shell, KEEPALIVE)
    }

    fn with_keepalive(shell: &str, keepalive: Duration) -> Faulty {
        let m = start_master(
            &format!(
                "worker_listen = [\"127.0.0.1:0\"]\nkeepalive = \"{}s\"\nworker_grace = \"60s\"",
                keepalive.as_secs()
            ),
            shell,
        );
        let (addr, fingerprint) = tls_of(&m);
        let proxy = Proxy::start(addr);
        let worker = start_worker_with(
            &tls_worker_args(proxy.addr(), &fingerprint),
            "w1",
            &m.path().join("w1.secret"),
            &m.path().join("w-w1"),
            &[],
        );
        wait_connected(&m, "w1");
        Faulty { worker, proxy, m }
    }

    /// How many lines of build 1's log the master has.
    fn lines(&self) -> usize {
        let out = self.m.bbctl(&["log", "1"]);
        if code(&out) != 0 {
            return 0;
        }
        text(&out.stdout).lines().count()
    }

    /// Start build 1 and wait until the master has `n` lines of it.
    fn start_build(&self, n: usize) {
        assert_eq!(self.m.force_build("b"), 1);
        self.wait_lines(n);
    }

    /// Wait until the master has `n` lines of build 1 (output flows).
    fn wait_lines(&self, n: usize) {
        wait_until(&format!("{n} lines of build 1's log"), WAIT, || {
            self.lines() >= n
        });
    }

    /// Let the step end; then build 1 ends `success`, it is the only build,
    /// its log is exactly what the step printed, and the step ran once.
    fn finish_and_check(&self, what: &str) {
        let m = &self.m;
        fs::write(m.path().join("go"), "").unwrap();
        let b = wait_finished(m, 1);
        assert_eq!(b["result"], "success", "{what}: {b}\n{}", m.stderr());
        let builds = m.bbctl_json(&["builds", "--limit", "100"]);
        let all: Vec<(u64, u64)> = builds
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["id"].as_u64().unwrap(), b["request_id"].as_u64().unwrap()))
            .collect();
        assert_eq!(all, [(1, 1)], "{what}: not one build: {builds}");
        let log = m.bbctl_ok(&["log", "1"]);
        let printed = fs::read_to_string(m.path().join("printed")).unwrap();
        assert!(
            printed.ends_with("end\n"),
            "{what}: the step did not finish"
        );
        if log != printed {
            let first = log
                .lines()
                .zip(printed.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(log.lines().count().min(printed.lines().count()));
            panic!(
                "{what}: the log ({} lines) is not what the step printed ({} lines); first difference at line {}:\n  log:     {:?}\n  printed: {:?}",
                log.lines().count(),
                printed.lines().count(),
                first + 1,
                log.lines().nth(first),
                printed.lines().nth(first)
            );
        }
        let runs = fs::read_to_string(m.path().join("runs")).unwrap();
        assert_eq!(runs, "ran\n", "{what}: the step ran more than once");
        eprintln!(
            "{what}: {} lines whole; {} links accepted by the proxy",
            printed.lines().count(),
            self.proxy.accepted()
        );
    }
}

/// The link dropped (both sides reset) mid-build, and new connections
/// refused for a while: the worker retries with a backoff (not a tight
/// loop), comes back, and the build's output resumes where it stopped.
#[test]
fn a_link_dropped_mid_build_resumes_and_loses_nothing() {
    let f = Faulty::start(STREAM);
    f.start_build(5);
    f.proxy.refuse_new(true);
    f.proxy.drop_all();
    let dropped = Instant::now();
    wait_until("the master to notice the dropped link", NOTICE, || {
        !connected(&f.m, "w1")
    });
    // It tries again, soon (the master may be restarting) but with a
    // growing, jittered delay: five attempts take at least 50 + 100 +
    // 125 + 125 + 125 ms, where a tight loop would take a few.
    wait_until("the worker to try again, five times", WAIT, || {
        f.proxy.refused() >= 5
    });
    let took = dropped.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "five attempts within {took:?}: a tight loop"
    );
    eprintln!("dropped link: five refused attempts within {took:?}");
    f.proxy.refuse_new(false);
    wait_connected(&f.m, "w1");
    let before = f.lines();
    f.wait_lines(before + 5);
    f.finish_and_check("dropped link");
    assert!(f.proxy.accepted() >= 2);
}

/// The link cut in the middle of a chunk (a TLS record cut short): both
/// sides drop it, the worker reconnects, nothing is lost or doubled.
#[test]
fn a_link_cut_mid_frame_resumes_and_loses_nothing() {
    let f = Faulty::start(STREAM);
    f.start_build(5);
    f.proxy.cut_mid_frame();
    wait_until("the cut", WAIT, || f.proxy.cuts() == 1);
    wait_until("the worker to reconnect", WAIT, || {
        f.proxy.accepted() >= 2 && connected(&f.m, "w1")
    });
    let before = f.lines();
    f.wait_lines(before + 5);
    f.finish_and_check("cut mid-frame");
}

/// A link that stops passing data without closing (half-open): the master
/// marks the worker gone, and the worker gives the link up and dials
/// again, each within three keepalive intervals (plus slack); once the
/// path heals the worker is back and the build, still running, ends once
/// with its whole log.
#[test]
fn a_silent_half_open_link_is_noticed_by_both_sides() {
    let f = Faulty::start(STREAM);
    f.start_build(5);
    f.proxy.stall();
    let stalled = Instant::now();
    let mut master_noticed = None;
    let mut worker_noticed = None;
    wait_until("both sides to notice the stalled link", NOTICE, || {
        if master_noticed.is_none() && !connected(&f.m, "w1") {
            master_noticed = Some(stalled.elapsed());
        }
        // A second connection through the proxy: the worker gave up the
        // first (the stall holds the new one's handshake too).
        if worker_noticed.is_none() && f.proxy.accepted() >= 2 {
            worker_noticed = Some(stalled.elapsed());
        }
        master_noticed.is_some() && worker_noticed.is_some()
    });
    eprintln!(
        "half-open link noticed by the master after {master_noticed:?}, by the worker after {worker_noticed:?} (keepalive {KEEPALIVE:?})"
    );
    f.proxy.unstall();
    wait_connected(&f.m, "w1");
    let before = f.lines();
    f.wait_lines(before + 5);
    f.finish_and_check("half-open link");
}

/// 150 ms each way on every chunk: the link stays up (one connection),
/// `bbctl workers` shows the round trip, and the build ends once, whole.
#[test]
fn a_slow_link_stays_up_and_loses_nothing() {
    let f = Faulty::start(STREAM);
    f.proxy.delay(Duration::from_millis(150));
    f.start_build(20);
    let mut rtt = Value::Null;
    wait_until("a measured ping round trip", WAIT, || {
        rtt = worker_row(&f.m, "w1")["ping_rtt_ms"].clone();
        rtt.as_f64().is_some_and(|ms| ms >= 250.0)
    });
    f.finish_and_check("slow link");
    assert_eq!(f.proxy.accepted(), 1, "the slow link was dropped");
    eprintln!("ping round trip through a 150 ms delay each way: {rtt} ms");
}

/// The master killed (`kill -9`) mid-build behind the proxy and restarted
/// (on a new port the proxy now forwards to; the same certificate): the
/// worker reconnects through the proxy, the build is re-adopted and ends
/// once, with its whole log.
#[test]
fn a_master_restart_behind_the_proxy_loses_nothing() {
    let mut f = Faulty::start(STREAM);
    let (_, fingerprint) = tls_of(&f.m);
    f.start_build(5);
    f.m.kill9();
    f.m.spawn();
    let (addr, again) = tls_of(&f.m);
    assert_eq!(
        again, fingerprint,
        "the restarted master has a new certificate"
    );
    f.proxy.set_target(addr);
    wait_connected(&f.m, "w1");
    let before = f.lines();
    f.wait_lines(before + 5);
    f.finish_and_check("master restart");
}

/// One worker, one link: `w1`'s link through the proxy goes silent
/// (stalled) and a second `w1` dials the master directly. The master
/// pings the old link, gets no answer, drops it and the new one wins
/// (builds run in its work dir) well before the keepalive (10 s here, so
/// 30 s) would have noticed; once the path heals, the first worker hears
/// it was replaced and leaves, and the new one serves on.
#[test]
fn a_silent_old_link_loses_to_a_new_link_of_the_same_worker() {
    let f = Faulty::with_keepalive("pwd", Duration::from_secs(10));
    let old_peer = worker_row(&f.m, "w1")["peer"].clone();
    assert!(old_peer.is_string(), "no peer: {old_peer}");
    f.proxy.stall();
    let (addr, fingerprint) = tls_of(&f.m);
    let second_dir = f.m.path().join("second");
    let started = Instant::now();
    let _second = start_worker_with(
        &tls_worker_args(addr, &fingerprint),
        "w1",
        &f.m.path().join("w1.secret"),
        &second_dir,
        &[],
    );
    wait_until("the new link to win", Duration::from_secs(12), || {
        let row = worker_row(&f.m, "w1");
        row["connected"] == true && row["peer"] != old_peer
    });
    eprintln!("the new link won after {:?}", started.elapsed());
    assert_eq!(
        build_log(&f.m, "b"),
        format!("{}\n", second_dir.join("b").display())
    );
    f.proxy.unstall();
    let out = f.worker.finish(WAIT);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("replaced"), "{}", describe(&out));
    assert_eq!(
        build_log(&f.m, "b"),
        format!("{}\n", second_dir.join("b").display())
    );
}
