//! The worker adopts what its steps leave behind (and the master what its
//! local workers leave behind, when a step kills its own worker).
//!
//! A step may fork and let its parent exit (a daemon, `setsid cmd &`). By
//! default the kernel hands such an orphan to init, and it leaves the
//! worker's process tree; the master could then no longer tell it is build
//! code (see `daemon::lineage`: a peer under a worker is refused the
//! control socket). So the worker makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`): orphans of its steps become its children.
//!
//! Children it adopts must be reaped, or they stay zombies. The process's
//! own children (steps and the guard in a worker, local workers in the
//! master: every spawn site goes through [`spawn_own`]) are waited for by
//! whoever spawned them
//! (tokio or std); reaping one of those here would steal its exit status.
//! So the pids of own children are registered as they are spawned, under
//! the same lock the reaper holds while it looks: the reaper only ever
//! reaps children that nobody registered, which are adopted orphans.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tracing::debug;

/// Pids of children the worker spawned and waits for itself.
static OWN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn own() -> MutexGuard<'static, BTreeSet<i32>> {
    OWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Make this process the subreaper of everything its children leave.
pub fn adopt_orphans() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// Spawn a child the caller will wait for, registered so that the reaper
/// leaves it alone. `spawn` runs under the reaper's lock.
pub fn spawn_own<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid: impl Fn(&T) -> Option<u32>,
) -> std::io::Result<T> {
    let mut own = own();
    let child = spawn()?;
    if let Some(pid) = pid(&child) {
        own.insert(pid as i32);
    }
    Ok(child)
}

/// The caller has waited for child `pid`: the number may be reused.
pub fn forget_own(pid: u32) {
    own().remove(&(pid as i32));
}

/// Reap every adopted orphan that has exited; returns how many.
pub fn reap_orphans() -> usize {
    let own = own();
    let mut reaped = 0;
    for pid in children() {
        if own.contains(&pid) {
            continue;
        }
        if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
            && status.pid().is_some()
        {
            debug!(pid, ?status, "reaped a process a step left behind");
            reaped += 1;
        }
    }
    reaped
}

/// Reap adopted orphans whenever a child exits, for as long as the worker
/// runs.
pub async fn reap_forever() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut exits) = signal(SignalKind::child()) else {
        return;
    };
    // A signal that arrives while reaping is coalesced with the next one;
    // the periodic pass catches any exit that slipped between the two.
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = exits.recv() => {}
            _ = every.tick() => {}
        }
        reap_orphans();
    }
}

/// This process's children, from every thread's `children` list in /proc
/// (a child belongs to the thread that forked it, or to the main thread
/// when adopted).
fn children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
