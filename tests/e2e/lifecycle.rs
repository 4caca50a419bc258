//! The master's life: shutdown, restart, a crash, a second master.

use std::fs;
use std::time::Duration;

use crate::harness::{
    EXIT_TIMEOUT, Master, code, describe, process_gone, processes_using, run_with_timeout,
    start_worker, text, wait_for_line_in,
};

const QUICK: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo quick $BB_BUILD_ID"
"#;

/// `bbctl shutdown` exits 0, the master exits cleanly with its local worker,
/// its sockets are removed, and a master restarted on the same state dir
/// still has the earlier builds and their logs.
#[test]
fn shutdown_and_restart_keep_history() {
    let mut m = Master::start(QUICK);
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);

    let out = m.bbctl_code(&["shutdown"], 0);
    // A confirmation: on stderr (stdout holds data only).
    assert!(
        text(&out.stderr).starts_with("the master is shutting down"),
        "{}",
        describe(&out)
    );
    assert_eq!(text(&out.stdout), "", "{}", describe(&out));
    let status = m.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "bbmaster exited with {status}\n{}",
        m.stderr()
    );
    assert!(
        !m.control_socket().exists(),
        "the control socket is left behind"
    );
    assert!(
        !m.worker_socket().exists(),
        "the worker socket is left behind"
    );
    m.bbctl_code(&["status"], 3);

    m.spawn();
    let builds = m.bbctl_json(&["builds"]);
    let ids: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_u64().unwrap(), b["result"].clone()))
        .collect();
    assert_eq!(
        ids,
        vec![(2, "success".into()), (1, "success".into())],
        "{builds}"
    );
    assert_eq!(m.bbctl_ok(&["log", "1"]), "quick 1\n");
    // New builds continue the numbering.
    let out = m.bbctl_code(&["force-build", "quick", "--follow"], 0);
    assert_eq!(text(&out.stdout), "quick 3\n");
}

const GHOST: &str = r#"
[[worker]]
name = "ghost"
secret_file = "@DIR@/ghost.secret"
max_builds = 1

[[builder]]
name = "later"
workers = ["ghost"]

  [[builder.step]]
  name = "s"
  shell = "echo build $BB_BUILD_ID"
"#;

/// Queued requests are committed before `force-build` answers: after a
/// `kill -9` of the master, a restarted master still has all three queued
/// (and no build ran), and when the worker finally connects they run in
/// the order they were asked for.
#[test]
fn queued_requests_survive_kill_9() {
    let mut m = Master::start_with_files(GHOST, &[("ghost.secret", "boo-ghost-secret-0123\n")]);
    let ids: Vec<u64> = (0..3).map(|_| m.force_build("later")).collect();
    assert_eq!(ids, [1, 2, 3]);
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["builders"][0]["queued"], 3, "{s}");

    m.kill9();
    m.spawn();
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["builders"][0]["queued"], 3, "{s}");
    assert_eq!(s["builders"][0]["running"], 0, "{s}");
    assert_eq!(m.bbctl_json(&["builds"]), serde_json::json!([]));

    let worker = start_worker(&m, "ghost", &m.path().join("ghost.secret"));
    let out = m.bbctl_code(&["force-build", "later", "--follow"], 0);
    assert_eq!(text(&out.stdout), "build 4\n");
    let builds = m.bbctl_json(&["builds"]);
    let order: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["result"], "success", "{b}");
            (b["id"].as_u64().unwrap(), b["request_id"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(order, [(4, 4), (3, 3), (2, 2), (1, 1)], "{builds}");
    for id in 1..=3 {
        assert_eq!(
            m.bbctl_ok(&["log", &id.to_string()]),
            format!("build {id}\n")
        );
    }
    drop(worker);
}

/// A second master on a state dir that is in use refuses to start, names
/// the running master's pid, and leaves the first one working.
#[test]
fn second_master_on_same_state_dir_is_refused() {
    let m = Master::start(QUICK);
    let out = run_with_timeout(m.master_command(), Duration::from_secs(10));
    assert_ne!(code(&out), 0, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", m.pid())),
        "the refusal does not name pid {}: {err}",
        m.pid()
    );
    assert!(
        m.control_socket().exists(),
        "the second master removed the socket"
    );
    m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    assert_eq!(m.bbctl_json(&["status"])["master_pid"], m.pid());
}

/// A master killed with SIGKILL in the middle of a build does not
/// interrupt it: the local worker keeps the step running and keeps the
/// output it writes while no master listens; the restarted master adopts
/// that worker (no second one is started), re-adopts the build, and the
/// build finishes with its true result and its whole log, once, before the
/// request queued behind it.
#[test]
fn a_build_survives_a_master_crash_and_is_re_adopted() {
    let mut m = Master::start(
        r#"
[master]
worker_grace = "60s"

[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "b"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "if [ $BB_BUILD_ID = 1 ]; then echo before; echo $$ > @DIR@/pid.tmp; mv @DIR@/pid.tmp @DIR@/pid; while [ ! -e @DIR@/go1 ]; do sleep 0.02; done; echo middle; while [ ! -e @DIR@/go2 ]; do sleep 0.02; done; echo after; else echo run $BB_BUILD_ID; fi"
"#,
    );
    assert_eq!(m.force_build("b"), 1);
    let pid: i32 = wait_for_line_in(&m.path().join("pid"), Duration::from_secs(10))
        .parse()
        .expect("a pid");
    assert_eq!(m.force_build("b"), 2);
    let workers_before = local_worker_pids(&m);
    assert_eq!(workers_before.len(), 1, "one local worker");

    m.kill9();
    // The step goes on and writes while no master listens.
    fs::write(m.path().join("go1"), "").unwrap();
    assert!(!process_gone(pid), "the step died with the master");

    m.spawn();
    fs::write(m.path().join("go2"), "").unwrap();
    let out = m.bbctl_code(&["log", "1", "--follow"], 0);
    assert_eq!(text(&out.stdout), "before\nmiddle\nafter\n");
    m.bbctl_code(&["log", "2", "--follow"], 0);
    assert_eq!(
        local_worker_pids(&m),
        workers_before,
        "the same worker, adopted"
    );
    let builds = m.bbctl_json(&["builds"]);
    let got: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["request_id"].as_u64().unwrap(),
                b["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String)> = vec![(2, 2, "success".into()), (1, 1, "success".into())];
    assert_eq!(got, want, "{builds}");
    assert_eq!(m.bbctl_ok(&["log", "2"]), "run 2\n");
}

/// Pids of the local workers (not their guards) of this master.
fn local_worker_pids(m: &Master) -> Vec<i32> {
    let mut pids: Vec<i32> = processes_using(m.path())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("bbworker") && cmd.contains("--name local-1"))
        .map(|(pid, _)| pid)
        .collect();
    pids.sort();
    pids
}
