//! Starting a master: signals in its first moments, local workers run from
//! the master's own executable, their logs, their reconnection, keepalive.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use bbctl::protocol::frame::{decode, encode};
use bbctl::protocol::{Hello, HelloReply, MasterToWorker, Role, WorkerToMaster};

use crate::harness::{
    BBMASTER, EXIT_TIMEOUT, Master, STARTUP_TIMEOUT, command, process_gone, temp_dir, wait_child,
    wait_until,
};

/// A master with no local worker: quick to start, nothing left behind.
const REMOTE_ONLY: &str = r#"
[[worker]]
name = "w"
secret = "s-0123456789abcdef"

[[builder]]
name = "b"
workers = ["w"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;

/// Spin (no sleep: the window is short) until `path` exists.
fn spin_until_exists(path: &Path, pid: i32) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !path.exists() {
        assert!(
            !process_gone(pid),
            "bbmaster {pid} died before {} appeared",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {STARTUP_TIMEOUT:?}",
            path.display()
        );
        std::hint::spin_loop();
    }
}

/// Start `bbmaster` on `REMOTE_ONLY` in a new temp dir (state in `s/`,
/// stderr in `master.log`) without waiting for anything: for tests that
/// act in the very first moments of its life.
fn launch_raw() -> (tempfile::TempDir, std::process::Child) {
    let dir = temp_dir();
    let config = dir.path().join("master.toml");
    std::fs::write(&config, REMOTE_ONLY).unwrap();
    let mut cmd = command(BBMASTER);
    cmd.arg("--state-dir")
        .arg(dir.path().join("s"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("master.log")).unwrap());
    let child = cmd.spawn().expect("cannot start bbmaster");
    (dir, child)
}

