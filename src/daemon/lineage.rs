//! Is a peer a build step? Its process ancestry says.
//!
//! Build steps run code from the repositories they build. When a step runs
//! under the master's own uid (a local worker, or any worker on this host
//! run by the same user), the socket's peer uid cannot tell it from the
//! operator's `bbctl`. Its ancestry can: every step is a descendant of the
//! worker that started it, and the worker marks itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, see `worker::reaper`), so a step that
//! double-forks or `setsid`s away from its parent is reparented to the
//! worker, not to init, and stays its descendant for as long as the worker
//! lives. A peer with an ancestor whose command line names this master's
//! worker socket after `--master` is a step (or the worker itself) and is
//! refused the control socket; on the worker socket, such a peer may not
//! pose as a worker either.
//!
//! What this does not cover is written down in `docs/security.md`: a step
//! that gets another service to act for it (cron, `systemd-run --user`, an
//! ssh login) runs outside the worker's tree; files of a shared uid stay
//! readable and writable by the step. Separate users (`user = "..."` on a
//! local worker) close both.

use std::path::{Path, PathBuf};

/// A worker process found among a peer's ancestors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAncestor {
    /// The worker process.
    pub pid: i32,
    /// Its `--name`, when its command line gives one.
    pub name: Option<String>,
}

/// How far up the tree to look; deeper trees are not real.
const MAX_DEPTH: usize = 4096;

impl WorkerAncestor {
    /// What the peer is, for a refusal: "runs under worker W (pid P)".
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!(
                "runs under worker {} (pid {})",
                crate::untrusted::Escaped(name),
                self.pid
            ),
            None => format!(
                "descends from this master (pid {}), left behind by a build step whose worker died",
                self.pid
            ),
        }
    }
}

/// The nearest ancestor of `pid` (or `pid` itself when `include_self`) that
/// is a worker connected to `worker_socket`, by its command line; or this
/// master itself, when `pid` descends from it other than as a direct child
/// looked at with `include_self` false (a local worker). The master is the
/// child subreaper of its local workers: when a step kills its worker, what
/// the step detached is reparented to the master, never to init.
pub fn worker_ancestor(
    pid: i32,
    worker_socket: &Path,
    include_self: bool,
) -> Option<WorkerAncestor> {
    let socket = std::fs::canonicalize(worker_socket).ok()?;
    let me = std::process::id() as i32;
    let mut current = if include_self { pid } else { parent_of(pid)? };
    for depth in 0..MAX_DEPTH {
        if current <= 1 {
            return None;
        }
        if current == me {
            let local_worker = !include_self && depth == 0;
            return (!local_worker).then_some(WorkerAncestor {
                pid: me,
                name: None,
            });
        }
        if let Some(name) = serves(current, &socket) {
            return Some(WorkerAncestor { pid: current, name });
        }
        current = parent_of(current)?;
    }
    None
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the field after the
/// state, which follows the parenthesised command name; the name itself
/// may hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

/// The ppid field of a `/proc/<pid>/stat` line.
fn parse_ppid(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `Some(name)` when process `pid` is a worker of `socket`.
fn serves(pid: i32, socket: &Path) -> Option<Option<String>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let master = option_value(&args, b"--master")?;
    let master = PathBuf::from(String::from_utf8_lossy(master).into_owned());
    let master = match (&cwd, master.is_relative()) {
        (Some(cwd), true) => cwd.join(master),
        _ => master,
    };
    if std::fs::canonicalize(&master).ok()? != socket {
        return None;
    }
    Some(option_value(&args, b"--name").map(|n| String::from_utf8_lossy(n).into_owned()))
}

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`.
fn option_value<'a>(args: &[&'a [u8]], flag: &[u8]) -> Option<&'a [u8]> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if *arg == flag {
            return it.next().copied();
        }
        if let Some(rest) = arg.strip_prefix(flag)
            && let Some(value) = rest.strip_prefix(b"=")
        {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_past_a_command_name_with_spaces_and_parens() {
        assert_eq!(parse_ppid("42 (sh) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (a (b) c) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn option_values_in_both_spellings() {
        let args: Vec<&[u8]> = vec![b"bbworker", b"--master", b"/s/w.sock", b"--name=w1"];
        assert_eq!(option_value(&args, b"--master"), Some(&b"/s/w.sock"[..]));
        assert_eq!(option_value(&args, b"--name"), Some(&b"w1"[..]));
        assert_eq!(option_value(&args, b"--dir"), None);
        // A flag given last, with no value, has none.
        let args: Vec<&[u8]> = vec![b"x", b"--master"];
        assert_eq!(option_value(&args, b"--master"), None);
    }

    #[test]
    fn a_process_under_a_worker_of_this_socket_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("worker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // A stand-in worker: a shell whose command line names the socket,
        // with a child of its own (the "step").
        let mut worker = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30 & wait")
            .arg("--master")
            .arg(&socket)
            .arg("--name")
            .arg("w1")
            .spawn()
            .unwrap();
        let wpid = worker.id() as i32;
        let step = (0..500)
            .find_map(|_| {
                let children =
                    std::fs::read_to_string(format!("/proc/{wpid}/task/{wpid}/children"))
                        .unwrap_or_default();
                let found = children.split_whitespace().next().map(str::to_string);
                if found.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                found
            })
            .expect("the stand-in worker started no child")
            .parse::<i32>()
            .unwrap();
        let found = worker_ancestor(step, &socket, false);
        assert_eq!(
            found,
            Some(WorkerAncestor {
                pid: wpid,
                name: Some("w1".into())
            })
        );
        assert_eq!(worker_ancestor(wpid, &socket, false), None);
        assert!(worker_ancestor(wpid, &socket, true).is_some());
        // Another socket's worker is not ours, but this test process plays
        // the master here: what descends from it, deeper than a direct
        // child, is what a step left behind.
        let other = dir.path().join("other.sock");
        let _other = std::os::unix::net::UnixListener::bind(&other).unwrap();
        let me = std::process::id() as i32;
        assert_eq!(
            worker_ancestor(step, &other, false),
            Some(WorkerAncestor {
                pid: me,
                name: None
            })
        );
        // A process outside the master's tree (our own parent) is nobody's step.
        let outside = nix::unistd::getppid().as_raw();
        assert_eq!(worker_ancestor(outside, &socket, true), None);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(step),
            nix::sys::signal::Signal::SIGKILL,
        );
        worker.kill().unwrap();
        worker.wait().unwrap();
    }
}
