//! Bounded waits: a condition, a line in a file, lines from a
//! process's output, a subscription being in place.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Wait (bounded) for `cond` to hold, polling every 20 ms.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for a file to hold a complete line, and return it.
pub fn wait_for_line_in(path: &Path, timeout: Duration) -> String {
    let mut line = String::new();
    wait_until(
        &format!("a line in {}", path.display()),
        timeout,
        || match fs::read_to_string(path) {
            Ok(s) if s.ends_with('\n') => {
                line = s.trim_end().to_string();
                true
            }
            _ => false,
        },
    );
    line
}

/// A process started in the background whose stdout is read line by line
/// as it comes (`bbctl events`, `bbctl watch | cat`); killed on drop.
pub struct LineReader {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl LineReader {
    /// Start `cmd` with stdout read line by line and stderr kept.
    pub fn spawn(cmd: Command) -> LineReader {
        let (what, mut child) = spawn_piped(cmd);
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped");
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        LineReader {
            child,
            what,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Read lines until one satisfies `pred` within `timeout`; returns the
    /// lines read by this call (the matching one last), or `None`.
    pub fn try_read_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left)?;
            let done = pred(&line);
            got.push(line);
            if done {
                return Some(got);
            }
        }
    }

    /// Like [`LineReader::try_read_until`], failing the test on a timeout.
    pub fn read_until(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        self.try_read_until(timeout, pred).unwrap_or_else(|| {
            panic!(
                "{}: no line with {what} within {timeout:?}; got:\n{}",
                self.what,
                self.seen.join("\n")
            )
        })
    }

    /// Wait (bounded) for the process to exit by itself; its status, and
    /// every stdout line it printed (from the first, `seen` included).
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let status = wait_child(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.what));
        while let Some(_line) = self.next_line(Duration::from_secs(2)) {}
        (status, std::mem::take(&mut self.seen))
    }

    /// Kill the process; returns what it wrote on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| text(&b))
            .unwrap_or_default()
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Make sure `reader` (`bbctl events` or `bbctl watch` on a pipe, just
/// started) is subscribed: the event stream has no acknowledgement, so
/// cause a harmless event (`bbctl undrain` of a master that is not
/// draining emits `master_draining`) until a line with `needle` shows up.
pub fn await_subscription(master: &Master, reader: &mut LineReader, needle: &str) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        master.bbctl_code(&["undrain"], 0);
        if reader
            .try_read_until(Duration::from_millis(250), |l| l.contains(needle))
            .is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not subscribed after {STARTUP_TIMEOUT:?}; got:\n{}",
            reader.what,
            reader.seen.join("\n")
        );
    }
}
