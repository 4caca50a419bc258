//! Processes and temp dirs: the real `bbmaster`, `bbworker` and `bbctl`
//! binaries (found next to the running `bbbench`), a scratch dir under
//! `/tmp` with short paths (socket paths must stay under 100 bytes), and
//! reading a process's memory from `/proc`.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// The product's executables.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `bbmaster`, the master under measurement.
    pub bbmaster: PathBuf,
    /// `bbctl`, the client every measured request goes through.
    pub bbctl: PathBuf,
    /// `bbworker`, started by hand for the remote-worker scenarios.
    pub bbworker: PathBuf,
}

impl Bins {
    /// Find the binaries in the directory of the running executable (like
    /// `target/release/`). When run by `cargo run`, first asks cargo to
    /// bring them up to date in the same profile, so that a benchmark never
    /// measures stale binaries; if that build fails, the existing ones are
    /// used with a warning.
    pub fn locate() -> Result<Bins> {
        let exe = std::env::current_exe().context("cannot find the bbbench executable")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "--bin", "bbmaster", "--bin", "bbworker"])
                .args(["--bin", "bbctl"]);
            if !cfg!(debug_assertions) {
                cmd.arg("--release");
            }
            match cmd.status() {
                Ok(s) if s.success() => {}
                other => eprintln!(
                    "warning: could not rebuild bbmaster/bbworker/bbctl ({other:?}); using the binaries in {}",
                    dir.display()
                ),
            }
        }
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} not found: build it first (cargo build [--release] --bins)",
                    path.display()
                )
            }
        };
        Ok(Bins {
            bbmaster: find("bbmaster")?,
            bbctl: find("bbctl")?,
            bbworker: find("bbworker")?,
        })
    }
}

/// A scratch directory under `/tmp`, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    next: std::cell::Cell<u32>,
}

impl Scratch {
    /// Create `/tmp/bbb-<pid>`.
    pub fn new() -> Result<Scratch> {
        let path = PathBuf::from(format!("/tmp/bbb-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch {
            path,
            next: std::cell::Cell::new(0),
        })
    }

    /// A new, empty sub-directory with a short unique name.
    pub fn dir(&self, prefix: &str) -> Result<PathBuf> {
        let n = self.next.get() + 1;
        self.next.set(n);
        let path = self.path.join(format!("{prefix}{n}"));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Run a command to completion, timing it from just before the spawn to its
/// exit; fails (with its stderr) if it does not exit 0.
pub fn run_timed(cmd: &mut Command) -> Result<(Duration, Output)> {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, out))
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
pub fn proc_kb(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in {path}"))
}

/// A resident set size in MB (10^6 bytes) from kB.
pub fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => !s
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// A running `bbmaster` in its own state dir, stopped (with its local
/// workers) when dropped.
#[derive(Debug)]
pub struct Master {
    child: Child,
    /// The state dir.
    pub dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    bbctl: PathBuf,
    stopped: bool,
}

impl Master {
    /// Start a master on `dir` with `config` (the embedded default when
    /// `None`) and wait until it serves.
    pub fn start(bins: &Bins, dir: &Path, config: Option<&Path>) -> Result<Master> {
        let mut master = Master::spawn(bins, dir, config)?;
        master.wait_serving(Duration::from_secs(60))?;
        Ok(master)
    }

    /// Start a master with more command-line `args` (`--http ADDR`) and
    /// wait until it serves.
    pub fn start_args(
        bins: &Bins,
        dir: &Path,
        config: Option<&Path>,
        args: &[&str],
    ) -> Result<Master> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut master = Master::spawn_with(bins, dir, config, &args)?;
        master.wait_serving(Duration::from_secs(60))?;
        Ok(master)
    }

    /// Start a master without waiting; its output goes to `<dir>/master.log`.
    pub fn spawn(bins: &Bins, dir: &Path, config: Option<&Path>) -> Result<Master> {
        Master::spawn_with(bins, dir, config, &[])
    }

