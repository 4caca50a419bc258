//! Running `git` for a poller: a private configuration, a clean
//! environment, a timeout after which the command's whole process group
//! is killed, and output read in full.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Settings given to every git command: no hooks, no command-running
/// transports, no gc in the background, no prune unless asked, paths as
/// they are.
pub const GIT_SETTINGS: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "fetch.prune=false",
    "-c",
    "gc.autoDetach=false",
    "-c",
    "maintenance.autoDetach=false",
    "-c",
    "core.quotePath=false",
    "-c",
    "core.askPass=true",
];

/// Variables of the master's environment git may see: what it needs to
/// find programs, a home (ssh keys) and an ssh agent.
const PASSED: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SSH_AUTH_SOCK", "TMPDIR"];

/// Most output kept of a failing command's stderr, for its error.
const STDERR_SHOWN: usize = 1000;

/// Why a git command failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// It could not be started (no `git` in `PATH`).
    #[error("cannot run `git {args}`: {source}")]
    Spawn {
        /// Its arguments.
        args: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error("`git {args}` took longer than {}; killed", humantime::format_duration(*.after))]
    TimedOut {
        /// Its arguments.
        args: String,
        /// The timeout.
        after: Duration,
    },
    /// It failed.
    #[error("`git {args}` failed ({status}): {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// How it ended.
        status: String,
        /// The end of what it said.
        stderr: String,
    },
    /// Reading its output failed.
    #[error("`git {args}`: {source}")]
    Io {
        /// Its arguments.
        args: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How a poller runs git: where, and within which time.
#[derive(Debug, Clone)]
pub struct Git {
    /// The working directory (the mirror, or its parent to create it).
    pub dir: PathBuf,
    /// The limit of one command.
    pub timeout: Duration,
    /// `GIT_SSH_COMMAND`: the master's own if it has one, else ssh in
    /// batch mode (no password or host key prompt).
    pub ssh_command: String,
}

impl Git {
    /// A runner in `dir`.
    pub fn new(dir: PathBuf, timeout: Duration) -> Self {
        Git {
            dir,
            timeout,
            ssh_command: std::env::var("GIT_SSH_COMMAND")
                .unwrap_or_else(|_| "ssh -o BatchMode=yes".to_owned()),
        }
    }

    /// Run `git args` and return its stdout, or why not.
    pub async fn run(&self, args: &[&str]) -> Result<String, GitError> {
        self.run_in(&self.dir, args).await
    }

    /// Run `git args` in `dir`.
    pub async fn run_in(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        let shown = args.join(" ");
        let mut cmd = Command::new("git");
        cmd.args(GIT_SETTINGS)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(
                PASSED
                    .iter()
                    .filter_map(|k| Some((*k, std::env::var_os(k)?))),
            )
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_SSH_COMMAND", &self.ssh_command)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child =
            crate::worker::reaper::spawn_own(|| cmd.spawn(), |c| c.id()).map_err(|source| {
                GitError::Spawn {
                    args: shown.clone(),
                    source,
                }
            })?;
        let mut guard = GroupGuard(child.id());
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let work = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (o, e) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
            o.and(e)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, work).await;
        if let Ok(Ok(_)) = &outcome {
            // Reaped, and every writer of its pipes gone: nothing is left
            // of its group (and its id may be reused from now on).
            if let Some(pid) = guard.0.take() {
                crate::worker::reaper::forget_own(pid);
            }
        }
        drop(guard);
        let (status, out, err) = match outcome {
            Err(_) => {
                return Err(GitError::TimedOut {
                    args: shown,
                    after: self.timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(GitError::Io {
                    args: shown,
                    source,
                });
            }
            Ok(Ok(done)) => done,
        };
        if !status.success() {
            let text = String::from_utf8_lossy(&err);
            let text = text.trim();
            let start = text.len().saturating_sub(STDERR_SHOWN);
            let start = (start..=text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            return Err(GitError::Failed {
                args: shown,
                status: status.to_string(),
                stderr: text[start..].replace('\n', "; "),
            });
        }
        String::from_utf8(out).map_err(|e| GitError::Io {
            args: shown,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }
}

/// Kills a git command's process group when the command timed out or its
/// poller is stopped mid-command (the future dropped): what git started
/// (ssh, a helper) must not outlive it. The master's reaper
/// may then reap the process, tokio's otherwise.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            crate::worker::reaper::forget_own(pid);
        }
    }
}
