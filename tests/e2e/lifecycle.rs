//! The master's life: shutdown, restart, a crash, a second master.

use std::time::Duration;

use crate::harness::{
    EXIT_TIMEOUT, Master, code, describe, process_gone, run_with_timeout, start_worker, text,
    wait_for_line_in, wait_until,
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
    assert_eq!(text(&out.stdout), "the master is shutting down\n");
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
    let mut m = Master::start_with_files(GHOST, &[("ghost.secret", "boo\n")]);
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

/// A master killed with SIGKILL in the middle of a build takes the build's
/// processes with it (its local worker stops them when the link drops); a
/// restarted master records that build as an exception and runs its
/// request again, before the requests queued after it.
#[test]
fn crash_mid_build_requeues_and_leaves_no_process() {
    let mut m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "b"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "if [ $BB_BUILD_ID = 1 ]; then echo $$ > @DIR@/pid.tmp; mv @DIR@/pid.tmp @DIR@/pid; exec sleep 30; fi; echo run $BB_BUILD_ID"
"#,
    );
    assert_eq!(m.force_build("b"), 1);
    let pid: i32 = wait_for_line_in(&m.path().join("pid"), Duration::from_secs(10))
        .parse()
        .expect("a pid");
    assert_eq!(m.force_build("b"), 2);

    m.kill9();
    wait_until(
        "the step to die with the master",
        Duration::from_secs(10),
        || process_gone(pid),
    );

    m.spawn();
    // Request 2 queued behind request 1's second attempt (max_builds = 1).
    let out = m.bbctl_code(&["force-build", "b", "--follow"], 0);
    assert_eq!(text(&out.stdout), "run 4\n");
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
    let want: Vec<(u64, u64, String)> = vec![
        (4, 3, "success".into()),
        (3, 2, "success".into()),
        (2, 1, "success".into()),
        (1, 1, "exception".into()),
    ];
    assert_eq!(got, want, "{builds}");
    let first = m.bbctl_json(&["build", "1"]);
    assert!(
        first["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("master stopped"),
        "{first}"
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "run 2\n");
}
