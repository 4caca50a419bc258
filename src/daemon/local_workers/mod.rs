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

//!
//! The module is split by job: [`supervise`] keeps one worker running (or
//! watches an adopted one), [`launch`] starts a worker process (as whom,
//! with what environment, in which work dir), [`files`] holds its log,
//! pid file and secret.

mod files;
mod launch;
mod supervise;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use files::load_or_make_secret;
pub use files::log_path;
pub use launch::{Separation, separation, work_root};
use supervise::{adoptable, supervise};

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
