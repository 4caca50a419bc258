//! Durability (docs/durability.md): running builds outlive a master
//! restart, lost workers go through the grace period and the retry cap,
//! keepalive notices a frozen worker, a worker killed with `kill -9` leaves
//! no step behind, drain and its cancel, and storage faults at start.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{
    BBMASTER, EXIT_TIMEOUT, Master, Transport, code, command, describe, over_unix_and_tls,
    process_gone, processes_using, run_with_timeout, start_worker, start_worker_in, temp_dir, text,
    wait_for_line_in, wait_gone, wait_until,
};

/// How long a step's marker, a build's end or a process's exit may take.
const WAIT: Duration = Duration::from_secs(15);

/// A config with one remote worker `w1` (secret in `@DIR@/w1.secret`,
/// `max_builds` slots), one builder `b` on it running `shell`, and `master`
/// as the `[master]` table's body.
fn remote_config(master: &str, max_builds: u32, shell: &str) -> String {
    format!(
        r#"
[master]
{master}

[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"
max_builds = {max_builds}

[[builder]]
name = "b"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "{shell}"
"#
    )
}

/// A master on `config` with the secret of `w1` written, serving remote
/// workers over `transport`.
fn master_with_w1(transport: Transport, config: &str) -> Master {
    Master::start_over(
        transport,
        config,
        &[("w1.secret", "w1-secret-0123456789\n")],
    )
}

/// Start the remote worker `w1` of `m`.
fn w1(m: &Master) -> crate::harness::Background {
    start_worker(m, "w1", &m.path().join("w1.secret"))
}

/// Shell that records the step's pid in `@DIR@/<name>` (atomically).
fn record_pid(name: &str) -> String {
    format!("echo $$ > @DIR@/{name}.tmp; mv @DIR@/{name}.tmp @DIR@/{name}")
}

/// Wait (bounded) for the pid a step recorded in `<dir>/<name>`.
fn wait_pid(m: &Master, name: &str) -> i32 {
    wait_for_line_in(&m.path().join(name), WAIT)
        .parse()
        .unwrap_or_else(|e| panic!("{name} holds no pid: {e}"))
}

/// Create the marker file `<dir>/<name>` a step waits for.
fn release(m: &Master, name: &str) {
    fs::write(m.path().join(name), "").expect("cannot write a marker");
}

/// `builds --json` as (build id, request id, result or "").
fn builds(m: &Master) -> Vec<(u64, u64, String)> {
    let v = m.bbctl_json(&["builds", "--limit", "1000"]);
    v.as_array()
        .unwrap_or_else(|| panic!("builds --json is not an array: {v}"))
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["request_id"].as_u64().unwrap(),
                b["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Wait (bounded) until build `id` exists and has a result; returns its
/// `builds --json` entry.
fn wait_finished(m: &Master, id: u64, timeout: Duration) -> Value {
    let mut found = Value::Null;
    wait_until(&format!("build {id} to finish"), timeout, || {
        let v = m.bbctl_json(&["builds", "--limit", "1000"]);
        match v.as_array().unwrap().iter().find(|b| b["id"] == id) {
            Some(b) if !b["result"].is_null() => {
                found = b.clone();
                true
            }
            _ => false,
        }
    });
    found
}

/// The builder `b`'s (queued, running) counts in `status --json`.
fn queue_of_b(m: &Master) -> (u64, u64) {
    let s = m.bbctl_json(&["status"]);
    let b = &s["builders"][0];
    assert_eq!(b["name"], "b", "{s}");
    (
        b["queued"].as_u64().unwrap(),
        b["running"].as_u64().unwrap(),
    )
}

/// Whether `status --json` shows worker `name` connected.
fn connected(m: &Master, name: &str) -> bool {
    let s = m.bbctl_json(&["status"]);
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {s}"))["connected"]
        == true
}

/// How the master goes away in [`running_build_survives`].
enum MasterStop {
    Kill9,
    Shutdown,
    Sigterm,
}

/// A remote worker's step prints, waits for a marker, prints more; the
/// master goes away (`how`) after it has the first line; the marker is
/// created and the step ends while no master runs; the restarted master
/// re-adopts the build, which ends `success` with exactly the whole log,
/// once.
fn running_build_survives(how: MasterStop, transport: Transport) {
    let shell = format!(
        "echo before; {}; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo after; touch @DIR@/done",
        record_pid("pid")
    );
    let mut m = master_with_w1(
        transport,
        &remote_config("worker_grace = \"60s\"", 1, &shell),
    );
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid");
    // The master has the first line before it goes: it must not be doubled.
    wait_until("the first line in the master's log", WAIT, || {
        text(&m.bbctl(&["log", "1"]).stdout) == "before\n"
    });

    match how {
        MasterStop::Kill9 => m.kill9(),
        MasterStop::Shutdown => {
            m.bbctl_code(&["shutdown"], 0);
            let status = m.wait_exit(EXIT_TIMEOUT);
            assert!(status.success(), "bbmaster: {status}\n{}", m.stderr());
        }
        MasterStop::Sigterm => {
            m.signal(Signal::SIGTERM);
            let status = m.wait_exit(EXIT_TIMEOUT);
            assert!(status.success(), "bbmaster: {status}\n{}", m.stderr());
        }
    }
    // A clean stop tells every connection, the worker's link included: it
    // closes at once, not at the master's one-second bound for laggards.
    assert!(
        !m.stderr().contains("connections still open"),
        "a connection outlived the master loop:\n{}",
        m.stderr()
    );
    assert!(!process_gone(pid), "the step died with the master");
    // The step writes and ends while no master listens.
    release(&m, "go");
    wait_until("the step to finish", WAIT, || {
        m.path().join("done").exists()
    });

    m.spawn();
    let out = m.bbctl_code(&["log", "1", "--follow"], 0);
    assert_eq!(text(&out.stdout), "before\nafter\n", "{}", describe(&out));
    assert_eq!(builds(&m), [(1, 1, "success".to_string())]);
    assert_eq!(m.bbctl_ok(&["log", "1"]), "before\nafter\n");
    assert_eq!(queue_of_b(&m), (0, 0));
    drop(worker);
}

/// A remote worker's build survives a `kill -9` of the master: the step
/// goes on, writes and ends while no master runs, and the restarted master
/// re-adopts it: one build, `success`, with its whole log exactly once.
fn build_survives_master_kill_9(transport: Transport) {
    running_build_survives(MasterStop::Kill9, transport);
}
over_unix_and_tls!(build_survives_master_kill_9 =>
    remote_worker_build_survives_master_kill_9,
    remote_worker_build_survives_master_kill_9_over_tls);

/// Plain `bbctl shutdown` exits at once (the worker's link closes because
/// it was told, not at the master's bound) and leaves the running step to
/// its remote worker, which reconnects; the next master re-adopts the build
/// and it ends `success` with its whole log exactly once.
fn shutdown_leaves_running_steps(transport: Transport) {
    running_build_survives(MasterStop::Shutdown, transport);
}
over_unix_and_tls!(shutdown_leaves_running_steps =>
    plain_shutdown_leaves_running_steps_to_the_next_master,
    plain_shutdown_leaves_running_steps_to_the_next_master_over_tls);

/// `SIGTERM` to the master behaves like plain `bbctl shutdown`: the
/// running step goes on and the next master re-adopts its build.
#[test]
fn sigterm_leaves_running_steps_to_the_next_master() {
    running_build_survives(MasterStop::Sigterm, Transport::Unix);
}

/// Build 1 records its pid and waits for the marker `go`; every other
/// build prints `ok N`.
fn first_build_waits() -> String {
    format!(
        "if [ $BB_BUILD_ID = 1 ]; then {}; while [ ! -e @DIR@/go ]; do sleep 0.02; done; fi; echo ok $BB_BUILD_ID",
        record_pid("pid")
    )
}

/// `shutdown --drain` with one build running and one request queued behind
/// it (max_builds = 1): the drain is accepted, new requests are refused
/// (exit 5), the queued request does not start, the running build finishes
/// `success`, the master says goodbye to its worker and exits by itself;
/// the queued request is still queued after a restart, and runs once a
/// worker comes.
fn drain_finishes_running_builds(transport: Transport) {
    let mut m = master_with_w1(transport, &remote_config("", 1, &first_build_waits()));
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    wait_pid(&m, "pid");
    assert_eq!(m.force_build("b"), 2);
    assert_eq!(queue_of_b(&m), (1, 1));

    m.bbctl_code(&["shutdown", "--drain"], 0);
    let out = m.bbctl_code(&["force-build", "b"], 5);
    assert!(
        !text(&out.stderr).is_empty(),
        "a refusal without a word: {}",
        describe(&out)
    );
    assert_eq!(queue_of_b(&m), (1, 1), "the drain changed the queue");

    release(&m, "go");
    let status = m.wait_exit(WAIT);
    assert!(status.success(), "bbmaster: {status}\n{}", m.stderr());
    let out = worker.finish(WAIT);
    assert_eq!(
        code(&out),
        0,
        "the worker after goodbye: {}",
        describe(&out)
    );

    m.spawn();
    assert_eq!(queue_of_b(&m), (1, 0), "the queued request after a drain");
    assert_eq!(builds(&m), [(1, 1, "success".to_string())]);
    assert_eq!(m.bbctl_ok(&["log", "1"]), "ok 1\n");

    let worker = w1(&m);
    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(
        (&b["request_id"], &b["result"]),
        (&2.into(), &"success".into())
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "ok 2\n");
    drop(worker);
}
over_unix_and_tls!(drain_finishes_running_builds =>
    drain_finishes_running_builds_starts_none_and_exits,
    drain_finishes_running_builds_starts_none_and_exits_over_tls);

/// `shutdown --cancel` with no drain in progress is refused (exit 5);
/// during a drain it stops the drain: the master goes on, accepts requests
/// again, and the queued request runs after the running build.
#[test]
fn shutdown_cancel_stops_a_drain() {
    let m = master_with_w1(Transport::Unix, &remote_config("", 1, &first_build_waits()));
    let worker = w1(&m);
    let out = m.bbctl_code(&["shutdown", "--cancel"], 5);
    assert!(
        text(&out.stderr).contains("not draining"),
        "{}",
        describe(&out)
    );

    assert_eq!(m.force_build("b"), 1);
    wait_pid(&m, "pid");
    assert_eq!(m.force_build("b"), 2);
    m.bbctl_code(&["shutdown", "--drain"], 0);
    m.bbctl_code(&["force-build", "b"], 5);
    m.bbctl_code(&["shutdown", "--cancel"], 0);
    assert_eq!(m.force_build("b"), 3);

    release(&m, "go");
    let b = wait_finished(&m, 3, WAIT);
    assert_eq!(b["result"], "success", "{b}");
    let want: Vec<(u64, u64, String)> = (1..=3).rev().map(|n| (n, n, "success".into())).collect();
    assert_eq!(builds(&m), want);
    for n in 1..=3 {
        assert_eq!(m.bbctl_ok(&["log", &n.to_string()]), format!("ok {n}\n"));
    }
    assert_eq!(m.bbctl_json(&["status"])["master_pid"], m.pid());
    drop(worker);
}

/// Build 1's step starts a background grandchild, records its pid (`gc`)
/// and its own (`pid`), and waits; other builds print `ok N`.
fn step_with_grandchild() -> String {
    format!(
        "if [ $BB_BUILD_ID = 1 ]; then sleep 300 & echo $! > @DIR@/gc.tmp; mv @DIR@/gc.tmp @DIR@/gc; {}; wait; fi; echo ok $BB_BUILD_ID",
        record_pid("pid")
    )
}

/// A remote worker killed with `kill -9` leaves no step process behind:
/// its guard kills the step and the step's background grandchild.
#[test]
fn kill_9_of_a_remote_worker_leaves_no_step_process() {
    let m = master_with_w1(
        Transport::Unix,
        &remote_config("", 1, &step_with_grandchild()),
    );
    let worker = w1(&m);
    m.force_build("b");
    let gc = wait_pid(&m, "gc");
    let pid = wait_pid(&m, "pid");
    assert!(!process_gone(pid) && !process_gone(gc));

    worker.kill9();
    wait_gone(pid, WAIT);
    wait_gone(gc, WAIT);
}

/// A local worker killed with `kill -9` leaves no step process behind
/// either; the master starts a new local worker, and the lost build's
/// request runs again on it (a recorded `retry`, then `success`).
#[test]
fn kill_9_of_a_local_worker_leaves_no_step_process() {
    let m = Master::start(&format!(
        r#"
[master]
worker_grace = "1s"

[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "b"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "{}"
"#,
        step_with_grandchild()
    ));
    m.force_build("b");
    let gc = wait_pid(&m, "gc");
    let pid = wait_pid(&m, "pid");
    let workers: Vec<i32> = processes_using(m.path())
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.contains("bbworker") && cmd.contains("--name local-1") && !cmd.contains("--guard")
        })
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(workers.len(), 1, "one local worker: {workers:?}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(workers[0]), Signal::SIGKILL)
        .expect("cannot kill the local worker");
    wait_gone(pid, WAIT);
    wait_gone(gc, WAIT);

    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(
        (&b["request_id"], &b["result"]),
        (&1.into(), &"success".into())
    );
    assert_eq!(
        builds(&m),
        [(2, 1, "success".to_string()), (1, 1, "retry".to_string())]
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "ok 2\n");
}

/// With `worker_grace = "1s"`, a build whose remote worker is killed and
/// does not come back ends `retry` about a second after the loss (not
/// before), its step is gone, and its request is queued again; when the
/// worker comes back, the request runs again as a new build of the same
/// request and succeeds.
fn lost_worker_build_retried_after_grace(transport: Transport) {
    let shell = format!(
        "{}; if [ $BB_BUILD_ID = 1 ]; then sleep 300; fi; echo run $BB_BUILD_ID",
        record_pid("pid-$BB_BUILD_ID")
    );
    let m = master_with_w1(
        transport,
        &remote_config("worker_grace = \"1s\"", 1, &shell),
    );
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid-1");

    worker.kill9();
    let killed = Instant::now();
    let b = wait_finished(&m, 1, WAIT);
    let took = killed.elapsed();
    assert_eq!(b["result"], "retry", "{b}");
    assert!(
        took >= Duration::from_millis(900),
        "the build ended {took:?} after the loss, before the 1 s grace"
    );
    assert!(
        b["reason"].as_str().unwrap_or("").contains("w1"),
        "the reason does not name the worker: {b}"
    );
    assert_eq!(queue_of_b(&m), (1, 0));
    wait_gone(pid, WAIT);

    let worker = w1(&m);
    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(
        (&b["request_id"], &b["result"]),
        (&1.into(), &"success".into())
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "run 2\n");
    assert_eq!(
        builds(&m),
        [(2, 1, "success".to_string()), (1, 1, "retry".to_string())]
    );
    assert_eq!(queue_of_b(&m), (0, 0));
    drop(worker);
}
over_unix_and_tls!(lost_worker_build_retried_after_grace =>
    a_lost_worker_build_is_retried_after_the_grace_period,
    a_lost_worker_build_is_retried_after_the_grace_period_over_tls);

/// With `max_retries = 1`, a request whose builds are cut short twice in a
/// row is given up: the first build ends `retry`, the second `exception`
/// with a reason naming the retry count, `log --follow` of it exits 1, and
/// nothing is queued again.
#[test]
fn retries_are_capped_by_max_retries() {
    let shell = format!("{}; sleep 300", record_pid("pid-$BB_BUILD_ID"));
    let m = master_with_w1(
        Transport::Unix,
        &remote_config("worker_grace = \"1s\"\nmax_retries = 1", 1, &shell),
    );
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid-1");
    worker.kill9();
    wait_gone(pid, WAIT);

    // The worker comes back without the step: the build is retried.
    let worker = w1(&m);
    let pid = wait_pid(&m, "pid-2");
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "retry", "{b}");
    let follow = m.bbctl_spawn(&["log", "2", "--follow"]);
    worker.kill9();
    wait_gone(pid, WAIT);

    let out = follow.finish(WAIT);
    assert_eq!(
        code(&out),
        1,
        "log --follow of the given-up build: {}",
        describe(&out)
    );
    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(
        (&b["request_id"], &b["result"]),
        (&1.into(), &"exception".into())
    );
    let reason = b["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("max_retries = 1") || reason.contains("1 retr"),
        "the reason does not give the retry count: {reason}"
    );
    assert_eq!(queue_of_b(&m), (0, 0));
    assert_eq!(builds(&m).len(), 2);
}

/// With `keepalive = "200ms"`, a remote worker frozen by SIGSTOP while it
/// runs a step is marked disconnected within a few seconds and, after the
/// 1 s grace, its build ends `retry`; once thawed (SIGCONT) it reconnects,
/// is told to abandon the step it still holds (its process goes), and the
/// retried request runs on it and succeeds.
fn keepalive_notices_frozen_worker(transport: Transport) {
    let shell = format!(
        "{}; if [ $BB_BUILD_ID = 1 ]; then sleep 300; fi; echo run $BB_BUILD_ID",
        record_pid("pid-$BB_BUILD_ID")
    );
    let m = master_with_w1(
        transport,
        &remote_config("keepalive = \"200ms\"\nworker_grace = \"1s\"", 1, &shell),
    );
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid-1");

    worker.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    wait_until(
        "the frozen worker to be disconnected",
        Duration::from_secs(5),
        || !connected(&m, "w1"),
    );
    let noticed = stopped.elapsed();
    let b = wait_finished(&m, 1, Duration::from_secs(5));
    assert_eq!(b["result"], "retry", "{b}");
    assert_eq!(queue_of_b(&m), (1, 0));
    assert!(!process_gone(pid), "the step of a frozen worker died");

    worker.signal(Signal::SIGCONT);
    wait_until("the thawed worker to reconnect", WAIT, || {
        connected(&m, "w1")
    });
    wait_gone(pid, WAIT);
    let b = wait_finished(&m, 2, WAIT);
    assert_eq!(
        (&b["request_id"], &b["result"]),
        (&1.into(), &"success".into())
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "run 2\n");
    eprintln!("keepalive: frozen worker marked disconnected after {noticed:?}");
    drop(worker);
}
over_unix_and_tls!(keepalive_notices_frozen_worker =>
    keepalive_notices_a_frozen_worker,
    keepalive_notices_a_frozen_worker_over_tls);

/// A builder with `retry = false` (a deploy: must never run twice): its
/// remote worker is frozen by SIGSTOP past `worker_grace`, so the build ends
/// `exception` (reason: `retry = false`) and its request is not queued
/// again. Thawed (SIGCONT), the worker reconnects still running the step;
/// the master tells it to kill the step's process group at once: the step
/// ignores SIGTERM, and it is gone well before the 3 s stop grace would
/// end. Both logs say so, and no second build ever starts.
fn retry_false_build_killed_on_return(transport: Transport) {
    let shell = format!("trap '' TERM; {}; sleep 300", record_pid("pid"));
    let config = remote_config("keepalive = \"200ms\"\nworker_grace = \"1s\"", 1, &shell).replace(
        "workers = [\"w1\"]\n",
        "workers = [\"w1\"]\nretry = false\n",
    );
    let m = master_with_w1(transport, &config);
    let mut worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid");

    worker.signal(Signal::SIGSTOP);
    let b = wait_finished(&m, 1, WAIT);
    assert_eq!(b["result"], "exception", "{b}");
    let reason = b["reason"].as_str().unwrap_or("");
    assert!(reason.contains("retry = false"), "{b}");
    assert_eq!(
        queue_of_b(&m),
        (0, 0),
        "a retry = false request is not queued again"
    );
    assert!(!process_gone(pid), "the step of a frozen worker died");

    worker.signal(Signal::SIGCONT);
    wait_until("the thawed worker to reconnect", WAIT, || {
        connected(&m, "w1")
    });
    let back = Instant::now();
    wait_gone(pid, WAIT);
    let took = back.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the abandoned step (it ignores SIGTERM) took {took:?} to die: not killed at once"
    );
    worker.wait_stderr("killing its process group now", WAIT);
    wait_until("the master to log the kill", WAIT, || {
        m.stderr()
            .contains("told it to kill the step's process group now")
    });
    assert_eq!(builds(&m), [(1, 1, "exception".to_string())]);
    assert_eq!(queue_of_b(&m), (0, 0));
    drop(worker);
}
over_unix_and_tls!(retry_false_build_killed_on_return =>
    a_retry_false_build_ends_exception_and_its_step_is_killed_on_return,
    a_retry_false_build_ends_exception_and_its_step_is_killed_on_return_over_tls);

/// A second live `bbworker` with the name and secret of a connected one is
/// refused ("already connected") and does not take over: the first stays
/// connected and builds still run on it (in its work dir).
fn second_live_worker_refused(transport: Transport) {
    let m = master_with_w1(transport, &remote_config("", 1, "pwd"));
    let first = w1(&m);
    wait_until("w1 to connect", WAIT, || connected(&m, "w1"));

    let mut second = start_worker_in(
        &m,
        "w1",
        &m.path().join("w1.secret"),
        &m.path().join("second"),
    );
    // It is told why, and says so (with a back-off, not a silent spin);
    // the master's log says "already connected", not an authentication
    // failure.
    let told = second.wait_stderr("already connected", WAIT);
    assert!(
        told.contains("the master refused this worker") && told.contains("trying again in"),
        "{told}"
    );
    wait_until("the master's log of the refusal", WAIT, || {
        m.stderr().contains("worker refused: already connected")
    });
    assert!(
        !m.stderr().contains("authentication failed"),
        "{}",
        m.stderr()
    );
    assert!(connected(&m, "w1"));

    let out = m.bbctl_code(&["force-build", "b", "--follow"], 0);
    let first_dir = m.path().join("w-w1").join("b");
    assert_eq!(text(&out.stdout), format!("{}\n", first_dir.display()));
    // Still refused on its next try, and the first still serves.
    second.wait_stderr("already connected", WAIT);
    let out = m.bbctl_code(&["force-build", "b", "--follow"], 0);
    assert_eq!(text(&out.stdout), format!("{}\n", first_dir.display()));
    assert!(connected(&m, "w1"));
    second.kill9();
    drop(first);
}
over_unix_and_tls!(second_live_worker_refused =>
    a_second_live_worker_with_the_same_name_is_refused,
    a_second_live_worker_with_the_same_name_is_refused_over_tls);

/// A config with a remote worker only, so that a master that fails to
/// start leaves no local worker behind.
const NO_LOCAL: &str = r#"
[[worker]]
name = "w1"
secret_file = "@DIR@/w1.secret"

[[builder]]
name = "b"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;

/// Start `bbmaster` on `state_dir` and expect it to fail quickly, with
/// one line on stderr containing every one of `needles`.
pub(crate) fn master_refuses(dir: &Path, state_dir: &Path, needles: &[&str]) {
    let config = dir.join("master.toml");
    fs::write(dir.join("w1.secret"), "w1-secret-0123456789\n").unwrap();
    fs::write(&config, NO_LOCAL.replace("@DIR@", &dir.to_string_lossy())).unwrap();
    let mut cmd = command(BBMASTER);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .arg("--config")
        .arg(&config);
    let started = Instant::now();
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    let took = started.elapsed();
    assert_ne!(code(&out), 0, "bbmaster started anyway: {}", describe(&out));
    assert!(
        took < Duration::from_secs(3),
        "bbmaster took {took:?} to fail"
    );
    let err = text(&out.stderr);
    // One error line; log warnings (say, the state dir narrowed to 0700)
    // may come before it.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(" WARN "))
        .collect();
    assert_eq!(lines.len(), 1, "not one error line on stderr: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {err}");
    }
}

