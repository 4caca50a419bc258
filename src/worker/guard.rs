//! The guard: a helper process that kills the worker's steps when the
//! worker dies without doing it itself (`kill -9`, the OOM killer, a crash).
//!
//! # Why a separate process, and how it is set up
//!
//! Steps run in process groups of their own (so one `killpg` stops a step
//! and everything it started), which also means nothing the kernel does on
//! the worker's death reaches them. `PR_SET_PDEATHSIG` is not an option: it
//! fires when the *thread* that forked the step exits, and tokio's blocking
//! threads come and go. So at start the worker runs itself again as
//! `bbworker --guard` (through `/proc/self/exe`, which names the running
//! binary even if the file was replaced since) with a pipe on its stdin, and
//! writes `add <pgid>` / `del <pgid>` lines as steps start and end.
//!
//! - **Death detection is EOF.** The worker holds the only write end of the
//!   pipe; the kernel closes it when the worker dies, however it dies, and
//!   the guard's read returns EOF. It then SIGKILLs every group still
//!   registered and exits. A worker exiting normally has stopped and
//!   unregistered all its steps first, so the guard just exits.
//! - **The write end must not leak.** If a step inherited it, the step
//!   would keep the pipe open and the guard would wait for the very process
//!   it must kill. Rust creates pipes close-on-exec, so neither steps nor
//!   the guard itself inherit it.
//! - **Its own process group** (set before exec, no race): a Ctrl-C goes to
//!   the terminal's foreground group, and `kill -- -<pgid>` to the worker's
//!   group; either would otherwise hit the guard together with the worker,
//!   SIGKILL included, and nobody would be left to clean up.
//! - **SIGINT, SIGTERM, SIGHUP, SIGTTOU blocked**: belt and braces for
//!   signals sent to it anyway (a hangup of the session, a `kill` of every
//!   `bbworker` by name); the guard must outlive the worker to do its job,
//!   and it holds no state worth a graceful exit. Blocked rather than
//!   ignored, since blocking needs no `unsafe`; nothing ever unblocks them.
//!   SIGTTOU so that a log line written from a background group to a
//!   terminal with `tostop` does not stop it.
//! - **Nothing depends on the parent.** The guard follows the worker's
//!   pipe, not its parent pid, so it works whoever started the worker (a
//!   shell, the master, `setsid`).
//!
//! - **No step code runs unregistered.** A step's process exists before its
//!   `add` line can be written, and on a loaded machine the worker may only
//!   get to write it tens of milliseconds after the step's `exec`. So each
//!   step starts held at a gate ([`super::gate`]) that the worker opens
//!   after the `add`; a worker killed in between closes the gate, and the
//!   step exits without running anything.
//!
//! Known limits: a group id is unregistered just after its leader is
//! reaped, so in that instant the id could in theory be reused. If the
//! guard itself dies, the worker logs it once and goes on without one.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};
use tracing::{info, warn};

use super::group::signal_group;

/// The hidden command-line flag that makes `bbworker` a guard. Not part of
/// the clap definition, so it appears in neither `--help` nor the man page.
pub const GUARD_FLAG: &str = "--guard";

/// The program name of a worker's guard process; it too enters the worker's
/// main (see [`crate::worker::cli`]).
pub const GUARD_ARGV0: &str = "bbworker-guard";

/// The worker's end of the guard: registers and unregisters step groups.
pub struct Guard {
    inner: Mutex<Option<Link>>,
}

/// An open line to a guard.
struct Link {
    to_guard: Box<dyn Write + Send>,
    /// The guard process, when we started one (reaped if it dies early).
    child: Option<Child>,
}

impl Guard {
    /// Start `exe --guard` as this worker's guard.
    pub fn spawn(exe: &Path) -> std::io::Result<Guard> {
        let mut child = super::reaper::spawn_own(
            || {
                Command::new(exe)
                    // What `ps` shows; the flag alone makes it a guard.
                    .arg0(GUARD_ARGV0)
                    // Hold no directory busy.
                    .current_dir("/")
                    .arg(GUARD_FLAG)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .process_group(0)
                    .spawn()
            },
            |c| Some(c.id()),
        )?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the guard's stdin is not a pipe"))?;
        Ok(Guard {
            inner: Mutex::new(Some(Link {
                to_guard: Box::new(stdin),
                child: Some(child),
            })),
        })
    }

