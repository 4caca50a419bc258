//! A step's end is the worker's until the master has stored it (protocol
//! 5, `end_kept`): an end that reached a master killed before its commit
//! is sent again to the next master, and the step is never run again.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{
    Background, Master, Transport, text, wait_for_line_in, wait_until, worker_command,
};

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// One remote worker `w1` and a builder whose step prints, waits for the
/// marker `go`, counts its runs in `runs`, and prints again.
const CONFIG: &str = r#"
[master]
worker_grace = "60s"

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "b"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "echo before; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo ran >> @DIR@/runs; echo after"
"#;

/// Start `w1`, logging (at debug level) each step end it writes.
fn start_w1(m: &Master) -> Background {
    let mut cmd = worker_command(
        &m.worker_args(),
        "w1",
        &m.path().join("w1.secret"),
        &m.path().join("w-w1"),
        &[],
    );
    cmd.env("BBWORKER_LOG", "info,bbctl::worker::sender=debug");
    Background::spawn(cmd)
}

/// Build 1 of `m` ended `success` with `before` and `after` in its log,
/// its step ran once, and the worker let it go (its spool is deleted once
/// the master's receipt came).
fn built_once(m: &Master, worker: &mut Background) {
    let out = m.bbctl_code(&["log", "1", "--follow"], 0);
    assert_eq!(text(&out.stdout), "before\nafter\n");
    let builds = m.bbctl_json(&["builds"]);
    let builds = builds.as_array().expect("builds --json is an array");
    assert_eq!(builds.len(), 1, "one build: {builds:?}");
    assert_eq!(builds[0]["result"], "success", "{builds:?}");
    worker.wait_stderr("the master resumed a step", WAIT);
    assert_eq!(
        fs::read_to_string(m.path().join("runs")).expect("runs"),
        "ran\n",
        "the step ran once"
    );
    let spool = m.path().join("w-w1/.spool");
    wait_until("the worker to delete the step's spool", WAIT, || {
        fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_none())
    });
}

/// The master is frozen (SIGSTOP) while the step ends, so the worker's
/// output and end sit unread in the master's socket, then killed with
/// `kill -9`: the end reached the master but was never stored. The
/// restarted master re-adopts the build; the worker, still holding the
/// end, sends it again; the build ends `success` with its whole log, and
/// the step ran once.
#[test]
fn an_end_a_killed_master_never_stored_is_sent_again_not_run_again() {
    let mut m = Master::start_over(
        Transport::Unix,
        CONFIG,
        &[("w1.secret", "w1-secret-0123456789\n")],
    );
    let mut worker = start_w1(&m);
    assert_eq!(m.force_build("b"), 1);
    wait_until("the first line in the master's log", WAIT, || {
        text(&m.bbctl(&["log", "1"]).stdout) == "before\n"
    });

    m.signal(Signal::SIGSTOP);
    fs::write(m.path().join("go"), "").expect("cannot write the marker");
    assert_eq!(wait_for_line_in(&m.path().join("runs"), WAIT), "ran");
    // Written to the frozen master's socket, not stored by anyone.
    worker.wait_stderr("end written; holding it", WAIT);
    m.kill9();

    m.spawn();
    built_once(&m, &mut worker);
    drop(worker);
}
