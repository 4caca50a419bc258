//! Workers with `local = true`: `bbworker` processes the master starts,
//! restarts, and — across a master restart — adopts.
//!
//! A local worker is an ordinary worker on the worker socket, so the master
//! has one code path for running steps. It runs in its own process group
//! and outlives the master: after a master crash or a plain shutdown it
//! keeps its steps running and reconnects, and the next master finds it by
//! its pid file (`<state_dir>/local-workers/<name>.pid`) instead of starting
//! a second worker of the same name. Its secret is made up once, kept in
//! `<name>.secret` (mode 0600, so a restarted master can recognise it), and
//! handed over on stdin, never on a command line visible in `ps`.
//!
//! A local worker is the master's own executable in worker mode (see
//! [`LocalWorkers::default_exe`]). Its log (stdout and stderr, its guard's
//! included) goes to `<state_dir>/workers/<name>.log`, never to the
//! terminal the master was started from: it outlives the master, and its
//! "cannot reach the master" lines would otherwise litter that terminal.
//! Why it last failed to start or exited is kept for `bbctl status`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;

/// How long a local worker gets to leave after the master's goodbye.
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// How long a local worker gets after SIGTERM: its steps' stop grace (3 s)
/// plus the time to drain their output (5 s), with a margin.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// How often an adopted worker (not our child: it cannot be waited for) is
/// checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(500);

/// A worker log larger than this when the worker (re)starts is moved to
/// `<name>.log.old` (replacing the previous one) and begun afresh.
const LOG_ROTATE_BYTES: u64 = 16 << 20;

/// A local worker without a master for this long, and holding no step,
/// exits: a master that never comes back leaves no process behind.
const ORPHAN_TIMEOUT: &str = "300s";

/// Where to find the worker program and what to tell it.
#[derive(Debug, Clone)]
pub struct LocalWorkerSetup {
    /// The `bbworker` executable.
    pub exe: PathBuf,
    /// The socket it connects to.
    pub worker_socket: PathBuf,
    /// Where the workers' logs go (`<state_dir>/workers`).
    pub dir: PathBuf,
    /// Parent of the workers' work dirs, outside the state dir
    /// (`<state_dir>.work`, see [`work_root`]): a step's `..` never leads
    /// into the master's files.
    pub work: PathBuf,
    /// Where secrets and pid files live (`<state_dir>/local-workers`).
    pub keep: PathBuf,
}

/// What a supervisor is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Keep the worker running; restart it if it dies.
    Supervise,
    /// Stop watching it and leave it running (master shutdown, or a worker
    /// removed by reload, which leaves on the master's goodbye).
    Detach,
    /// Make sure it exits: goodbye was said; TERM, then KILL if need be.
    Stop,
}

struct Running {
    order: watch::Sender<Order>,
    task: JoinHandle<()>,
}

/// The supervised local workers.
pub struct LocalWorkers {
    setup: LocalWorkerSetup,
    secrets: HashMap<String, Arc<str>>,
    running: HashMap<String, Running>,
    problems: Problems,
}

/// Why each local worker last failed to start or exited, by name.
type Problems = Arc<std::sync::Mutex<HashMap<String, String>>>;

impl LocalWorkers {
    /// No workers yet; [`LocalWorkers::sync`] starts or adopts them.
    pub fn new(setup: LocalWorkerSetup) -> Self {
        LocalWorkers {
            setup,
            secrets: HashMap::new(),
            running: HashMap::new(),
            problems: Problems::default(),
        }
    }

