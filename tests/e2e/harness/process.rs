//! Processes a test started: running one to its end within a bound,
//! reading its output, following one in the background, and checking
//! that a pid is gone.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;

/// Run `cmd` to completion with captured output, killing it and failing
/// the test if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("cannot wait for {what}: {e}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let partial = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok);
            let (out, err) = partial
                .map(|o| (text(&o.stdout), text(&o.stderr)))
                .unwrap_or_default();
            panic!(
                "{what} did not finish within {timeout:?}; killed it\n--- stdout\n{out}\n--- stderr\n{err}"
            );
        }
    }
}

/// Bytes as (lossy) text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code of a finished process (-1 if a signal ended it).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Stdout and stderr of `out`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Wait (bounded) for `child` to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for a child: {e}"),
        }
    }
}

/// True when `pid` no longer runs: gone, or a zombie waiting to be reaped.
pub fn process_gone(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Err(Errno::ESRCH) => true,
        _ => process_state(pid) == Some('Z'),
    }
}

/// Wait (bounded) until `pid` no longer runs (a zombie counts as gone).
pub fn wait_gone(pid: i32, timeout: Duration) {
    wait_until(&format!("process {pid} to be gone"), timeout, || {
        process_gone(pid)
    });
}

/// The state letter of `/proc/PID/stat` (R, S, Z, ...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Live (non-zombie) processes, other than this one, whose command line
/// mentions `dir` or whose working directory is inside it.
pub fn processes_using(dir: &Path) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let dir_str = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || process_state(pid).is_none_or(|s| s == 'Z') {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| text(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_dir =
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if cmdline.contains(&dir_str) || in_dir {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Start `cmd` with stdout and stderr piped; panics naming the command
/// if it cannot start. Returns the command's description too.
pub fn spawn_piped(mut cmd: Command) -> (String, Child) {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    (what, child)
}

/// A process started in the background whose stderr lines can be awaited.
pub struct Background {
    child: Option<Child>,
    what: String,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Background {
    /// Start `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: Command) -> Background {
        let (what, mut child) = spawn_piped(cmd);
        let mut out = child.stdout.take().expect("piped");
        let stdout = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let err = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child: Some(child),
            what,
            stdout: Some(stdout),
            lines,
            stderr: Vec::new(),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("already finished").id()
    }

    /// Send `signal` to the process (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to {}: {e}", self.what));
    }

    /// Kill the process with SIGKILL, as a crash would, and reap it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("already finished");
        child.kill().expect("cannot kill a background process");
        child.wait().expect("cannot reap a background process");
    }

    /// Wait (bounded) for a stderr line containing `needle`; returns it.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no stderr line with {needle:?} within {timeout:?}; got:\n{}",
                    self.what,
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Wait (bounded) for the process to exit; returns its output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("already finished");
        let status = wait_child(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not exit within {timeout:?}; killed it\n--- stderr so far\n{}",
                self.what,
                self.stderr.join("\n")
            )
        });
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // The reader thread ends at EOF, which came with the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stderr.push(line);
        }
        let mut stderr = self.stderr.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        Output {
            status,
            stdout,
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
