//! Helpers shared by the worker's tests: is a process (group) really gone?

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Upper bound for any wait in the tests; a healthy run takes far less.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
fn state_and_group(pid: i32) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the ")" closing the command name: state ppid pgrp ...
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// True when `pid` no longer exists or is a zombie (dead, not reaped yet:
/// a killed grandchild re-parented to an init that is slow to reap).
pub(crate) fn gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    state_and_group(pid).is_none_or(|(state, _)| state == "Z")
}

/// Pids of the live (non-zombie) members of process group `pgid`.
pub(crate) fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            state_and_group(pid).is_some_and(|(state, group)| group == pgid && state != "Z")
        })
        .collect()
}

/// Poll `check` until it holds; fail the test if it does not within
/// [`BOUND`]. For facts with no event to wait on (a killed process being
/// reaped by someone else).
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: still not true after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
