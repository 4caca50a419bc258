//! [`Master`]: a real `bbmaster` in its own temp dir, driven with the real
//! `bbctl`, stopped (with its local workers) when dropped.

use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use super::*;

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
    /// How remote workers reach this master.
    transport: Transport,
    /// Over TLS: the listener's address and the certificate's fingerprint,
    /// as `bbctl status` showed them at the first start.
    tls: Option<(SocketAddr, String)>,
    /// More `bbmaster` arguments (`--name`, `--worker-listen`: a master
    /// of a [`Cluster`](super::Cluster)).
    args: Vec<OsString>,
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
        Master::start_over(Transport::Unix, config, files)
    }

    /// Like [`Master::start_with_files`], serving remote workers over
    /// `transport` ([`start_worker`] then dials it that way).
    pub fn start_over(transport: Transport, config: &str, files: &[(&str, &str)]) -> Master {
        let dir = temp_dir();
        for (name, contents) in files {
            fs::write(dir.path().join(name), contents).expect("cannot write a file");
        }
        let path = dir.path().join("master.toml");
        fs::write(
            &path,
            transport
                .config(config)
                .replace("@DIR@", &dir.path().to_string_lossy()),
        )
        .expect("cannot write the config");
        let mut master = Master {
            exe: PathBuf::from(BBMASTER),
            env: Vec::new(),
            dir,
            child: None,
            config: Some(path),
            starts: 0,
            transport,
            tls: None,
            args: Vec::new(),
        };
        master.spawn();
        master
    }

    /// Start a master of a cluster: its own temp dir and state dir, the
    /// cluster's shared `config`, and `args` (`--name` ...). Returns once
    /// its control socket answers (a standby's does too).
    pub fn start_peer(config: &Path, args: Vec<OsString>) -> Master {
        let mut master = Master {
            exe: PathBuf::from(BBMASTER),
            env: Vec::new(),
            dir: temp_dir(),
            child: None,
            config: Some(config.to_path_buf()),
            starts: 0,
            transport: Transport::Unix,
            tls: None,
            args,
        };
        master.spawn();
        master
    }

    /// Whether the master process is running (not reaped yet).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
            transport: Transport::Unix,
            tls: None,
            args: Vec::new(),
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
            transport: Transport::Unix,
            tls: None,
            args: Vec::new(),
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
        let child = spawn_copied_exe(&mut cmd);
        self.child = Some(child);
        self.wait_ready();
        if self.transport == Transport::Tls {
            self.learn_tls();
        }
    }

    /// Over TLS: read the listener's address and the fingerprint from
    /// `bbctl status --json`. At the first start, pin the port in the
    /// config file (so a restart listens where the workers dial); at a
    /// restart, check the master is back on that address with the same
    /// certificate (kept across restarts).
    fn learn_tls(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (addr, fingerprint) = loop {
            if let Some(got) = self.tls_status() {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "no TLS listener in `bbctl status` within {STARTUP_TIMEOUT:?}: {}\n--- its stderr\n{}",
                self.bbctl_json(&["status"])["tls"],
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        };
        match &self.tls {
            None => {
                let path = self.config_path();
                let text = fs::read_to_string(&path).expect("cannot read the config");
                let pinned = text.replace(
                    &format!("\"{TLS_LISTEN_ANY_PORT}\""),
                    &format!("\"{addr}\""),
                );
                fs::write(&path, pinned).expect("cannot write the config");
                self.tls = Some((addr, fingerprint));
            }
            Some((was_addr, was_fingerprint)) => {
                assert_eq!(
                    (&addr, &fingerprint),
                    (was_addr, was_fingerprint),
                    "the restarted master listens elsewhere or with another certificate\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// `tls.listen[0]` and `tls.fingerprint` of `bbctl status --json`, if
    /// the master shows a TLS listener.
    pub fn tls_status(&self) -> Option<(SocketAddr, String)> {
        let status = self.bbctl_json(&["status"]);
        let tls = &status["tls"];
        let addr = tls["listen"][0].as_str()?;
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("status shows the listener as {addr:?}: {e}\n{status}"));
        let fingerprint = tls["fingerprint"].as_str()?.to_string();
        Some((addr, fingerprint))
    }

    /// How remote workers reach this master.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The TLS listener's address (a master started over TLS).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.as_ref().expect("this master does not serve TLS").0
    }

    /// The fingerprint of the master's certificate (a master started over
    /// TLS).
    pub fn tls_fingerprint(&self) -> String {
        self.tls
            .as_ref()
            .expect("this master does not serve TLS")
            .1
            .clone()
    }

    /// The `bbworker` arguments that reach this master over its transport:
    /// `--master SOCKET`, or `--master tls://ADDR --fingerprint FP`.
    pub fn worker_args(&self) -> Vec<OsString> {
        match self.transport {
            Transport::Unix => vec!["--master".into(), self.worker_socket().into()],
            Transport::Tls => tls_worker_args(self.tls_addr(), &self.tls_fingerprint()),
        }
    }

    /// A `bbmaster` command line for this fixture's state dir and config.
    pub fn master_command(&self) -> Command {
        let mut cmd = command(&self.exe.to_string_lossy());
        cmd.arg("--state-dir").arg(self.state_dir());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(&self.args);
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
    /// Over TLS, the listener's line is added, with the port pinned.
    pub fn write_config(&self, config: &str) {
        let mut text = self
            .transport
            .config(config)
            .replace("@DIR@", &self.path().to_string_lossy());
        if let Some((addr, _)) = &self.tls {
            text = text.replace(
                &format!("\"{TLS_LISTEN_ANY_PORT}\""),
                &format!("\"{addr}\""),
            );
        }
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

/// Start `cmd`, retrying (bounded) while the kernel says "Text file busy":
/// a binary just copied into a temp dir (`start_default_alone`) can still
/// be open for writing in a child that another test thread forked in the
/// instant before that child's exec closed the descriptor.
fn spawn_copied_exe(cmd: &mut Command) -> std::process::Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start bbmaster: {e}"),
        }
    }
}