    /// The same with more `bbmaster` arguments (`--name`, `--worker-listen`:
    /// one of several masters on one PostgreSQL store).
    pub fn spawn_with(
        bins: &Bins,
        dir: &Path,
        config: Option<&Path>,
        args: &[String],
    ) -> Result<Master> {
        let log_path = dir.join("master.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log2 = log.try_clone().context("cannot share the master log")?;
        let mut cmd = Command::new(&bins.bbmaster);
        cmd.arg("--state-dir").arg(dir);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args);
        cmd.env_remove("BBMASTER_CONFIG")
            .env_remove("BBMASTER_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bins.bbmaster.display()))?;
        Ok(Master {
            child,
            dir: dir.to_path_buf(),
            socket: dir.join("control.sock"),
            bbctl: bins.bbctl.clone(),
            stopped: false,
        })
    }

    /// Wait until the control socket accepts a connection; returns the time
    /// from this call.
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(start.elapsed());
            }
            if let Some(status) = self.child.try_wait().context("cannot wait for bbmaster")? {
                self.stopped = true;
                bail!("bbmaster exited with {status}: {}", self.log_tail());
            }
            if start.elapsed() > timeout {
                bail!(
                    "bbmaster did not serve within {timeout:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("master.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" / ")
    }

    /// Kill the master with SIGKILL, as a crash would; its local workers
    /// and their steps live on.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill().context("cannot kill bbmaster")?;
        self.child.wait().context("cannot reap bbmaster")?;
        self.stopped = true;
        Ok(())
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The master's resident set size now, in kB.
    pub fn rss_kb(&self) -> Result<u64> {
        proc_kb(self.pid(), "VmRSS")
    }

    /// A `bbctl` command aimed at this master.
    pub fn ctl(&self) -> Command {
        let mut cmd = Command::new(&self.bbctl);
        cmd.arg("--socket")
            .arg(&self.socket)
            .env_remove("BBCTL_SOCKET")
            .env_remove("BBMASTER_STATE_DIR");
        cmd
    }

    /// Run `bbctl ARGS` and time it, process start to exit.
    pub fn ctl_timed(&self, args: &[&str]) -> Result<(Duration, Output)> {
        run_timed(self.ctl().args(args))
    }

    /// `bbctl status --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let (_, out) = self.ctl_timed(&["status", "--json"])?;
        serde_json::from_slice(&out.stdout).context("bbctl status --json printed no JSON")
    }

    /// Wait until `n` local workers are connected.
    pub fn wait_local_workers(&self, n: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let status = self.status()?;
            let connected = status["workers"]
                .as_array()
                .map_or(0, |ws| ws.iter().filter(|w| w["connected"] == true).count());
            if connected >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("only {connected} of {n} workers connected within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Queued and running requests, summed over builders.
    pub fn live_requests(&self) -> Result<(u64, u64)> {
        let status = self.status()?;
        let builders = status["builders"]
            .as_array()
            .ok_or_else(|| anyhow!("status --json has no builders"))?;
        Ok(builders.iter().fold((0, 0), |(q, r), b| {
            (
                q + b["queued"].as_u64().unwrap_or(0),
                r + b["running"].as_u64().unwrap_or(0),
            )
        }))
    }

    /// Poll `status` every `every` until nothing is queued or running.
    pub fn wait_idle(&self, every: Duration, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.live_requests()? == (0, 0) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("builds still queued or running after {timeout:?}");
            }
            std::thread::sleep(every);
        }
    }

    /// Stop the master (SIGTERM, then SIGKILL after 10 s) and its local
    /// workers (their process groups, found by their pid files).
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while self
            .child
            .try_wait()
            .context("cannot wait for bbmaster")?
            .is_none()
        {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                self.child.wait().context("cannot wait for bbmaster")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop_local_workers(&self.dir.join("local-workers"));
        Ok(())
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "warning: stopping bbmaster in {}: {e:#}",
                self.dir.display()
            );
        }
    }
}

/// TERM, then KILL, the process groups of the local workers whose pid
/// files are in `dir` (each runs in a group of its own, with its steps).
fn stop_local_workers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let pids: Vec<u32> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    for &pid in &pids {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Write a file, with the path in the error.
pub fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The last JSON value of a stream of JSON values (as `--wait --json` prints).
pub fn last_json(bytes: &[u8]) -> Result<Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .last()
        .ok_or_else(|| anyhow!("no JSON in {:?}", String::from_utf8_lossy(bytes)))
}
