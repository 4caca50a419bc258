//! Storage faults while output is written (docs/durability.md): a full
//! disk under the master's state dir or under the worker's dir ends the
//! build `exception` naming the cause, with a marker in the log, never
//! `success` with a shorter log; when space returns new builds work. Also
//! the start checks on the state dir (logs ahead of the database, a
//! corrupt database) and leftover partial files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    EXIT_TIMEOUT, Master, code, describe, run_with_timeout, start_worker_in, text, wait_until,
};

/// How long a build's end may take.
const WAIT: Duration = Duration::from_secs(30);

/// A master with one remote worker `w1` and two builders: `big` prints
/// `big` bytes, `small` prints one line.
fn config(big: u64) -> String {
    format!(
        r#"
[master]
max_log_size = "64MB"

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "big"
workers = ["w1"]
  [[builder.step]]
  name = "s"
  shell = "head -c {big} /dev/zero | tr '\\0' x; echo; echo done"

[[builder]]
name = "small"
workers = ["w1"]
  [[builder.step]]
  name = "s"
  shell = "echo small output"
"#
    )
}

/// Unmounts a tmpfs when dropped (lazily, so a leftover process cannot
/// keep it busy).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Mount a tmpfs of `size` on `dir` (created), or `None` (and a SKIPPED
/// line) where that is not allowed (not root).
pub fn mount_tmpfs(dir: &Path, size: &str, test: &str) -> Option<impl Drop + use<>> {
    fs::create_dir_all(dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("SKIPPED {test}: cannot mount a tmpfs here (not root?)");
        eprintln!("SKIPPED {test}: cannot mount a tmpfs here (not root?)");
        return None;
    }
    Some(Tmpfs(dir.to_path_buf()))
}

/// Wait (bounded) until build `id` has a result; its `builds --json` entry.
pub fn wait_finished(m: &Master, id: u64) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("build {id} to finish"), WAIT, || {
        let v = m.bbctl_json(&["builds", "--limit", "1000"]);
        match v.as_array().unwrap().iter().find(|b| b["id"] == id) {
            Some(b) if !b["result"].is_null() => {
                found = b.clone();
                true
            }
            _ => false,
        }
    });
    found
}

/// Run `builder` to its end; its `builds --json` entry and its log.
fn run(m: &Master, builder: &str) -> (Value, String) {
    let id = m.force_build(builder);
    let b = wait_finished(m, id);
    let log = m.bbctl_ok(&["log", &id.to_string()]);
    (b, log)
}

/// A step prints more than the master's state dir can hold: the build is
/// `exception` naming "disk full", the log ends with the marker line, the
/// master keeps running, and once space is freed a new build succeeds.
#[test]
fn a_full_disk_under_the_master_ends_the_build_as_exception_with_a_marker() {
    let mut m = Master::start_with_files(
        &config(8_000_000),
        &[("w1.secret", "w1-secret-0123456789\n")],
    );
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
    let state = m.state_dir();
    let Some(_tmpfs) = mount_tmpfs(&state, "4m", "a_full_disk_under_the_master...") else {
        return;
    };
    m.spawn();
    let _worker = start_worker_in(&m, "w1", &m.path().join("w1.secret"), &m.path().join("w"));
    let (b, log) = run(&m, "big");
    assert_eq!(b["result"], "exception", "{b}");
    let reason = b["reason"].as_str().unwrap_or("");
    assert!(reason.contains("disk full"), "{b}");
    assert!(
        log.contains("[bbmaster: output lost from here: disk full"),
        "no marker at the end of a {}-byte log: ...{}",
        log.len(),
        &log[log.len().saturating_sub(300)..]
    );
    assert!(!log.contains("done"), "the log has the step's end");

    // The operator frees space; nothing else is needed.
    fs::remove_dir_all(state.join("logs").join("1")).unwrap();
    let (b, log) = run(&m, "small");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(log, "small output\n");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
}

