//! The fixtures of the end-to-end suite: a real `bbmaster` in a temp dir,
//! the real `bbctl` pointed at it, and remote `bbworker` processes.
//!
//! Every wait here is bounded, and every process a test starts is gone
//! when its fixture drops (the master's local workers included: a leftover
//! one fails the test).

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

/// The `bbmaster` under test.
pub const BBMASTER: &str = env!("CARGO_BIN_EXE_bbmaster");
/// The `bbctl` under test.
pub const BBCTL: &str = env!("CARGO_BIN_EXE_bbctl");
/// The `bbworker` under test.
pub const BBWORKER: &str = env!("CARGO_BIN_EXE_bbworker");

/// How long a `bbctl` run may take before the test fails.
pub const BBCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a master may take to answer after it starts.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to exit once told to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Variables that would point our binaries somewhere else.
const STRAY_ENV: &[&str] = &[
    "BBCTL_SOCKET",
    "BBMASTER_CONFIG",
    "BBMASTER_STATE_DIR",
    "BBMASTER_LOG",
    "BBWORKER_LOG",
    "XDG_STATE_HOME",
];

/// A fresh temp dir under /tmp with a short name, so that socket paths in
/// it stay far below the 108-byte limit of `sun_path`.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("bbe")
        .tempdir_in("/tmp")
        .expect("cannot create a temp dir under /tmp")
}

/// A command for one of our binaries, with a clean environment.
pub fn command(exe: &str) -> Command {
    let mut cmd = Command::new(exe);
    for var in STRAY_ENV {
        cmd.env_remove(var);
    }
    // Local workers run from the master's own executable, as for users.
    cmd.env("NO_COLOR", "1")
        .env_remove("BBMASTER_WORKER_EXE")
        .stdin(Stdio::null());
    cmd
}

/// Run `cmd` to completion with captured output, killing it and failing
/// the test if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let partial = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok);
            let (out, err) = partial
                .map(|o| (text(&o.stdout), text(&o.stderr)))
                .unwrap_or_default();
            panic!(
                "{what} did not finish within {timeout:?}; killed it\n--- stdout\n{out}\n--- stderr\n{err}"
            );
        }
    }
}

/// Bytes as (lossy) text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code of a finished process (-1 if a signal ended it).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Stdout and stderr of `out`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Wait (bounded) for `cond` to hold, polling every 20 ms.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for a file to hold a complete line, and return it.
pub fn wait_for_line_in(path: &Path, timeout: Duration) -> String {
    let mut line = String::new();
    wait_until(
        &format!("a line in {}", path.display()),
        timeout,
        || match fs::read_to_string(path) {
            Ok(s) if s.ends_with('\n') => {
                line = s.trim_end().to_string();
                true
            }
            _ => false,
        },
    );
    line
}

/// Wait (bounded) for `child` to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for a child: {e}"),
        }
    }
}

/// True when `pid` no longer runs: gone, or a zombie waiting to be reaped.
pub fn process_gone(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => true,
        _ => process_state(pid) == Some('Z'),
    }
}

/// Wait (bounded) until `pid` no longer runs (a zombie counts as gone).
pub fn wait_gone(pid: i32, timeout: Duration) {
    wait_until(&format!("process {pid} to be gone"), timeout, || {
        process_gone(pid)
    });
}