    /// Why the local worker `name` last failed to start or exited, if it
    /// did: shown by `bbctl status` while it is offline.
    pub fn last_error(&self, name: &str) -> Option<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The master's own executable, which runs as a worker when started
    /// under the name `bbworker` (see [`crate::worker::cli`]): no sibling
    /// binary to build, install or miss. `/proc/self/exe` names the binary
    /// this master runs even if its file was replaced since (an upgrade in
    /// place), so master and local workers are always the same version.
    /// `BBMASTER_WORKER_EXE` overrides it (a separate `bbworker`, say).
    pub fn default_exe() -> PathBuf {
        std::env::var_os("BBMASTER_WORKER_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
    }

    /// The secret of a local worker, if the config has one by that name.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).map(|s| s.to_string())
    }

    /// Start (or adopt) local workers the config has and we do not watch;
    /// stop watching those it no longer has (they leave when the master
    /// drains and disconnects them).
    pub fn sync(&mut self, config: &Config) {
        let wanted: Vec<&str> = config
            .workers
            .iter()
            .filter(|w| w.local)
            .map(|w| w.name.as_str())
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                let _ = r.order.send(Order::Detach);
            }
        }
        for name in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let secret = match self.secrets.get(name) {
                Some(s) => s.clone(),
                None => match load_or_make_secret(&self.setup.keep, name) {
                    Ok(s) => {
                        let s: Arc<str> = s.into();
                        self.secrets.insert(name.to_string(), s.clone());
                        s
                    }
                    Err(e) => {
                        warn!(worker = %name, "cannot keep the local worker's secret in {}: {e}", self.setup.keep.display());
                        continue;
                    }
                },
            };
            let user = config
                .workers
                .iter()
                .find(|w| w.name == name)
                .and_then(|w| w.user.clone());
            let pass_env: Vec<String> = config
                .builders
                .iter()
                .flat_map(|b| b.pass_env.iter().cloned())
                .collect();
            let (order, order_rx) = watch::channel(Order::Supervise);
            let task = tokio::spawn(supervise(
                self.setup.clone(),
                name.to_string(),
                user,
                pass_env,
                secret,
                order_rx,
                Arc::clone(&self.problems),
            ));
            self.running
                .insert(name.to_string(), Running { order, task });
        }
    }

    /// The master exits and leaves its local workers running, with their
    /// steps, for the next master to adopt.
    /// Says so in one line, with how to stop them.
    pub fn detach(&mut self) {
        let mut names: Vec<String> = self.running.keys().cloned().collect();
        names.sort();
        for (_, r) in self.running.drain() {
            let _ = r.order.send(Order::Detach);
        }
        if !names.is_empty() {
            info!(
                "local worker(s) {} keep running, with their builds, for the next master on this state dir to re-adopt (alone and idle for {ORPHAN_TIMEOUT} they exit; to stop them now: kill $(cat {}/*.pid), or next time stop with `bbctl shutdown --drain`)",
                names.join(", "),
                self.setup.keep.display()
            );
        }
    }

    /// The local worker `name` fell silent on its link (stopped by SIGSTOP,
    /// hung): kill its process group with SIGKILL. Its supervisor sees it
    /// die and starts a new one; its guard sees it die and kills its
    /// steps, whose builds the master retries after `worker_grace` as for
    /// any lost worker.
    pub fn kill_frozen(&mut self, name: &str) {
        if !self.running.contains_key(name) {
            return;
        }
        let pid_file = self.setup.keep.join(format!("{name}.pid"));
        let Some(pid) = adoptable(&pid_file, name, &self.setup.worker_socket) else {
            return;
        };
        warn!(worker = %name, pid, "local worker frozen (silent on its link); killing its process group to restart it");
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// Make every local worker exit (after the master said goodbye), and
    /// wait for them, bounded.
    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.order.send(Order::Stop);
        }
        for (_, r) in self.running.drain() {
            let _ = r.task.await;
        }
    }
}