/// A step prints more than the worker's dir can hold: the build is
/// `exception` naming "disk full" on the worker, the master's log has the
/// marker, and the next build (the spool freed) succeeds.
#[test]
fn a_full_disk_under_the_worker_ends_the_build_as_exception_with_a_marker() {
    let mut m = Master::start_with_files(
        &config(3_000_000),
        &[("w1.secret", "w1-secret-0123456789\n")],
    );
    let work = m.path().join("w");
    let Some(_tmpfs) = mount_tmpfs(&work, "1m", "a_full_disk_under_the_worker...") else {
        return;
    };
    let _worker = start_worker_in(&m, "w1", &m.path().join("w1.secret"), &work);
    let (b, log) = run(&m, "big");
    assert_eq!(b["result"], "exception", "{b}");
    let reason = b["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("disk full") && reason.contains("spool"),
        "{b}"
    );
    assert!(
        log.contains("[bbmaster: output lost from here: on the worker: disk full"),
        "no marker at the end of a {}-byte log: ...{}",
        log.len(),
        &log[log.len().saturating_sub(300)..]
    );
    let (b, log) = run(&m, "small");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(log, "small output\n");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
}

/// Start `m`'s master again and expect it to refuse at once, with one
/// error line on stderr containing every one of `needles`.
fn refuses(m: &Master, needles: &[&str]) {
    let started = std::time::Instant::now();
    let out = run_with_timeout(m.master_command(), Duration::from_secs(10));
    assert_ne!(code(&out), 0, "bbmaster started anyway: {}", describe(&out));
    assert!(started.elapsed() < Duration::from_secs(5), "slow refusal");
    let err = text(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" WARN "))
        .collect();
    assert_eq!(lines.len(), 1, "not one error line on stderr: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    }
}

/// Remove the database and its WAL files.
fn remove_db(state: &Path) {
    for name in ["master.db", "master.db-wal", "master.db-shm"] {
        let _ = fs::remove_file(state.join(name));
    }
}

/// A database behind its logs (restored from an older backup, deleted,
/// emptied) is refused at start with the way out; a build id whose log
/// exists is never handed out again. Following the way out works.
#[test]
fn logs_ahead_of_the_database_are_refused_at_start() {
    let mut m = Master::start_with_files(&config(10), &[("w1.secret", "w1-secret-0123456789\n")]);
    let _worker = start_worker_in(&m, "w1", &m.path().join("w1.secret"), &m.path().join("w"));
    let state = m.state_dir();
    assert_eq!(run(&m, "small").0["result"], "success");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
    let backup = m.path().join("backup.db");
    fs::copy(state.join("master.db"), &backup).unwrap();
    m.spawn();
    assert_eq!(run(&m, "small").0["result"], "success");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
    let newest = fs::read(state.join("master.db")).unwrap();

    // Restored from the older backup.
    remove_db(&state);
    fs::copy(&backup, state.join("master.db")).unwrap();
    refuses(&m, &["holds build 2", "up to 1", "logs", "mv "]);
    // Deleted.
    remove_db(&state);
    refuses(&m, &["holds build 2", "up to 0"]);
    // Emptied.
    remove_db(&state);
    fs::write(state.join("master.db"), b"").unwrap();
    refuses(&m, &["holds build 2", "up to 0"]);

    // The right database back: it starts, and the next build is 3.
    remove_db(&state);
    fs::write(state.join("master.db"), &newest).unwrap();
    m.spawn();
    assert_eq!(m.force_build("small"), 3);
    wait_finished(&m, 3);
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);

    // The way out for a lost database: move the logs aside.
    remove_db(&state);
    refuses(&m, &["holds build 3"]);
    fs::rename(state.join("logs"), state.join("logs.stale")).unwrap();
    m.spawn();
    let (b, log) = run(&m, "small");
    assert_eq!(b["id"], 1, "{b}");
    assert_eq!(log, "small output\n");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
}

