//! Controlling builds: stop, step timeouts, cancel, and status.

use std::time::Duration;

use crate::harness::{Master, describe, process_gone, text, wait_for_line_in, wait_until};

/// `bbctl stop` of a build whose step runs `sleep 30` (plus a background
/// grandchild in the same process group) ends the build as cancelled, the
/// waiting `force-build --wait` exits 1, and no process of the step's group
/// is left.
#[test]
fn stop_kills_the_whole_step() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "sleepy"
workers = ["local-1"]

  [[builder.step]]
  name = "nap"
  shell = "sleep 30 & echo $! > @DIR@/bg.tmp; mv @DIR@/bg.tmp @DIR@/bg.pid; echo $$ > @DIR@/sh.tmp; mv @DIR@/sh.tmp @DIR@/sh.pid; echo napping; exec sleep 30"

  [[builder.step]]
  name = "after"
  shell = "echo must not run"
"#,
    );
    let mut waiter = m.bbctl_spawn(&["force-build", "sleepy", "--wait"]);
    let queued = waiter.wait_stderr("queued", Duration::from_secs(10));
    assert_eq!(queued, "request r1 queued for sleepy");

    let sh: i32 = wait_for_line_in(&m.path().join("sh.pid"), Duration::from_secs(10))
        .parse()
        .expect("a pid");
    let bg: i32 = wait_for_line_in(&m.path().join("bg.pid"), Duration::from_secs(10))
        .parse()
        .expect("a pid");
    assert!(!process_gone(sh) && !process_gone(bg), "the step runs");

    let status = m.bbctl_json(&["status"]);
    assert_eq!(
        status["builders"][0]["running_builds"],
        serde_json::json!([1]),
        "{status}"
    );

    let out = m.bbctl_code(&["stop", "1"], 0);
    assert!(
        text(&out.stderr).contains("build 1 (request r1) is stopping"),
        "stop says what it did, and whose build it is: {}",
        describe(&out)
    );
    assert!(text(&out.stdout).is_empty(), "a confirmation is not data");

    let out = waiter.finish(Duration::from_secs(15));
    assert_eq!(
        out.status.code(),
        Some(1),
        "--wait of a stopped build: {out:?}"
    );
    assert!(
        text(&out.stderr).contains("build 1 finished: cancelled"),
        "{}",
        text(&out.stderr)
    );

    wait_until(
        "the step's processes to be gone",
        Duration::from_secs(5),
        || process_gone(sh) && process_gone(bg),
    );

    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["result"], "cancelled", "{detail}");
    assert_eq!(detail["steps"].as_array().unwrap().len(), 1, "{detail}");
    assert_eq!(detail["steps"][0]["result"], "cancelled", "{detail}");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "napping\n");
    // Following a finished, cancelled build replays it and exits 1.
    m.bbctl_code(&["log", "1", "--follow"], 1);
    // It is over: stopping it again is refused.
    m.bbctl_code(&["stop", "1"], 5);
}

/// A step that outlives its `timeout` is killed and fails the build, with
/// a reason that says it timed out.
#[test]
fn step_timeout_fails_the_build() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "slow"
workers = ["local-1"]

  [[builder.step]]
  name = "forever"
  command = ["sleep", "30"]
  timeout = "300ms"
"#,
    );
    let started = std::time::Instant::now();
    m.bbctl_code(&["force-build", "slow", "--wait"], 1);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout did not end the step"
    );
    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["result"], "failure", "{detail}");
    let step = &detail["steps"][0];
    assert_eq!(step["result"], "failure", "{detail}");
    let reason = step["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timed out"), "step reason: {detail}");
}

/// Cancelling a queued request (its builder's only worker is busy with
/// max_builds = 1) removes it from the queue: the client waiting on it exits
/// 1 saying it was cancelled before it started, no build ever runs for it,
/// and a second cancel is refused (exit 5).
#[test]
fn cancel_a_queued_request() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "slow"
workers = ["local-1"]

  [[builder.step]]
  name = "hold"
  shell = "touch @DIR@/running; exec sleep 30"
"#,
    );
    assert_eq!(m.force_build("slow"), 1);
    wait_until("the first build to run", Duration::from_secs(10), || {
        m.path().join("running").exists()
    });
    let mut waiter = m.bbctl_spawn(&["force-build", "slow", "--wait"]);
    assert_eq!(
        waiter.wait_stderr("queued", Duration::from_secs(10)),
        "request r2 queued for slow"
    );
    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["builders"][0]["queued"], 1, "{status}");
    assert_eq!(status["builders"][0]["running"], 1, "{status}");

    m.bbctl_code(&["cancel", "2"], 0);
    let out = waiter.finish(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("request cancelled before it started"),
        "{}",
        text(&out.stderr)
    );

    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["builders"][0]["queued"], 0, "{status}");
    m.bbctl_code(&["cancel", "2"], 5);

    // Free the worker; still no build for request 2.
    m.bbctl_code(&["stop", "1"], 0);
    m.bbctl_code(&["log", "1", "--follow"], 1);
    let builds = m.bbctl_json(&["builds"]);
    let requests: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["request_id"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, vec![1], "{builds}");
}

/// `status --json` has the documented keys and the worker-builder mapping:
/// with two builders sharing `local-1`, the worker lists both.
#[test]
fn status_json_shows_the_worker_builder_mapping() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 3

[[builder]]
name = "alpha"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "true"

[[builder]]
name = "beta"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#,
    );
    // A finished build proves the local worker has connected.
    m.bbctl_code(&["force-build", "alpha", "--wait"], 0);
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["generation"], 1, "{s}");
    assert_eq!(s["master_pid"], m.pid(), "{s}");
    let builders = s["builders"].as_array().expect("builders is a list");
    let names: Vec<_> = builders
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"], "{s}");
    for b in builders {
        assert_eq!(b["queued"], 0, "{s}");
        assert_eq!(b["running"], 0, "{s}");
        assert_eq!(b["workers"], serde_json::json!(["local-1"]), "{s}");
    }
    let workers = s["workers"].as_array().expect("workers is a list");
    assert_eq!(workers.len(), 1, "{s}");
    assert_eq!(workers[0]["name"], "local-1", "{s}");
    assert_eq!(workers[0]["connected"], true, "{s}");
    assert_eq!(workers[0]["max_builds"], 3, "{s}");
    assert_eq!(
        workers[0]["builders"],
        serde_json::json!(["alpha", "beta"]),
        "{s}"
    );

    // The human form shows the same mapping.
    let human = m.bbctl_ok(&["status"]);
    assert!(
        human.lines().any(|l| l.starts_with("local-1 (local)")
            && l.contains("connected")
            && l.ends_with("alpha, beta")),
        "{human}"
    );
}