/// Run one local worker: adopt the one a previous master left, or start
/// one; restart it with backoff when it dies; until told otherwise.
async fn supervise(
    setup: LocalWorkerSetup,
    name: String,
    user: Option<String>,
    pass_env: Vec<String>,
    secret: Arc<str>,
    mut order: watch::Receiver<Order>,
    problems: Problems,
) {
    let problem = |text: Option<String>| {
        let mut map = problems.lock().unwrap_or_else(|e| e.into_inner());
        match text {
            Some(text) => map.insert(name.clone(), text),
            None => map.remove(&name),
        };
    };
    let pid_file = setup.keep.join(format!("{name}.pid"));
    let log = log_path(&setup, &name);
    let mut backoff = Duration::from_millis(200);
    loop {
        if let Some(pid) = adoptable(&pid_file, &name, &setup.worker_socket) {
            info!(worker = %name, pid, "adopted the local worker left by a previous master");
            if watch_adopted(pid, &mut order).await {
                return;
            }
            warn!(worker = %name, pid, "adopted local worker exited; starting a new one");
            continue;
        }
        let mut child = match spawn(&setup, &name, user.as_deref(), &pass_env, &secret, &log).await
        {
            Ok(child) => child,
            Err(e) => {
                warn!(worker = %name, "cannot start local worker {}: {e}", setup.exe.display());
                problem(Some(format!("cannot start {}: {e}", setup.exe.display())));
                if wait_or_order(backoff, &mut order).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        if let Err(e) = write_private(&pid_file, format!("{pid}\n").as_bytes()) {
            warn!(worker = %name, "cannot write {}: {e}", pid_file.display());
        }
        info!(worker = %name, pid, log = %log.display(), "local worker started");
        problem(None);
        let started = tokio::time::Instant::now();
        let exited = loop {
            tokio::select! {
                status = child.wait() => {
                    crate::worker::reaper::forget_own(pid);
                    break status;
                }
                changed = order.changed() => {
                    let current = *order.borrow();
                    match (changed, current) {
                        (Err(_), _) | (_, Order::Detach) => return,
                        (_, Order::Stop) => {
                            stop_child(&name, &mut child).await;
                            let _ = std::fs::remove_file(&pid_file);
                            return;
                        }
                        (_, Order::Supervise) => {}
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        let how = exited
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let why = match last_line(&log) {
            Some(line) => format!("exited ({how}): {line}"),
            None => format!("exited ({how})"),
        };
        warn!(worker = %name, "local worker {why}; restarting (its log: {})", log.display());
        problem(Some(why));
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        if wait_or_order(backoff, &mut order).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Sleep `d` unless told to stop supervising; true when told.
async fn wait_or_order(d: Duration, order: &mut watch::Receiver<Order>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        changed = order.changed() => changed.is_err() || *order.borrow() != Order::Supervise,
    }
}

/// Watch an adopted worker until it dies (false) or we are told to stop
/// watching (true). A `Stop` order sends it SIGTERM first.
async fn watch_adopted(pid: i32, order: &mut watch::Receiver<Order>) -> bool {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ADOPTED_POLL) => {
                if !alive(pid) {
                    return false;
                }
            }
            changed = order.changed() => {
                let current = *order.borrow();
                match (changed, current) {
                    (Err(_), _) | (_, Order::Detach) => return true,
                    (_, Order::Stop) => {
                        let deadline = tokio::time::Instant::now() + GOODBYE_GRACE;
                        while alive(pid) && tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if alive(pid) {
                            signal(pid, nix::sys::signal::Signal::SIGTERM);
                        }
                        return true;
                    }
                    (_, Order::Supervise) => {}
                }
            }
        }
    }
}

/// After the goodbye: wait, then SIGTERM (the worker stops its steps'
/// process groups on it), and SIGKILL only as the last resort.
async fn stop_child(name: &str, child: &mut tokio::process::Child) {
    if tokio::time::timeout(GOODBYE_GRACE, child.wait())
        .await
        .is_ok()
    {
        return;
    }
    warn!(worker = %name, "local worker still running; sending SIGTERM");
    if let Some(pid) = child.id() {
        signal(pid as i32, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        warn!(worker = %name, "local worker did not exit; killing it");
        let _ = child.kill().await;
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
}

/// The pid in `pid_file`, if that process is still our `bbworker --name
/// <name>` on our worker socket.
fn adoptable(pid_file: &Path, name: &str, socket: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !alive(pid) {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let follows = |flag: &str, value: &[u8]| {
        args.windows(2)
            .any(|w| w[0] == flag.as_bytes() && w[1] == value)
    };
    let is_worker = args.first().is_some_and(|a| a.ends_with(b"bbworker"));
    let socket = socket.as_os_str().as_encoded_bytes();
    (is_worker && follows("--name", name.as_bytes()) && follows("--master", socket)).then_some(pid)
}

/// Where the local worker `name` logs: `<state_dir>/workers/<name>.log`.
pub fn log_path(setup: &LocalWorkerSetup, name: &str) -> PathBuf {
    setup.dir.join(format!("{name}.log"))
}

/// The worker's log, opened for appending (mode 0600); one grown past
/// [`LOG_ROTATE_BYTES`] is first moved aside to `<name>.log.old`.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::rename(path, old)?;
    }
    crate::daemon::state_dir::private_file()
        .append(true)
        .create(true)
        .open(path)
}

/// The last non-empty line of a worker's log (read from its last 4 KiB),
/// for saying why it exited.
fn last_line(path: &Path) -> Option<String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// Who the local workers run as, checked at start: a `user` needs a root
/// master and a worker socket that user can reach; a local worker without
/// one shares the master's uid, which the master says in one warning line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Separation {
    /// Local workers running as the master's own user.
    pub shared: Vec<String>,
}

/// Check the local workers' `user`s against how this master runs.
pub fn separation(
    config: &Config,
    state_dir: &Path,
    worker_socket: &Path,
) -> Result<Separation, String> {
    let mut found = Separation::default();
    for w in config.workers.iter().filter(|w| w.local) {
        let Some(user) = &w.user else {
            found.shared.push(w.name.clone());
            continue;
        };
        let own = nix::unistd::geteuid();
        if !own.is_root() {
            return Err(format!(
                "local worker `{}` is to run as user `{user}`, which needs a master running as \
                 root (this one runs as uid {own}); remove `user` or start the master as root",
                w.name
            ));
        }
        if worker_socket.starts_with(state_dir) {
            return Err(format!(
                "local worker `{}` runs as user `{user}`, who cannot reach the worker socket \
                 {} inside the owner-only state dir; set [master] worker_socket to a path \
                 outside it (e.g. \"/run/bbmaster/worker.sock\")",
                w.name,
                worker_socket.display()
            ));
        }
    }
    Ok(found)
}

/// Where local workers' work dirs live: beside the state dir, never in it
/// (`/var/lib/bbmaster` → `/var/lib/bbmaster.work/<name>`).
pub fn work_root(state_dir: &Path) -> PathBuf {
    let mut name = state_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "bbmaster".into());
    name.push(".work");
    state_dir.with_file_name(name)
}

/// Who a local worker runs as, resolved when it starts.
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    name: String,
    home: PathBuf,
}

/// The user `user` as the master may run a worker: refused unless the
/// master is root (only root can start a process as someone else).
fn run_as(user: &str) -> std::io::Result<RunAs> {
    let own = nix::unistd::geteuid();
    if !own.is_root() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is configured to run as user `{user}`, which needs a master running as root \
                 (this one runs as uid {own})"
            ),
        ));
    }
    let found = nix::unistd::User::from_name(user)
        .map_err(std::io::Error::from)?
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("there is no user `{user}`"),
            )
        })?;
    Ok(RunAs {
        uid: found.uid,
        gid: found.gid,
        name: found.name,
        home: found.dir,
    })
}

