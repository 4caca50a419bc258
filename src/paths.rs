//! Where things live on disk, shared by `bbmaster` and `bbctl` so that a
//! master started with defaults is found with no flags.

use std::path::{Path, PathBuf};

/// The state dir when neither `--state-dir` nor the config names one:
/// `$XDG_STATE_HOME/bbmaster`, else `~/.local/state/bbmaster`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("bbmaster");
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/bbmaster")
}

/// The control socket inside a state dir.
pub fn control_socket_in(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// The worker socket inside a state dir.
pub fn worker_socket_in(state_dir: &Path) -> PathBuf {
    state_dir.join("worker.sock")
}

/// Milliseconds since the Unix epoch: the only clock the master reads,
/// handed to the core with every input.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