/// Copy a directory tree (files and dirs only).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Start `m`'s master on its state dir: `Err(stderr)` if it exits first
/// (a refusal), `Ok(child)` once its control socket answers.
fn start_or_refuse(m: &Master) -> Result<std::process::Child, String> {
    let err_path = m.path().join("attempt.err");
    let mut cmd = m.master_command();
    cmd.stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "bbmaster exited 0 at start");
            return Err(fs::read_to_string(&err_path).unwrap_or_default());
        }
        if std::os::unix::net::UnixStream::connect(m.control_socket()).is_ok() {
            return Ok(child);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bbmaster neither started nor refused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every page of a real `master.db` in turn overwritten with garbage: the
/// master refuses at start with one clear line, or it starts with every
/// build intact and records a new one; never a start that a later write
/// stops.
#[test]
fn a_corrupt_page_anywhere_in_the_database_is_refused_or_harmless() {
    let mut m = Master::start_with_files(&config(10), &[("w1.secret", "w1-secret-0123456789\n")]);
    let worker = start_worker_in(&m, "w1", &m.path().join("w1.secret"), &m.path().join("w"));
    // Enough history that a start reading only what it needs (the queue,
    // the running builds, the highest ids) would not touch every page.
    let reason = "r".repeat(1500);
    for _ in 0..40 {
        m.bbctl_json(&["force-build", "small", "--reason", &reason]);
    }
    wait_finished(&m, 40);
    let builds = m.bbctl_json(&["builds", "--limit", "1000"]);
    // Every build in full, its request's reason included.
    let details: Vec<String> = (1..=40)
        .map(|id| m.bbctl_ok(&["--json", "build", &id.to_string()]))
        .collect();
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
    drop(worker);
    let state = m.state_dir();
    let wal = state.join("master.db-wal");
    assert!(
        !wal.exists() || fs::metadata(&wal).unwrap().len() == 0,
        "the WAL was not checkpointed at shutdown"
    );
    let pristine = m.path().join("pristine");
    copy_tree(&state, &pristine);
    let db = fs::read(pristine.join("master.db")).unwrap();
    let page = u16::from_be_bytes([db[16], db[17]]) as usize;
    let pages = db.len() / page;
    assert!(pages >= 4, "a database of {pages} pages");
    let (mut refused, mut started) = (0, 0);
    for n in 0..pages {
        fs::remove_dir_all(&state).unwrap();
        copy_tree(&pristine, &state);
        let mut bad = db.clone();
        let mut x = 0x9e37_79b9_u32 ^ n as u32;
        for b in &mut bad[n * page..(n + 1) * page] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        fs::write(state.join("master.db"), &bad).unwrap();
        match start_or_refuse(&m) {
            Err(stderr) => {
                let lines: Vec<&str> = stderr
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.contains(" WARN "))
                    .collect();
                assert_eq!(lines.len(), 1, "page {n}: not one line: {stderr}");
                assert!(lines[0].contains("master.db"), "page {n}: {stderr}");
                refused += 1;
            }
            Ok(mut child) => {
                let now = m.bbctl_json(&["builds", "--limit", "1000"]);
                assert_eq!(now, builds, "page {n}: started with other data");
                for (i, detail) in details.iter().enumerate() {
                    let out = m.bbctl(&["--json", "build", &(i + 1).to_string()]);
                    assert_eq!(
                        text(&out.stdout),
                        *detail,
                        "page {n}: the master started, then build {} reads otherwise: {}",
                        i + 1,
                        describe(&out)
                    );
                }
                let out = m.bbctl(&["force-build", "small"]);
                assert_eq!(code(&out), 0, "page {n}: {}", describe(&out));
                m.bbctl_code(&["shutdown"], 0);
                let status = crate::harness::wait_child(&mut child, EXIT_TIMEOUT);
                assert!(
                    status.is_some_and(|s| s.success()),
                    "page {n}: the master stopped badly ({status:?}) after a write"
                );
                started += 1;
            }
        }
    }
    eprintln!("{pages} pages: {refused} refused, {started} harmless");
}