/// Storage faults at start: a state dir that cannot be written (a read-only
/// dir when not root; a path that is a regular file), a `master.db` of
/// garbage bytes, and a database from a newer schema each make `bbmaster`
/// exit non-zero at once with one clear line naming the path or the cause.
#[test]
fn storage_faults_at_start_are_clear_errors() {
    let dir = temp_dir();

    // A state dir path that is a regular file.
    let file = dir.path().join("state-file");
    fs::write(&file, "not a dir\n").unwrap();
    master_refuses(dir.path(), &file, &[&file.to_string_lossy()]);

    // A read-only state dir, unless we run as root, which ignores the mode.
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    if fs::write(ro.join("probe"), "").is_err() {
        master_refuses(dir.path(), &ro, &[&ro.to_string_lossy()]);
    } else {
        eprintln!("running as root: a read-only mode does not stop us; skipped that case");
    }

    // A database of garbage bytes.
    let corrupt = dir.path().join("corrupt");
    fs::create_dir(&corrupt).unwrap();
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let db = corrupt.join("master.db");
    fs::write(&db, garbage).unwrap();
    master_refuses(dir.path(), &corrupt, &["database", &db.to_string_lossy()]);

    // A database written by a newer bbmaster.
    let newer = dir.path().join("newer");
    fs::create_dir(&newer).unwrap();
    let conn = rusqlite::Connection::open(newer.join("master.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    master_refuses(dir.path(), &newer, &["newer", "99"]);
}

/// Unmounts a tmpfs when dropped (lazily, so a leftover process cannot
/// keep it busy).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A disk that fills up while the master runs: the request whose record
/// cannot be written is answered with the error (exit 1, "could not
/// record"), the master stops rather than go on with state the disk does
/// not have, and a master restarted once there is room again has every
/// request accepted before the fault — and not the refused one.
#[test]
fn a_full_disk_at_run_time_fails_the_request_and_stops_the_master() {
    let mut m = Master::start(
        r#"
[[worker]]
name = "r"
secret = "s-0123456789abcdef"

[[builder]]
name = "b"
workers = ["r"]
  [[builder.step]]
  name = "s"
  command = ["true"]
"#,
    );
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
    let state = m.state_dir();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&state)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("SKIPPED a_full_disk_at_run_time...: cannot mount a tmpfs here");
        eprintln!("SKIPPED a_full_disk_at_run_time...: cannot mount a tmpfs here");
        return;
    }
    let _tmpfs = Tmpfs(state.clone());
    m.spawn();
    assert_eq!(m.force_build("b"), 1);
    assert_eq!(m.force_build("b"), 2);

    // Fill the disk to the last byte.
    {
        use std::io::Write;
        let mut filler = fs::File::create(state.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        while filler.write_all(&[0u8]).is_ok() {}
    }
    let out = m.bbctl(&["force-build", "b"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("could not record"),
        "{}",
        describe(&out)
    );
    let status = m.wait_exit(EXIT_TIMEOUT);
    assert!(!status.success(), "the master went on after a failed write");

    fs::remove_file(state.join("filler")).unwrap();
    m.spawn();
    let queue = m.bbctl_json(&["queue"]);
    let ids: Vec<u64> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["request"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2], "{queue}");
    m.bbctl_code(&["shutdown"], 0);
    m.wait_exit(EXIT_TIMEOUT);
}

/// `shutdown --drain` while the only running build's worker is gone: that
/// build ends on the grace timer, with no command to wake the master loop,
/// and the master still exits by itself.
#[test]
fn a_drain_ends_when_the_last_build_ends_on_the_grace_timer() {
    let shell = format!("{}; sleep 300", record_pid("pid-$BB_BUILD_ID"));
    let mut m = master_with_w1(
        Transport::Unix,
        &remote_config("worker_grace = \"1s\"", 1, &shell),
    );
    let worker = w1(&m);
    assert_eq!(m.force_build("b"), 1);
    let pid = wait_pid(&m, "pid-1");
    worker.kill9();
    wait_gone(pid, WAIT);
    m.bbctl_code(&["shutdown", "--drain"], 0);
    let status = m.wait_exit(WAIT);
    assert!(
        status.success(),
        "the drained master exited with {status:?}"
    );
}