/// A SIGHUP sent at the earliest moment a script could see the master (its
/// lock file, then its control socket, appearing) never kills it: the
/// handlers are installed before anything is bound. Thirty masters, each
/// must survive the signal and then stop cleanly on SIGTERM.
#[test]
fn sighup_at_start_never_kills_the_master() {
    for round in 0..30 {
        let (dir, mut child) = launch_raw();
        let (state, log) = (dir.path().join("s"), dir.path().join("master.log"));
        let pid = child.id() as i32;
        // Alternate the moment: the lock file appears before any socket.
        let seen = if round % 2 == 0 {
            state.join("control.sock")
        } else {
            state.join("bbmaster.lock")
        };
        spin_until_exists(&seen, pid);
        kill(Pid::from_raw(pid), Signal::SIGHUP).expect("cannot send SIGHUP");
        // Still alive and serving: a bbctl status answers.
        let socket = state.join("control.sock");
        wait_until("the control socket", STARTUP_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "round {round}: bbmaster died after an early SIGHUP ({status})\n--- its log\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        let mut status = command(crate::harness::BBCTL);
        status.arg("--socket").arg(&socket).arg("status");
        let out = crate::harness::run_with_timeout(status, crate::harness::BBCTL_TIMEOUT);
        assert!(
            out.status.success(),
            "round {round}: {}\n--- master log\n{}",
            crate::harness::describe(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("cannot send SIGTERM");
        let exit = wait_child(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("round {round}: bbmaster ignored SIGTERM")
        });
        assert!(
            exit.success(),
            "round {round}: bbmaster exited with {exit}\n--- its log\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

/// A SIGTERM at the earliest moment stops the master cleanly (exit 0, not
/// killed by the signal), ten times.
#[test]
fn sigterm_at_start_stops_the_master_cleanly() {
    for round in 0..10 {
        let (dir, mut child) = launch_raw();
        let (state, log) = (dir.path().join("s"), dir.path().join("master.log"));
        let pid = child.id() as i32;
        spin_until_exists(&state.join("bbmaster.lock"), pid);
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("cannot send SIGTERM");
        let exit = wait_child(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("round {round}: bbmaster ignored an early SIGTERM")
        });
        assert!(
            exit.success(),
            "round {round}: bbmaster exited with {exit}\n--- its log\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}

/// A worker that answers one ping and then says nothing at all (a frozen
/// process, a half-open link) is dropped three keepalive intervals after
/// the master last heard from it, as docs/durability.md says: at
/// `keepalive = "1s"`, about 3 s after its last word, not 4.
#[test]
fn a_silent_worker_is_dropped_after_three_intervals() {
    use std::io::{Read, Write};
    let m = Master::start(&format!("[master]\nkeepalive = \"1s\"\n{REMOTE_ONLY}"));
    let mut s = std::os::unix::net::UnixStream::connect(m.worker_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello::new(Role::Worker {
        name: "w".into(),
        running: vec![],
        host: None,
    });
    s.write_all(&encode(&hello).unwrap()).unwrap();
    let mut r = s.try_clone().unwrap();
    let mut frame = || -> Option<Vec<u8>> {
        let mut prefix = [0u8; 4];
        r.read_exact(&mut prefix).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        r.read_exact(&mut body).ok()?;
        Some(body)
    };
    let challenge = frame().expect("a challenge");
    let Ok(HelloReply::Challenge { nonce }) = decode::<HelloReply>(&challenge) else {
        panic!("no challenge: {:?}", decode::<HelloReply>(&challenge));
    };
    let mac = bbctl::protocol::proof::prove("s-0123456789abcdef", &nonce, "w", &[]);
    s.write_all(&encode(&bbctl::protocol::WorkerProof { mac }).unwrap())
        .unwrap();
    let welcome = frame().expect("an answer to the hello");
    assert!(
        matches!(
            decode::<HelloReply>(&welcome),
            Ok(HelloReply::Welcome { .. })
        ),
        "not welcomed: {:?}",
        decode::<HelloReply>(&welcome)
    );
    // Answer the first ping, then, half an interval later (a worker pings
    // at its own phase), say a last word of our own and fall silent.
    let first = frame().expect("a first ping");
    let Ok(MasterToWorker::Ping { seq }) = decode::<MasterToWorker>(&first) else {
        panic!("the first frame after the welcome is no ping");
    };
    let mut w = s.try_clone().unwrap();
    w.write_all(&encode(&WorkerToMaster::Pong { seq }).unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    w.write_all(&encode(&WorkerToMaster::Ping { seq: 1 }).unwrap())
        .unwrap();
    let welcomed = Instant::now();
    let mut frame = || -> Option<Vec<u8>> {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        s.read_exact(&mut body).ok()?;
        Some(body)
    };
    let mut pings = 0;
    while let Some(body) = frame() {
        if matches!(
            decode::<MasterToWorker>(&body),
            Ok(MasterToWorker::Ping { .. })
        ) {
            pings += 1;
        }
        assert!(
            welcomed.elapsed() < Duration::from_secs(10),
            "the master never dropped a silent worker"
        );
    }
    let dropped = welcomed.elapsed();
    assert!(
        dropped >= Duration::from_millis(2900) && dropped < Duration::from_millis(3300),
        "a worker silent since its last ping was dropped after {dropped:?} ({pings} pings); want 3 s (three intervals)"
    );
    wait_until("the master's log of the lost link", STARTUP_TIMEOUT, || {
        m.stderr().contains("link lost")
    });
}

/// The README's first command builds only `bbmaster`: a copy of it alone
/// in a directory (no `bbworker` beside it) runs the embedded default's
/// local worker from its own executable, and a build succeeds. The local
/// worker's log goes to `<state_dir>/workers/local-1.log`, not to the
/// master's stderr.
#[test]
fn the_master_alone_runs_its_local_worker() {
    let m = Master::start_default_alone();
    assert!(!m.path().join("bin/bbworker").exists());
    m.bbctl_code(&["force-build", "hello", "--wait"], 0);
    let s = m.bbctl_json(&["status"]);
    let w = &s["workers"][0];
    assert_eq!(w["name"], "local-1", "{s}");
    assert_eq!(w["connected"], true, "{s}");
    assert!(w["last_error"].is_null(), "{s}");
    // The worker is the copied master, in worker mode.
    let pid = m.bbctl_json(&["workers"])[0]["pid"]
        .as_i64()
        .expect("the local worker's pid") as i32;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, m.path().join("bin/bbmaster"));
    let log = m.state_dir().join("workers/local-1.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("connected to the master"), "{log:?}: {text}");
    assert!(
        !m.stderr().contains("connected to the master"),
        "the local worker logged to the master's stderr:\n{}",
        m.stderr()
    );
}

/// A local worker that cannot start is shown offline with the reason, in
/// `status --json` (`last_error`) and in the human `status`.
#[test]
fn an_offline_local_worker_says_why() {
    let m = Master::start_with_env(
        LOCAL_ONLY,
        &[("BBMASTER_WORKER_EXE", "/nonexistent/bbworker")],
    );
    let mut why = String::new();
    wait_until("a start error in status", STARTUP_TIMEOUT, || {
        let s = m.bbctl_json(&["status"]);
        why = s["workers"][0]["last_error"].as_str().unwrap_or("").into();
        !why.is_empty()
    });
    assert!(
        why.contains("/nonexistent/bbworker") && why.contains("No such file"),
        "{why}"
    );
    let human = m.bbctl_ok(&["status"]);
    assert!(human.contains(&format!("worker local-1: {why}")), "{human}");
}

/// A local worker that exits at once: the reason is what it last logged.
#[test]
fn a_local_worker_that_exits_says_why() {
    let m = Master::start_with_env(LOCAL_ONLY, &[("BBMASTER_WORKER_EXE", "/bin/false")]);
    let mut why = String::new();
    wait_until("an exit reason in status", STARTUP_TIMEOUT, || {
        let s = m.bbctl_json(&["status"]);
        why = s["workers"][0]["last_error"].as_str().unwrap_or("").into();
        !why.is_empty()
    });
    assert!(why.starts_with("exited (exit status: 1)"), "{why}");
}

const LOCAL_ONLY: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "b"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo hi"
"#;

/// SIGTERM (like Ctrl-C) on a master with a local worker: one line says
/// the worker keeps running for the next master and how to stop it; the
/// worker's "cannot reach the master" retries go to its own log in the
/// state dir, not to the master's stderr (the terminal it was started in).
#[test]
fn a_stopped_master_says_its_local_workers_keep_running() {
    let mut m = Master::start(LOCAL_ONLY);
    m.bbctl_code(&["force-build", "b", "--wait"], 0);
    m.signal(Signal::SIGTERM);
    assert!(m.wait_exit(EXIT_TIMEOUT).success(), "{}", m.stderr());
    let said: Vec<String> = m
        .stderr()
        .lines()
        .filter(|l| l.contains("keep running"))
        .map(str::to_string)
        .collect();
    assert_eq!(said.len(), 1, "{}", m.stderr());
    assert!(
        said[0].contains("local-1")
            && said[0].contains("re-adopt")
            && said[0].contains(&format!(
                "kill $(cat {}/local-workers/*.pid)",
                m.state_dir().display()
            )),
        "{}",
        said[0]
    );
    let log = m.state_dir().join("workers/local-1.log");
    wait_until(
        "the worker's retries in its own log",
        STARTUP_TIMEOUT,
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("cannot reach the master")),
    );
    assert!(
        !m.stderr().contains("cannot reach the master"),
        "{}",
        m.stderr()
    );
}

/// A master restarted while a local worker runs a build, with
/// `worker_grace = "3s"`: the worker is back within a fraction of a second
/// of the new master (its reconnect back-off was reset by the link that
/// worked), so the build is re-adopted and succeeds once, not retried.
/// The master stays down for 6.8 s on purpose: with a back-off that kept
/// doubling while it was away, the worker's next try would come about
/// 4.5 s after the new master started, past the grace period.
#[test]
fn a_quick_restart_re_adopts_the_local_workers_build() {
    let config = format!(
        "[master]\nworker_grace = \"3s\"\n{}",
        LOCAL_ONLY.replace(
            "shell = \"echo hi\"",
            "shell = \"echo $$ > @DIR@/pid; while [ ! -e @DIR@/go ]; do sleep 0.05; done; echo done\""
        )
    );
    let mut m = Master::start(&config);
    m.force_build("b");
    crate::harness::wait_for_line_in(&m.path().join("pid"), STARTUP_TIMEOUT);
    m.signal(Signal::SIGTERM);
    assert!(m.wait_exit(EXIT_TIMEOUT).success(), "{}", m.stderr());
    std::thread::sleep(Duration::from_millis(6800));
    m.spawn();
    let started = Instant::now();
    wait_until("the local worker back", Duration::from_secs(10), || {
        m.bbctl_json(&["status"])["workers"][0]["connected"] == true
    });
    let back = started.elapsed();
    std::fs::write(m.path().join("go"), "").unwrap();
    wait_until("build 1 to finish", Duration::from_secs(20), || {
        !m.bbctl_json(&["build", "1"])["result"].is_null()
    });
    let builds = m.bbctl_json(&["builds"]);
    let results: Vec<&str> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        results,
        ["success"],
        "worker back {back:?} after the restart; builds: {builds}\n{}",
        m.stderr()
    );
    assert!(back < Duration::from_secs(2), "worker back after {back:?}");
}

/// A local worker frozen by SIGSTOP is noticed by keepalive like any
/// worker, killed (its process group) and replaced by a new one, which
/// then runs builds; its step does not live on (the guard kills it).
#[test]
fn a_frozen_local_worker_is_killed_and_restarted() {
    let config = format!(
        "[master]\nkeepalive = \"300ms\"\nworker_grace = \"1s\"\n{}",
        LOCAL_ONLY.replace(
            "shell = \"echo hi\"",
            "shell = \"if [ -e @DIR@/pid ]; then echo again; else echo started; echo $$ > @DIR@/pid; sleep 60; fi\""
        )
    );
    let m = Master::start(&config);
    m.force_build("b");
    let step: i32 = crate::harness::wait_for_line_in(&m.path().join("pid"), STARTUP_TIMEOUT)
        .parse()
        .unwrap();
    // Output at the master means the worker registered the step with its
    // guard (it does so before it reads any output).
    wait_until("the step's output at the master", STARTUP_TIMEOUT, || {
        m.bbctl(&["log", "1"]).stdout.starts_with(b"started")
    });
    let pid_file = m.state_dir().join("local-workers/local-1.pid");
    let old: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(old), Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    crate::harness::wait_gone(old, Duration::from_secs(5));
    let noticed = frozen.elapsed();
    wait_until(
        "a new local worker connected",
        Duration::from_secs(10),
        || {
            let s = m.bbctl_json(&["status"]);
            s["workers"][0]["connected"] == true
                && std::fs::read_to_string(&pid_file)
                    .is_ok_and(|p| p.trim().parse::<i32>().is_ok_and(|p| p != old))
        },
    );
    crate::harness::wait_gone(step, Duration::from_secs(5));
    assert!(m.stderr().contains("local worker frozen"), "{}", m.stderr());
    // The build was retried on the new worker, and ran there.
    wait_until(
        "the retried build to succeed",
        Duration::from_secs(20),
        || {
            m.bbctl_json(&["builds"])
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["result"] == "success")
        },
    );
    assert!(noticed < Duration::from_secs(3), "killed after {noticed:?}");
}