    /// A guard fed through `writer` (tests run the guard loop in-process).
    pub fn over(writer: impl Write + Send + 'static) -> Guard {
        Guard {
            inner: Mutex::new(Some(Link {
                to_guard: Box::new(writer),
                child: None,
            })),
        }
    }

    /// No guard at all: for tests that cannot re-execute a worker binary.
    pub fn disabled() -> Guard {
        Guard {
            inner: Mutex::new(None),
        }
    }

    /// Have the guard kill `pgid` if this worker dies.
    pub(crate) fn add(&self, pgid: u32) {
        self.tell(&format!("add {pgid}\n"));
    }

    /// The group `pgid` is gone; the guard must forget it.
    pub(crate) fn del(&self, pgid: u32) {
        self.tell(&format!("del {pgid}\n"));
    }

    /// Write one line. Lines are tiny and the guard reads continuously, so
    /// the blocking write returns at once.
    fn tell(&self, line: &str) {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(link) = inner.as_mut() else {
            return;
        };
        let written = link
            .to_guard
            .write_all(line.as_bytes())
            .and_then(|()| link.to_guard.flush());
        if let Err(e) = written {
            warn!(
                "the guard process is gone ({e}); steps will no longer be cleaned up if this worker is killed"
            );
            if let Some(mut child) = link.child.take() {
                let _ = child.try_wait();
            }
            *inner = None;
        }
    }
}

/// `bbworker --guard`: block the signals that must not end us, then serve
/// stdin until EOF and kill what is left.
pub fn guard_main() {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGTTOU,
    ] {
        blocked.add(signal);
    }
    if let Err(e) = blocked.thread_block() {
        warn!("guard: cannot block signals: {e}");
    }
    let killed = serve_guard(std::io::stdin().lock(), |pgid| {
        signal_group(pgid, Signal::SIGKILL);
    });
    if killed > 0 {
        info!("guard: the worker is gone; killed {killed} step process group(s)");
    }
}

/// The guard's protocol: `add <pgid>` / `del <pgid>` lines until EOF (or a
/// read error: the worker is gone either way), then `kill` every group
/// still registered. Returns how many were killed.
pub fn serve_guard(input: impl BufRead, mut kill: impl FnMut(u32)) -> usize {
    let mut groups = BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        match line.split_once(' ') {
            Some(("add", id)) => match id.trim().parse::<u32>() {
                Ok(pgid) => {
                    groups.insert(pgid);
                }
                Err(_) => warn!("guard: bad line {line:?}"),
            },
            Some(("del", id)) => match id.trim().parse::<u32>() {
                Ok(pgid) => {
                    groups.remove(&pgid);
                }
                Err(_) => warn!("guard: bad line {line:?}"),
            },
            _ => warn!("guard: bad line {line:?}"),
        }
    }
    for &pgid in &groups {
        kill(pgid);
    }
    groups.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::test_util::{eventually, live_members};

    #[test]
    fn lines_add_and_remove_groups_until_eof() {
        let input = "add 10\nadd 11\nbogus\nadd x\ndel 10\nadd 12\n";
        let mut killed = Vec::new();
        let n = serve_guard(input.as_bytes(), |pgid| killed.push(pgid));
        assert_eq!(n, 2);
        assert_eq!(killed, [11, 12]);
    }

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("spawn sleep")
    }

    #[tokio::test]
    async fn eof_kills_the_registered_groups_only() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let guard_thread = std::thread::spawn(move || {
            serve_guard(std::io::BufReader::new(reader), |pgid| {
                signal_group(pgid, Signal::SIGKILL);
            })
        });
        let mut kept = sleeper();
        let mut doomed = sleeper();
        let guard = Guard::over(writer);
        guard.add(kept.id());
        guard.add(doomed.id());
        guard.del(kept.id());
        // The worker "dies": its end of the pipe closes.
        drop(guard);
        let killed = tokio::task::spawn_blocking(move || guard_thread.join())
            .await
            .expect("join")
            .expect("guard thread");
        assert_eq!(killed, 1);
        let status = doomed.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let pgid = i32::try_from(doomed.id()).expect("pid");
        eventually("the doomed group is gone", || live_members(pgid).is_empty()).await;
        assert!(kept.try_wait().expect("try_wait").is_none(), "kept alive");
        kept.kill().expect("kill");
        kept.wait().expect("wait");
    }
}
