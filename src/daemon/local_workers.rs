//! Workers with `local = true`: `bbworker` processes the master starts and
//! restarts.
//!
//! Each gets a fresh random secret through its stdin, never on its command
//! line, so other users cannot read it from `ps`. A local worker speaks the
//! same protocol over the same worker socket as a remote one: the master
//! has exactly one code path for running steps.

use std::collections::HashMap;
use std::io::Read;
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

/// How long a local worker gets to leave on its own at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a local worker gets after SIGTERM: its steps' stop grace (3 s)
/// plus the time to drain their output (5 s), with a margin.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// Where to find the worker program and what to tell it.
#[derive(Debug, Clone)]
pub struct LocalWorkerSetup {
    /// The `bbworker` executable.
    pub exe: PathBuf,
    /// The socket it connects to.
    pub worker_socket: PathBuf,
    /// Parent of the workers' work dirs (`<state_dir>/workers`).
    pub dir: PathBuf,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The supervised local workers.
pub struct LocalWorkers {
    setup: LocalWorkerSetup,
    secrets: HashMap<String, Arc<str>>,
    running: HashMap<String, Running>,
}

impl LocalWorkers {
    /// No workers yet; [`LocalWorkers::sync`] starts them.
    pub fn new(setup: LocalWorkerSetup) -> Self {
        LocalWorkers {
            setup,
            secrets: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// The `bbworker` next to the running executable; `BBMASTER_WORKER_EXE`
    /// overrides it for unusual installs.
    pub fn default_exe() -> PathBuf {
        if let Some(exe) = std::env::var_os("BBMASTER_WORKER_EXE") {
            return PathBuf::from(exe);
        }
        std::env::current_exe()
            .map(|p| p.with_file_name("bbworker"))
            .unwrap_or_else(|_| PathBuf::from("bbworker"))
    }

    /// The secret of a local worker, if the master started one by that name.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name).map(|s| s.to_string())
    }

    /// Start local workers the config has and we do not run; stop
    /// supervising those it no longer has (they leave when the master
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
                let _ = r.stop.send(true);
            }
        }
        for name in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let secret: Arc<str> = self
                .secrets
                .entry(name.to_string())
                .or_insert_with(|| random_secret().into())
                .clone();
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(supervise(
                self.setup.clone(),
                name.to_string(),
                secret,
                stop_rx,
            ));
            self.running
                .insert(name.to_string(), Running { stop, task });
        }
    }

    /// Tell every local worker's supervisor to stop, and wait (bounded)
    /// for the processes to leave.
    pub async fn shutdown(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in self.running.drain() {
            let _ = r.task.await;
        }
    }
}

/// Run one local worker, restarting it with backoff when it dies, until told to stop.
async fn supervise(
    setup: LocalWorkerSetup,
    name: String,
    secret: Arc<str>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut child = match spawn(&setup, &name, &secret).await {
            Ok(child) => child,
            Err(e) => {
                warn!(worker = %name, "cannot start local worker {}: {e}", setup.exe.display());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        info!(worker = %name, pid = child.id(), "local worker started");
        let started = tokio::time::Instant::now();
        tokio::select! {
            status = child.wait() => {
                if *stop.borrow() {
                    return;
                }
                warn!(worker = %name, "local worker exited ({}); restarting", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
            }
            _ = stop.changed() => {
                // The master says goodbye on the link; give the worker time
                // to leave, then SIGTERM (it stops its steps' process groups
                // on that), and SIGKILL only as the last resort, since a
                // killed worker cannot clean up its steps.
                if tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await.is_err() {
                    warn!(worker = %name, "local worker still running; sending SIGTERM");
                    if let Some(pid) = child.id() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    if tokio::time::timeout(TERM_GRACE, child.wait()).await.is_err() {
                        warn!(worker = %name, "local worker did not exit; killing it");
                        let _ = child.kill().await;
                    }
                }
                return;
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn spawn(
    setup: &LocalWorkerSetup,
    name: &str,
    secret: &str,
) -> std::io::Result<tokio::process::Child> {
    let dir = setup.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut child = Command::new(&setup.exe)
        .arg("--master")
        .arg(&setup.worker_socket)
        .arg("--name")
        .arg(name)
        .arg("--dir")
        .arg(&dir)
        .arg("--secret-stdin")
        .arg("--exit-with-master")
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{secret}\n").as_bytes()).await?;
    }
    Ok(child)
}

/// 32 random bytes from the kernel, as hex.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    let read =
        std::fs::File::open(Path::new("/dev/urandom")).and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Not expected on Linux; fall back to something unguessable enough
        // for a socket that is owner-only anyway.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        for (i, b) in seed.bytes().enumerate() {
            bytes[i % 32] ^= b;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