/// The state letter of `/proc/PID/stat` (R, S, Z, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Live (non-zombie) processes, other than this one, whose command line
/// mentions `dir` or whose working directory is inside it.
pub fn processes_using(dir: &Path) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let dir_str = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || process_state(pid).is_none_or(|s| s == 'Z') {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| text(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_dir =
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if cmdline.contains(&dir_str) || in_dir {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A running `bbmaster` in its own temp dir.
pub struct Master {
    /// The temp dir: config, state dir (`s/`), markers, logs of the run.
    pub dir: TempDir,
    /// The `bbmaster` executable to run.
    exe: PathBuf,
    child: Option<Child>,
    config: Option<PathBuf>,
    starts: u32,
    env: Vec<(String, String)>,
}

impl Master {
    /// Start a master on the embedded default config.
    pub fn start_default() -> Master {
        Master::launch(temp_dir(), None)
    }

    /// Start a master on `config`, written to `<dir>/master.toml`; every
    /// `@DIR@` in it becomes the temp dir's path.
    pub fn start(config: &str) -> Master {
        Master::start_with_files(config, &[])
    }

    /// Like [`Master::start`], after writing `files` (name, contents) into
    /// the temp dir: secret files, say.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Master {
        let dir = temp_dir();
        for (name, contents) in files {
            fs::write(dir.path().join(name), contents).expect("cannot write a file");
        }
        let path = dir.path().join("master.toml");
        fs::write(
            &path,
            config.replace("@DIR@", &dir.path().to_string_lossy()),
        )
        .expect("cannot write the config");
        Master::launch(dir, Some(path))
    }

    /// Start a master on the embedded default from a copy of `bbmaster`
    /// alone in `<dir>/bin/` (no `bbworker` beside it), as after
    /// `cargo run --release --bin bbmaster` on a fresh clone.
    pub fn start_default_alone() -> Master {
        let dir = temp_dir();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("cannot create bin/");
        let exe = bin.join("bbmaster");
        fs::copy(BBMASTER, &exe).expect("cannot copy bbmaster");
        Master::launch_exe(dir, None, exe)
    }

    /// Start a master on `config` from a copy of `bbmaster` in `<dir>/bin/`,
    /// with the temp dir opened to other users (0755): for local workers
    /// that run as another user, who must reach the program and their
    /// work dirs.
    pub fn start_copied_for_others(config: &str) -> Master {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("cannot open the temp dir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("cannot create bin/");
        let exe = bin.join("bbmaster");
        fs::copy(BBMASTER, &exe).expect("cannot copy bbmaster");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))
            .expect("cannot make bbmaster executable by others");
        let path = dir.path().join("master.toml");
        fs::write(
            &path,
            config.replace("@DIR@", &dir.path().to_string_lossy()),
        )
        .expect("cannot write the config");
        Master::launch_exe(dir, Some(path), exe)
    }

    /// Like [`Master::start`], with extra variables in the master's
    /// environment (which its local workers inherit).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Master {
        let dir = temp_dir();
        let path = dir.path().join("master.toml");
        fs::write(
            &path,
            config.replace("@DIR@", &dir.path().to_string_lossy()),
        )
        .expect("cannot write the config");
        let mut master = Master {
            exe: PathBuf::from(BBMASTER),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
            child: None,
            config: Some(path),
            starts: 0,
        };
        master.spawn();
        master
    }

    fn launch(dir: TempDir, config: Option<PathBuf>) -> Master {
        Master::launch_exe(dir, config, PathBuf::from(BBMASTER))
    }

    fn launch_exe(dir: TempDir, config: Option<PathBuf>, exe: PathBuf) -> Master {
        let mut master = Master {
            exe,
            env: Vec::new(),
            dir,
            child: None,
            config,
            starts: 0,
        };
        master.spawn();
        master
    }

    /// Start the master process (again) on the same state dir and config,
    /// and wait until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the master is already running");
        self.starts += 1;
        let log = fs::File::create(self.stderr_path()).expect("cannot create the master's log");
        let mut cmd = self.master_command();
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("cannot start bbmaster");
        self.child = Some(child);
        self.wait_ready();
    }

    /// A `bbmaster` command line for this fixture's state dir and config.
    pub fn master_command(&self) -> Command {
        let mut cmd = command(&self.exe.to_string_lossy());
        cmd.arg("--state-dir").arg(self.state_dir());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let socket = self.control_socket();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "bbmaster exited during start-up ({status})\n--- its stderr\n{}",
                    self.stderr()
                );
            }
            if UnixStream::connect(&socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "bbmaster did not answer on {} within {STARTUP_TIMEOUT:?}\n--- its stderr\n{}",
                    socket.display(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the master is not running").id()
    }

    /// The temp dir's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The state dir (`<dir>/s`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    /// The config file, if the master has one.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .expect("this master runs the embedded default")
    }

    /// Replace the config file's text (`@DIR@` expanded, as for `start`).
    pub fn write_config(&self, config: &str) {
        let text = config.replace("@DIR@", &self.path().to_string_lossy());
        fs::write(self.config_path(), text).expect("cannot write the config");
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }

    /// The worker socket.
    pub fn worker_socket(&self) -> PathBuf {
        self.state_dir().join("worker.sock")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(format!("master-{}.log", self.starts))
    }

    /// Everything the master (every start of it) wrote on stderr.
    pub fn stderr(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.path().join(format!("master-{n}.log"));
                fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- (restarted)\n")
    }

    /// Run `bbctl ARGS` against this master (found through its state dir).
    pub fn bbctl(&self, args: &[&str]) -> Output {
        run_with_timeout(self.bbctl_command(args), BBCTL_TIMEOUT)
    }

    /// A `bbctl ARGS` command line pointed at this master.
    pub fn bbctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = command(BBCTL);
        cmd.env("BBMASTER_STATE_DIR", self.state_dir()).args(args);
        cmd
    }

    /// Run `bbctl ARGS`, expecting exit code `want`; returns the output.
    pub fn bbctl_code(&self, args: &[&str], want: i32) -> Output {
        let out = self.bbctl(args);
        assert_eq!(
            code(&out),
            want,
            "bbctl {args:?}: wrong exit code\n{}\n--- master stderr\n{}",
            describe(&out),
            self.stderr()
        );
        out
    }

    /// Run `bbctl ARGS`, expecting success; returns its stdout.
    pub fn bbctl_ok(&self, args: &[&str]) -> String {
        text(&self.bbctl_code(args, 0).stdout)
    }

    /// Run `bbctl --json ARGS`, expecting success; returns the parsed JSON.
    pub fn bbctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.bbctl_ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bbctl {all:?} printed no JSON ({e}):\n{out}"))
    }

    /// Start `bbctl ARGS` in the background.
    pub fn bbctl_spawn(&self, args: &[&str]) -> Background {
        Background::spawn(self.bbctl_command(args))
    }

    /// Queue a build of `builder`; returns the request id.
    pub fn force_build(&self, builder: &str) -> u64 {
        let v = self.bbctl_json(&["force-build", builder]);
        v["request_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("force-build --json printed no request_id: {v}"))
    }

    /// Wait (bounded) for the master process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the master is not running");
        let status = wait_child(child, timeout)
            .unwrap_or_else(|| panic!("bbmaster did not exit within {timeout:?}"));
        self.child = None;
        status
    }

    /// Kill the master with SIGKILL, as a crash would, and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the master is not running");
        child.kill().expect("cannot kill bbmaster");
        child.wait().expect("cannot reap bbmaster");
    }

    /// Send `signal` to the master process (SIGTERM, SIGSTOP, ...).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to bbmaster: {e}"));
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        if wait_child(&mut child, EXIT_TIMEOUT).is_none() {
            eprintln!("bbmaster ignored SIGTERM for {EXIT_TIMEOUT:?}; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
        // Local workers outlive a stopped master on purpose (the next one
        // re-adopts them). Stop them the way an operator would, with
        // SIGTERM; they must then leave, with every step they ran.
        for (pid, cmdline) in processes_using(self.dir.path()) {
            if cmdline.contains("bbworker") && !cmdline.contains("--guard") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let mut left = processes_using(self.dir.path());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !left.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            left = processes_using(self.dir.path());
        }
        for (pid, _) in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if thread::panicking() {
            eprintln!("--- bbmaster stderr\n{}", self.stderr());
        } else if !left.is_empty() {
            panic!(
                "processes outlived the master and its workers by {EXIT_TIMEOUT:?} (now killed): {left:?}\n--- bbmaster stderr\n{}",
                self.stderr()
            );
        }
    }
}

