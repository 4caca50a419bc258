//! One supervisor task per local worker: start it (or adopt the one a
//! previous master left), restart it with back-off when it dies, stop or
//! leave it when told.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::files::{last_line, log_path, write_private};
use super::launch::spawn;
use super::{LocalWorkerSetup, Order, Problems};

/// How long a local worker gets to leave after the master's goodbye.
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// How long a local worker gets after SIGTERM: its steps' stop grace (3 s)
/// plus the time to drain their output (5 s), with a margin.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// How often an adopted worker (not our child: it cannot be waited for) is
/// checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(500);

/// Run one local worker: adopt the one a previous master left, or start
/// one; restart it with backoff when it dies; until told otherwise.
pub(super) async fn supervise(
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
pub(super) fn adoptable(pid_file: &Path, name: &str, socket: &Path) -> Option<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
