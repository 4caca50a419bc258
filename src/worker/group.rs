//! Signals to a step's whole process group.
//!
//! Every step runs as the leader of its own process group, so one `killpg`
//! reaches the shell, its children and their background jobs alike.

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::warn;

/// Send `signal` to the process group `pgid`. A group that no longer exists
/// (`ESRCH`) is what we wanted anyway, so only other failures are logged.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        warn!(pgid, "process group id out of range; not signalling it");
        return;
    };
    if raw <= 1 {
        // killpg(0) would hit our own group and 1 is init: never do that.
        warn!(pgid, "refusing to signal process group {pgid}");
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(pgid, %signal, "cannot signal the step's process group: {e}"),
    }
}