/// A process started in the background whose stderr lines can be awaited.
pub struct Background {
    child: Option<Child>,
    what: String,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Background {
    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Background {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut out = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let err = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child: Some(child),
            what,
            stdout: Some(stdout),
            lines,
            stderr: Vec::new(),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("already finished").id()
    }

    /// Send `signal` to the process (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to {}: {e}", self.what));
    }

    /// Kill the process with SIGKILL, as a crash would, and reap it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("already finished");
        child.kill().expect("cannot kill a background process");
        child.wait().expect("cannot reap a background process");
    }

    /// Wait (bounded) for a stderr line containing `needle`; returns it.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no stderr line with {needle:?} within {timeout:?}; got:\n{}",
                    self.what,
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Wait (bounded) for the process to exit; returns its output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("already finished");
        let status = wait_child(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not exit within {timeout:?}; killed it\n--- stderr so far\n{}",
                self.what,
                self.stderr.join("\n")
            )
        });
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // The reader thread ends at EOF, which came with the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stderr.push(line);
        }
        let mut stderr = self.stderr.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        Output {
            status,
            stdout,
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start a remote `bbworker` named `name` for `master`, reading its secret
/// from `secret_file`, working in `<dir>/w-<name>`.
pub fn start_worker(master: &Master, name: &str, secret_file: &Path) -> Background {
    start_worker_in(
        master,
        name,
        secret_file,
        &master.path().join(format!("w-{name}")),
    )
}

/// Like [`start_worker`], working in `work_dir` (two workers of one name
/// must not share a work dir).
pub fn start_worker_in(
    master: &Master,
    name: &str,
    secret_file: &Path,
    work_dir: &Path,
) -> Background {
    let mut cmd = command(BBWORKER);
    cmd.arg("--master")
        .arg(master.worker_socket())
        .arg("--name")
        .arg(name)
        .arg("--secret-file")
        .arg(secret_file)
        .arg("--dir")
        .arg(work_dir);
    Background::spawn(cmd)
}

/// A process started in the background whose stdout is read line by line
/// as it comes (`bbctl events`, `bbctl watch | cat`); killed on drop.
pub struct LineReader {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl LineReader {
    /// Start `cmd` with stdout read line by line and stderr kept.
    pub fn spawn(mut cmd: Command) -> LineReader {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        LineReader {
            child,
            what,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Read lines until one satisfies `pred` within `timeout`; returns the
    /// lines read by this call (the matching one last), or `None`.
    pub fn try_read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            let done = pred(&line);
            got.push(line);
            if done {
                return Some(got);
            }
        }
    }

    /// Like [`LineReader::try_read_until`], failing the test on a timeout.
    pub fn read_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        self.try_read_until(timeout, pred).unwrap_or_else(|| {
            panic!(
                "{}: no line with {what} within {timeout:?}; got:\n{}",
                self.what,
                self.seen.join("\n")
            )
        })
    }

    /// Wait (bounded) for the process to exit by itself; its status, and
    /// every stdout line it printed (from the first, `seen` included).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let status = wait_child(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.what));
        while let Some(_line) = self.next_line(Duration::from_secs(2)) {}
        (status, std::mem::take(&mut self.seen))
    }

    /// Kill the process; returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| text(&b))
            .unwrap_or_default()
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Make sure `reader` (`bbctl events` or `bbctl watch` on a pipe, just
/// started) is subscribed: the event stream has no acknowledgement, so
/// cause a harmless event (`bbctl undrain` of a master that is not
/// draining emits `master_draining`) until a line with `needle` shows up.
pub fn await_subscription(master: &Master, reader: &mut LineReader, needle: &str) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        master.bbctl_code(&["undrain"], 0);
        if reader
            .try_read_until(Duration::from_millis(250), |l| l.contains(needle))
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not subscribed after {STARTUP_TIMEOUT:?}; got:\n{}",
            reader.what,
            reader.seen.join("\n")
        );
    }
}