/// The environment a local worker starts with: the allow-list steps get
/// (see [`crate::worker::step_environment`]), the variables some builder
/// names in `pass_env` (read from the master's environment when the worker
/// starts) and `RUST_LOG`; never the master's whole environment, which may
/// hold credentials its steps could otherwise read from the worker's
/// `/proc/<pid>/environ`.
fn worker_environment(
    user: Option<&RunAs>,
    pass_env: &[String],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let inherited = std::env::vars_os();
    let mut names = pass_env.to_vec();
    names.push("RUST_LOG".into());
    let mut env: Vec<_> = crate::worker::step_environment(inherited, &names, &[])
        .into_iter()
        .collect();
    if let Some(user) = user {
        env.retain(|(k, _)| !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME")));
        env.push(("HOME".into(), user.home.clone().into_os_string()));
        env.push(("USER".into(), user.name.clone().into()));
        env.push(("LOGNAME".into(), user.name.clone().into()));
    }
    env
}

async fn spawn(
    setup: &LocalWorkerSetup,
    name: &str,
    user: Option<&str>,
    pass_env: &[String],
    secret: &str,
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let run_as = user.map(run_as).transpose()?;
    let dir = setup.work.join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    if let Some(user) = &run_as {
        // Its work dir is its own; the parent only needs to be traversable.
        std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        std::fs::set_permissions(
            &setup.work,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o711),
        )?;
    }
    if let Some(logs) = log.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(logs)?;
    }
    let out = open_log(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(&setup.exe);
    cmd.env_clear()
        .envs(worker_environment(run_as.as_ref(), pass_env));
    if let Some(user) = &run_as {
        // std drops the supplementary groups when it sets the uid as root.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.arg0(crate::worker::cli::WORKER_ARGV0)
        .arg("--master")
        .arg(&setup.worker_socket)
        .arg("--name")
        .arg(name)
        .arg("--dir")
        .arg(&dir)
        .arg("--secret-stdin")
        .arg("--orphan-timeout")
        .arg(ORPHAN_TIMEOUT)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C meant for the master's terminal
        // does not reach it, and it outlives the master.
        .process_group(0);
    // Registered as ours: the master's orphan reaper must leave it to us.
    let mut child = crate::worker::reaper::spawn_own(|| cmd.spawn(), |c| c.id())?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(format!("{secret}\n").as_bytes()).await {
            // It exited before reading its secret: its exit status and log
            // say why, as for any other exit.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(child)
}

/// The secret kept for a local worker, made up (32 random bytes, as hex)
/// and written mode 0600 the first time.
fn load_or_make_secret(keep: &Path, name: &str) -> std::io::Result<String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(keep)?;
    let path = keep.join(format!("{name}.secret"));
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// Write a file of the master's own (a pid, a secret) in the state dir,
/// mode 0600, never through a symlink planted at its name, and on disk
/// before we go on.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = crate::daemon::state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        let a = load_or_make_secret(&keep, "w").unwrap();
        let b = load_or_make_secret(&keep, "w").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keep.join("w.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(load_or_make_secret(&keep, "v").unwrap(), a);
    }

    #[test]
    fn files_of_the_master_are_never_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me").unwrap();
        let pid_file = dir.path().join("w.pid");
        std::os::unix::fs::symlink(&precious, &pid_file).unwrap();
        assert!(write_private(&pid_file, b"42\n").is_err());
        let log = dir.path().join("w.log");
        std::os::unix::fs::symlink(&precious, &log).unwrap();
        assert!(open_log(&log).is_err());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    }

    #[test]
    fn only_our_own_worker_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("w.pid");
        // Our own process is alive but is not a bbworker.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(adoptable(&pid_file, "w", Path::new("/x.sock")), None);
        std::fs::write(&pid_file, "not a pid").unwrap();
        assert_eq!(adoptable(&pid_file, "w", Path::new("/x.sock")), None);
        assert_eq!(
            adoptable(&dir.path().join("none.pid"), "w", Path::new("/x.sock")),
            None
        );
    }
}