/// Download temp files a killed worker left (`.partial-<name>-<pid>-...`)
/// are swept at the worker's start and before each transfer step, and an
/// upload of their directory succeeds.
#[test]
fn leftover_partial_files_never_fail_a_later_build() {
    let m = Master::start_with_files(
        r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "up"
workers = ["w1"]
  [[builder.step]]
  name = "make"
  shell = "mkdir -p out && echo hi > out/a.txt"
  [[builder.step]]
  name = "publish"
  upload = { from = "out" }
"#,
        &[("w1.secret", "w1-secret-0123456789\n")],
    );
    let work = m.path().join("w");
    let out = work.join("up/out");
    fs::create_dir_all(out.join("sub")).unwrap();
    let at_start = out.join("sub/.partial-a.bin-4000000-7-2");
    fs::write(&at_start, b"half a file").unwrap();
    let _worker = start_worker_in(&m, "w1", &m.path().join("w1.secret"), &work);
    let (b, log) = run(&m, "up");
    assert_eq!(b["result"], "success", "{b}\n{log}");
    assert!(!at_start.exists(), "not swept at the worker's start");

    // One left while the worker runs (another worker process on this dir).
    let later = out.join(".partial-b.bin-4000001-8-2");
    fs::write(&later, b"half a file").unwrap();
    let (b, log) = run(&m, "up");
    assert_eq!(b["result"], "success", "{b}\n{log}");
    assert!(!later.exists(), "not swept before the transfer step");
    let list = m.bbctl_json(&["artifacts", &b["id"].to_string()]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

/// `bbctl reload --config FIFO`: the file is read off the master loop, so
/// `status` keeps answering; the reload is refused after the bound, naming
/// why; a second one still pending does not hold up SIGTERM.
#[test]
fn a_reload_from_a_fifo_does_not_freeze_the_master() {
    let mut m = Master::start(&config(10).replace(
        "secret_file = \"@DIR@/w1.secret\"",
        "secret = \"s-0123456789abcdef\"",
    ));
    let fifo = m.path().join("config.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_arg = fifo.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let reload = m.bbctl_spawn(&["reload", "--config", &fifo_arg]);
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        m.bbctl_ok(&["status"]);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "status took {:?} during the reload",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = reload.finish(Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(code(&out), 5, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("could not be read within"),
        "{}",
        describe(&out)
    );
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    // The master goes on, on its config.
    assert_eq!(m.force_build("small"), 1);

    // SIGTERM while a reload waits on the FIFO: a prompt stop.
    let _pending = m.bbctl_spawn(&["reload", "--config", &fifo_arg]);
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    m.signal(nix::sys::signal::Signal::SIGTERM);
    m.wait_exit(Duration::from_secs(3));
    assert!(asked.elapsed() < Duration::from_secs(3));
}

/// The master out of file descriptors: `accept` fails while clients
/// queue; the master says so once (not once a retry), and answers again
/// once descriptors are back.
#[test]
fn fd_exhaustion_is_logged_once_and_survived() {
    let m = Master::start(&config(10).replace(
        "secret_file = \"@DIR@/w1.secret\"",
        "secret = \"s-0123456789abcdef\"",
    ));
    let pid = m.pid().to_string();
    let open = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = |n: usize| {
        let status = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(&pid)
            .arg(format!("--nofile={n}:"))
            .status();
        status.is_ok_and(|s| s.success())
    };
    if !limit(open) {
        println!("SKIPPED fd_exhaustion...: prlimit is not available");
        return;
    }
    let clients: Vec<_> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::connect(m.control_socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let warned = m
        .stderr()
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(limit(1024), "cannot raise the limit again");
    drop(clients);
    m.bbctl_ok(&["status"]);
    let log = m.stderr();
    // One streak, one warning; a second only if a descriptor the master
    // closed meanwhile let one accept through (the old code warned at
    // every retry: about 8 times in 4 s).
    assert!(
        (1..=2).contains(&warned),
        "{warned} warnings for one streak:\n{log}"
    );
    assert!(log.contains("out of file descriptors"), "{log}");
    wait_until("the master to say it accepts again", WAIT, || {
        m.stderr().contains("accepts connections again")
    });
}

/// `bbworker --spool-limit` bounds what waits on the worker's disk to be
/// sent, not a step's total output: with a connected master reading, a
/// step prints 8 times the limit and the whole of it is in the log.
#[test]
fn the_spool_limit_bounds_the_backlog_not_the_output() {
    let m = Master::start_with_files(&config(8 << 20), &[("w1.secret", "w1-secret-0123456789\n")]);
    let mut cmd = crate::harness::command(crate::harness::BBWORKER);
    cmd.arg("--master")
        .arg(m.worker_socket())
        .arg("--name")
        .arg("w1")
        .arg("--secret-file")
        .arg(m.path().join("w1.secret"))
        .arg("--dir")
        .arg(m.path().join("w"))
        .arg("--spool-limit")
        .arg("1M");
    let _worker = crate::harness::Background::spawn(cmd);
    let (b, log) = run(&m, "big");
    assert_eq!(b["result"], "success", "{b}");
    assert!(
        !log.contains("bbworker: output"),
        "the worker dropped output"
    );
    assert_eq!(log.len(), (8 << 20) + "\ndone\n".len(), "the log is cut");
    assert!(log.ends_with("\ndone\n"));
}
