//! The operator's commands: `queue` and priorities, `workers`, `ping`,
//! `drain`/`undrain`, `wait`, Ctrl-C while waiting, `--wait-for-master`,
//! collapsing of identical requests, and the `events` stream.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{
    Background, LineReader, Master, await_subscription, code, describe, text, wait_until,
};

/// One local worker with one slot, and builders that succeed at once,
/// fail, or hold until `@DIR@/go` exists (touching `@DIR@/started-<build>`
/// when they begin).
const ONE_WORKER: &str = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "say"
  shell = "echo quick"

[[builder]]
name = "broken"
workers = ["local-1"]

  [[builder.step]]
  name = "fail"
  shell = "echo failing; exit 3"

[[builder]]
name = "hold"
workers = ["local-1"]

  [[builder.step]]
  name = "wait"
  shell = "touch @DIR@/started-$BB_BUILD_ID; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo released"
  timeout = "20s"
"#;

const SECOND: Duration = Duration::from_secs(1);

/// Wait (bounded) until `worker` shows as connected in `status`.
fn wait_connected(m: &Master, worker: &str) {
    wait_until(
        &format!("worker {worker} to connect"),
        Duration::from_secs(10),
        || {
            let s = m.bbctl_json(&["status"]);
            s["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == worker && w["connected"] == true)
        },
    );
}

/// Wait (bounded) until build `id` of a `hold` builder has started.
fn wait_started(m: &Master, id: u64) {
    let marker = m.path().join(format!("started-{id}"));
    wait_until(
        &format!("build {id} to start"),
        Duration::from_secs(10),
        || marker.exists(),
    );
}

/// The request ids of `builds --json`, in build id order.
fn requests_by_build(m: &Master) -> Vec<u64> {
    let builds = m.bbctl_json(&["builds"]);
    let mut pairs: Vec<(u64, u64)> = builds
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_u64().unwrap(), b["request_id"].as_u64().unwrap()))
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(_, r)| r).collect()
}

/// The last JSON value of `--json wait`'s stdout: the outcome object,
/// after the stream items.
fn outcome(stdout: &[u8]) -> Value {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("{e}: {}", text(stdout))))
        .last()
        .unwrap_or_else(|| panic!("no JSON: {}", text(stdout)))
}

/// The entry of `list` (a JSON array) whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// With the only worker drained, `queue --json` lists the requests in the
/// order they will run (priority 5 first, the two 0s oldest first, then
/// -1) with their position, priority and properties; `queue BUILDER`
/// filters, `queue nosuch` exits 4; after `undrain --worker` the builds run
/// in exactly that order.
#[test]
fn queue_lists_requests_in_run_order_and_they_run_so() {
    let m = Master::start(ONE_WORKER);
    m.bbctl_code(&["drain", "--worker", "local-1"], 0);
    for (n, prio) in [("1", "0"), ("2", "0"), ("3", "5"), ("4", "-1")] {
        let prop = format!("N={n}");
        let flag = format!("--priority={prio}");
        let v = m.bbctl_json(&["force-build", "quick", "-p", &prop, &flag]);
        assert_eq!(v["request_id"], n.parse::<u64>().unwrap(), "{v}");
    }
    let q = m.bbctl_json(&["queue"]);
    let rows: Vec<_> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["request"].as_u64().unwrap(),
                e["position"].as_u64().unwrap(),
                e["priority"].as_i64().unwrap(),
                e["properties"].clone(),
                e["builder"].as_str().unwrap().to_string(),
                e["schema"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<_> = [
        (3, 1, 5, "3"),
        (1, 2, 0, "1"),
        (2, 3, 0, "2"),
        (4, 4, -1, "4"),
    ]
    .into_iter()
    .map(|(r, pos, prio, n)| (r, pos, prio, json!({ "N": n }), "quick".to_string(), 1))
    .collect();
    assert_eq!(rows, want, "{q}");
    assert_eq!(m.bbctl_json(&["queue", "quick"]), q);
    assert_eq!(m.bbctl_json(&["queue", "hold"]), json!([]));
    let out = m.bbctl_code(&["queue", "nosuch"], 4);
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("nosuch"), "{}", describe(&out));
    // The table shows the same order.
    let table = m.bbctl_ok(&["queue"]);
    let firsts: Vec<_> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(firsts, ["r3", "r1", "r2", "r4"], "{table}");

    m.bbctl_code(&["undrain", "--worker", "local-1"], 0);
    for request in ["1", "2", "3", "4"] {
        m.bbctl_code(&["wait", request], 0);
    }
    assert_eq!(requests_by_build(&m), vec![3, 1, 2, 4]);
    assert_eq!(m.bbctl_json(&["queue"]), json!([]));
}

/// `workers --json`: the connected local worker reports its host, its real
/// pid (the one in the master's pid file, a live `bbworker`), its software
/// and when it connected and was last seen; an offline remote worker shows
/// `connected: false` and null details.
#[test]
fn workers_json_details() {
    let m = Master::start_with_files(
        &format!("{ONE_WORKER}\n[[worker]]\nname = \"box\"\nsecret_file = \"@DIR@/box.secret\"\n"),
        &[("box.secret", "s3cret-0123456789abcdef\n")],
    );
    wait_connected(&m, "local-1");
    let status = m.bbctl_json(&["status"]);
    let workers = m.bbctl_json(&["workers"]);
    assert_eq!(workers.as_array().unwrap().len(), 2, "{workers}");

    let local = named(&workers, "local-1");
    assert_eq!(local["schema"], 1, "{workers}");
    assert_eq!(local["connected"], true, "{workers}");
    assert_eq!(local["local"], true, "{workers}");
    assert_eq!(local["draining"], false, "{workers}");
    let pid_file = m.state_dir().join("local-workers").join("local-1.pid");
    let pid: i64 = fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .expect("a pid in the pid file");
    assert_eq!(local["pid"], pid, "{workers}");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("the worker runs");
    assert!(text(&cmdline).contains("bbworker"), "{}", text(&cmdline));
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(local["host"], host.trim(), "{workers}");
    assert_eq!(
        local["software"],
        format!("bbworker {}", env!("CARGO_PKG_VERSION")),
        "{workers}"
    );
    let since = local["connected_since_ms"].as_u64().expect("a time");
    let seen = local["last_seen_ms"].as_u64().expect("a time");
    let started = status["started_at_ms"].as_u64().unwrap();
    let now = m.bbctl_json(&["status"])["now_ms"].as_u64().unwrap();
    assert!(
        started <= since && since <= seen && seen <= now,
        "started {started}, connected {since}, seen {seen}, now {now}"
    );

    let remote = named(&workers, "box");
    assert_eq!(remote["connected"], false, "{workers}");
    assert_eq!(remote["local"], false, "{workers}");
    for key in [
        "connected_since_ms",
        "last_seen_ms",
        "software",
        "host",
        "pid",
    ] {
        assert_eq!(remote[key], Value::Null, "{key}: {workers}");
    }
    assert_eq!(remote["running_builds"], json!([]), "{workers}");

    let table = m.bbctl_ok(&["workers"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("local-1 (local)") && l.contains(&pid.to_string())),
        "{table}"
    );
}

/// `ping local-1` exits 0 and prints the round trip in ms; an unknown
/// worker exits 4; a configured worker that is not connected exits 1 with
/// "not connected".
#[test]
fn ping_workers() {
    let m = Master::start_with_files(
        &format!("{ONE_WORKER}\n[[worker]]\nname = \"box\"\nsecret_file = \"@DIR@/box.secret\"\n"),
        &[("box.secret", "s3cret-0123456789abcdef\n")],
    );
    wait_connected(&m, "local-1");
    let out = m.bbctl_ok(&["ping", "local-1"]);
    let ms = out
        .strip_prefix("pong from local-1: ")
        .and_then(|s| s.strip_suffix(" ms\n"))
        .unwrap_or_else(|| panic!("not a pong line: {out:?}"));
    let ms: f64 = ms
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {out:?}"));
    assert!((0.0..5000.0).contains(&ms), "{out}");
    let v = m.bbctl_json(&["ping", "local-1"]);
    assert_eq!(v["worker"], "local-1", "{v}");
    assert!(v["round_trip_us"].as_u64().is_some(), "{v}");

    let out = m.bbctl_code(&["ping", "nosuch"], 4);
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("nosuch"), "{}", describe(&out));

    let out = m.bbctl_code(&["ping", "box"], 1);
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("not connected"),
        "{}",
        describe(&out)
    );
}

/// `drain` of the master is for maintenance: new requests are still
/// accepted and queued (exit 0), the running build goes on and nothing
/// queued starts; `drain --wait --timeout 300ms` gives up (exit 1) while
/// the build runs, and once it is released `drain --wait --timeout 10s`
/// exits 0; `status` says `draining: true`, `drain_mode: maintenance`
/// (and the human status says so) until `undrain`, after which the queued
/// requests run. The events name the drain: `mode: maintenance`.
#[test]
fn drain_the_master() {
    let m = Master::start(ONE_WORKER);
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    assert_eq!(m.force_build("hold"), 1);
    wait_started(&m, 1);
    // One slot: this one waits in the queue.
    assert_eq!(m.force_build("quick"), 2);

    let out = m.bbctl_code(&["drain"], 0);
    assert_eq!(text(&out.stdout), "", "a confirmation is not data");
    assert_eq!(
        text(&out.stderr),
        "the master is draining for maintenance (1 build(s) running): requests are queued, none starts until `bbctl undrain`\n"
    );
    events.read_until("the drain's event", 10 * SECOND, |l| {
        l.contains("\"master_draining\"")
            && l.contains("\"draining\":true")
            && l.contains("\"mode\":\"maintenance\"")
    });
    // A maintenance drain queues requests instead of refusing them.
    assert_eq!(
        m.force_build("quick"),
        3,
        "a drained master queues requests"
    );
    let human = m.bbctl_ok(&["status"]);
    assert!(
        human.contains("draining for maintenance: requests are queued, no build starts"),
        "{human}"
    );

    let started = Instant::now();
    let out = m.bbctl_code(&["drain", "--wait", "--timeout", "300ms"], 1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        text(&out.stderr).contains("still running"),
        "{}",
        describe(&out)
    );
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["draining"], true, "{s}");
    assert_eq!(s["drain_mode"], "maintenance", "{s}");
    let running: Vec<_> = s["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["build"].as_u64().unwrap())
        .collect();
    assert_eq!(running, vec![1], "the held build goes on: {s}");
    assert_eq!(named(&s["builders"], "quick")["queued"], 2, "{s}");

    fs::write(m.path().join("go"), "").unwrap();
    let out = text(
        &m.bbctl_code(&["drain", "--wait", "--timeout", "10s"], 0)
            .stderr,
    );
    assert!(out.ends_with("drained: no build running\n"), "{out}");
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["draining"], true, "{s}");
    assert_eq!(s["running"], json!([]), "{s}");
    assert_eq!(named(&s["builders"], "quick")["queued"], 2, "{s}");
    assert_eq!(requests_by_build(&m), vec![1], "nothing new started");
    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["result"], "success", "{detail}");

    m.bbctl_code(&["undrain"], 0);
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["draining"], false, "{s}");
    assert_eq!(s["drain_mode"], Value::Null, "{s}");
    assert!(!m.bbctl_ok(&["status"]).contains("draining for"));
    m.bbctl_code(&["wait", "3"], 0);
    assert_eq!(requests_by_build(&m), vec![1, 2, 3]);
    assert_eq!(m.force_build("quick"), 4, "requests are taken again");
    events.read_until("the undrain's event", 10 * SECOND, |l| {
        l.contains("\"master_draining\"")
            && l.contains("\"draining\":false")
            && l.contains("\"mode\":\"maintenance\"")
    });
}

/// `shutdown --drain` is a drain for shutdown: `status` says so (JSON and
/// human), new requests are refused (exit 5), `undrain` does not end it
/// (exit 5: `shutdown --cancel` does), and its event says `mode:
/// shutdown`. A maintenance drain under it survives `shutdown --cancel`.
#[test]
fn drain_for_shutdown_is_told_apart_from_maintenance() {
    let m = Master::start(ONE_WORKER);
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    assert_eq!(m.force_build("hold"), 1);
    wait_started(&m, 1);
    m.bbctl_code(&["drain"], 0);
    m.bbctl_code(&["shutdown", "--drain"], 0);
    events.read_until("the shutdown drain's event", 10 * SECOND, |l| {
        l.contains("\"master_draining\"")
            && l.contains("\"draining\":true")
            && l.contains("\"mode\":\"shutdown\"")
    });
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["draining"], true, "{s}");
    assert_eq!(s["drain_mode"], "shutdown", "{s}");
    let human = m.bbctl_ok(&["status"]);
    assert!(human.contains("draining for shutdown"), "{human}");
    let out = m.bbctl_code(&["force-build", "quick"], 5);
    assert!(
        text(&out.stderr).contains("draining for shutdown"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["undrain"], 5);
    assert!(
        text(&out.stderr).contains("shutdown --cancel"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["shutdown", "--cancel"], 0);
    assert!(
        text(&out.stderr).contains("still draining for maintenance"),
        "{}",
        describe(&out)
    );
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["drain_mode"], "maintenance", "{s}");
    assert_eq!(m.force_build("quick"), 2, "maintenance queues again");
    m.bbctl_code(&["undrain"], 0);
    fs::write(m.path().join("go"), "").unwrap();
    m.bbctl_code(&["wait", "2"], 0);
}

/// `drain --worker local-1`: status shows that worker draining (and the
/// master not), and builds of a builder served by two workers go to the
/// other one; after `undrain --worker` they go to the preferred one again.
#[test]
fn drain_one_worker() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[worker]]
name = "local-2"
local = true

[[builder]]
name = "both"
workers = ["local-1", "local-2"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#,
    );
    wait_connected(&m, "local-1");
    let out = text(&m.bbctl_code(&["drain", "--worker", "local-1"], 0).stderr);
    assert_eq!(
        out,
        "worker local-1 is draining (0 build(s) running on it)\n"
    );
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["draining"], false, "{s}");
    assert_eq!(named(&s["workers"], "local-1")["draining"], true, "{s}");
    assert_eq!(named(&s["workers"], "local-2")["draining"], false, "{s}");
    let human = m.bbctl_ok(&["status"]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("local-1 (local)") && l.contains("draining")),
        "{human}"
    );

    m.bbctl_code(&["force-build", "both", "--wait"], 0);
    m.bbctl_code(&["force-build", "both", "--wait"], 0);
    m.bbctl_code(&["undrain", "--worker", "local-1"], 0);
    let s = m.bbctl_json(&["status"]);
    assert_eq!(named(&s["workers"], "local-1")["draining"], false, "{s}");
    m.bbctl_code(&["force-build", "both", "--wait"], 0);
    let builds = m.bbctl_json(&["builds"]);
    let workers: Vec<_> = builds
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|b| b["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["local-2", "local-2", "local-1"], "{builds}");
}

/// `wait REQUEST` exits 0 for a build that succeeded, 1 for one that
/// failed, 4 for a request that does not exist; `wait --follow` prints the
/// build's output, of a finished build and of one still running.
#[test]
fn wait_for_a_request() {
    let m = Master::start(ONE_WORKER);
    assert_eq!(m.force_build("quick"), 1);
    assert_eq!(m.force_build("broken"), 2);
    let out = m.bbctl_code(&["wait", "1"], 0);
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("build 1 finished: success"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["wait", "2"], 1);
    assert!(
        text(&out.stderr).contains("build 2 finished: failure"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["wait", "99"], 4);
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("99"), "{}", describe(&out));

    let out = m.bbctl_code(&["wait", "--follow", "1"], 0);
    assert_eq!(text(&out.stdout), "quick\n");
    let out = m.bbctl_code(&["wait", "--follow", "2"], 1);
    assert_eq!(text(&out.stdout), "failing\n");

    assert_eq!(m.force_build("hold"), 3);
    let waiter = m.bbctl_spawn(&["wait", "--follow", "3"]);
    wait_started(&m, 3);
    fs::write(m.path().join("go"), "").unwrap();
    let out = waiter.finish(Duration::from_secs(15));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(text(&out.stdout), "released\n");
}

/// Send SIGINT to `waiter` and return its output.
fn interrupt(waiter: Background) -> std::process::Output {
    kill(Pid::from_raw(waiter.pid() as i32), Signal::SIGINT).unwrap();
    waiter.finish(Duration::from_secs(10))
}

/// Ctrl-C while `force-build --wait` waits: with `--cancel-on-interrupt`
/// it exits 130 and the request ends cancelled; without, it exits 130,
/// says how to re-attach (`bbctl wait N`), and the build goes on to
/// succeed.
#[test]
fn ctrl_c_while_waiting() {
    let m = Master::start(ONE_WORKER);

    let mut waiter = m.bbctl_spawn(&["force-build", "hold", "--wait", "--cancel-on-interrupt"]);
    assert_eq!(
        waiter.wait_stderr("queued", Duration::from_secs(10)),
        "request r1 queued for hold"
    );
    let out = interrupt(waiter);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("request r1 cancelled"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["--json", "wait", "1"], 1);
    let v = outcome(&out.stdout);
    assert_eq!(v["result"], "cancelled", "{v}");

    let mut waiter = m.bbctl_spawn(&["force-build", "hold", "--wait"]);
    assert_eq!(
        waiter.wait_stderr("queued", Duration::from_secs(10)),
        "request r2 queued for hold"
    );
    let out = interrupt(waiter);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("Re-attach with: bbctl wait r2\n"),
        "{}",
        describe(&out)
    );
    assert_eq!(text(&out.stdout), "");
    // The request goes on: its build starts, and succeeds once released.
    wait_until(
        "request 2's build to start",
        Duration::from_secs(10),
        || requests_by_build(&m).last() == Some(&2),
    );
    let id = m.bbctl_json(&["builds"])[0]["id"].as_u64().unwrap();
    wait_started(&m, id);
    fs::write(m.path().join("go"), "").unwrap();
    let out = m.bbctl_code(&["wait", "2"], 0);
    assert!(
        text(&out.stderr).contains(&format!("build {id} finished: success")),
        "{}",
        describe(&out)
    );
}

/// `--wait-for-master 5s status`, started while no master runs (a killed
/// one left its socket behind), exits 0 once a master comes up ~300 ms
/// later; without the flag `status` exits 3 at once, and with
/// `--wait-for-master 200ms` it exits 3 after about that long.
#[test]
fn wait_for_master() {
    let mut m = Master::start_default();
    m.kill9();
    let out = m.bbctl_code(&["status"], 3);
    assert!(
        text(&out.stderr).contains("cannot reach the master"),
        "{}",
        describe(&out)
    );

    let started = Instant::now();
    m.bbctl_code(&["--wait-for-master", "200ms", "status"], 3);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "took {took:?}"
    );

    let waiter = m.bbctl_spawn(&["--wait-for-master", "5s", "status"]);
    // The point of the test: the master comes up after bbctl started.
    std::thread::sleep(Duration::from_millis(300));
    m.spawn();
    let out = waiter.finish(Duration::from_secs(10));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        text(&out.stdout).starts_with(&format!("master pid {}", m.pid())),
        "{}",
        describe(&out)
    );
}

/// A builder with `collapse = true`, its worker drained: three requests
/// with `X=1` and one with `X=2` queued; after `undrain` exactly two builds
/// run. The collapsed requests end like the build they were merged into
/// (here a failure: `wait` exits 1 and names that build), the queue is
/// empty, and `events --json` shows a `request_skipped` for each, naming
/// `into` and `build`.
#[test]
fn collapse_identical_requests() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 1

[[builder]]
name = "dedup"
workers = ["local-1"]
collapse = true

  [[builder.step]]
  name = "check"
  shell = "echo X=$BB_PROP_X; [ \"$BB_PROP_X\" = 2 ]"
"#,
    );
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    m.bbctl_code(&["drain", "--worker", "local-1"], 0);
    for x in ["1", "1", "2", "1"] {
        m.bbctl_code(&["force-build", "dedup", "-p", &format!("X={x}")], 0);
    }
    assert_eq!(m.bbctl_json(&["queue"]).as_array().unwrap().len(), 4);
    m.bbctl_code(&["undrain", "--worker", "local-1"], 0);

    for request in ["1", "2", "4"] {
        let out = m.bbctl_code(&["--json", "wait", request], 1);
        let v = outcome(&out.stdout);
        assert_eq!(v["build_id"], 1, "request {request}: {v}");
        assert_eq!(v["result"], "failure", "request {request}: {v}");
    }
    let out = m.bbctl_code(&["wait", "3"], 0);
    assert!(
        text(&out.stderr).contains("build 2 finished: success"),
        "{}",
        describe(&out)
    );
    assert_eq!(requests_by_build(&m), vec![1, 3]);
    assert_eq!(m.bbctl_json(&["queue"]), json!([]));

    let lines = events.read_until("build 2's end", Duration::from_secs(10), |l| {
        l.contains("\"build_finished\"") && l.contains("\"build\":2,")
    });
    assert!(lines.last().unwrap().contains("\"result\":\"success\""));
    let skipped: Vec<Value> = events
        .seen
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "request_skipped")
        .map(|v| json!({ "request": v["request"], "into": v["into"], "build": v["build"] }))
        .collect();
    assert_eq!(
        skipped,
        vec![
            json!({ "request": 2, "into": 1, "build": 1 }),
            json!({ "request": 4, "into": 1, "build": 1 }),
        ],
        "{}",
        events.seen.join("\n")
    );
}

/// `events --json`: every line is one JSON object with `schema`, `at_ms`,
/// `generation` and `event`; a forced build shows build_queued,
/// build_started, step_started, step_finished and build_finished in that
/// order; `reload` emits `reload_applied` and an invalid config
/// `reload_rejected`.
#[test]
fn events_json_stream() {
    let m = Master::start(ONE_WORKER);
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    let request = m.force_build("quick");
    events.read_until("build_finished", Duration::from_secs(10), |l| {
        l.contains("\"build_finished\"")
    });

    m.write_config(&format!(
        "{ONE_WORKER}\n[[builder]]\nname = \"extra\"\nworkers = [\"local-1\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n"
    ));
    m.bbctl_code(&["reload"], 0);
    events.read_until("reload_applied", 10 * SECOND, |l| {
        l.contains("\"reload_applied\"")
    });
    m.write_config("[[builder]\nname = ");
    m.bbctl_code(&["reload"], 5);
    events.read_until("reload_rejected", 10 * SECOND, |l| {
        l.contains("\"reload_rejected\"")
    });

    let all: Vec<Value> = events
        .seen
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            assert_eq!(v["schema"], 1, "{l}");
            assert!(v["at_ms"].as_u64().is_some(), "{l}");
            assert!(v["generation"].as_u64().is_some(), "{l}");
            assert!(v["event"].as_str().is_some(), "{l}");
            v
        })
        .collect();
    let times: Vec<u64> = all.iter().map(|v| v["at_ms"].as_u64().unwrap()).collect();
    assert!(times.is_sorted(), "{times:?}");

    let started = all
        .iter()
        .find(|v| v["event"] == "build_started" && v["request"] == request)
        .expect("build_started");
    let build = started["build"].clone();
    let ours: Vec<&str> = all
        .iter()
        .filter(|v| v["request"] == request || v["build"] == build)
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        ours,
        [
            "build_queued",
            "build_started",
            "step_started",
            "step_finished",
            "build_finished"
        ],
        "{}",
        events.seen.join("\n")
    );
    let queued = all.iter().find(|v| v["event"] == "build_queued").unwrap();
    assert_eq!(queued["builder"], "quick");
    let finished = all.iter().find(|v| v["event"] == "build_finished").unwrap();
    assert_eq!(finished["result"], "success");
    assert_eq!(finished["generation"], 1);

    let applied = all.iter().find(|v| v["event"] == "reload_applied").unwrap();
    assert_eq!(applied["generation_before"], 1, "{applied}");
    assert_eq!(applied["generation_after"], 2, "{applied}");
    assert!(applied["config_hash"].as_str().is_some(), "{applied}");
    let rejected = all
        .iter()
        .find(|v| v["event"] == "reload_rejected")
        .unwrap();
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains(&m.config_path().display().to_string()),
        "{rejected}"
    );
    assert_eq!(rejected["generation"], 2, "{rejected}");
}

/// `status` filters on the master: by builder name or `PREFIX*`, by state,
/// and a limit; the totals still count everything; an exact name that
/// does not exist exits 4.
#[test]
fn status_filters_builders_on_the_master() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "app-a"
workers = ["local-1"]
  [[builder.step]]
  name = "s"
  command = ["true"]

[[builder]]
name = "app-b"
workers = ["local-1"]
  [[builder.step]]
  name = "s"
  command = ["true"]

[[builder]]
name = "lib"
workers = ["local-1"]
  [[builder.step]]
  name = "s"
  command = ["true"]
"#,
    );
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["builders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = m.bbctl_json(&["status"]);
    assert_eq!(names(&all), vec!["app-a", "app-b", "lib"]);
    let apps = m.bbctl_json(&["status", "--builder", "app-*"]);
    assert_eq!(names(&apps), vec!["app-a", "app-b"]);
    assert_eq!(apps["builders_total"], 3);
    let one = m.bbctl_json(&["status", "--builder", "lib"]);
    assert_eq!(names(&one), vec!["lib"]);
    let limited = m.bbctl_json(&["status", "--limit", "1"]);
    assert_eq!(names(&limited), vec!["app-a"]);
    let idle = m.bbctl_json(&["status", "--state", "idle"]);
    assert_eq!(names(&idle).len(), 3);
    let building = m.bbctl_json(&["status", "--state", "building"]);
    assert!(names(&building).is_empty());
    let none = m.bbctl_json(&["status", "--builder", "zzz*"]);
    assert!(names(&none).is_empty());
    m.bbctl_code(&["status", "--builder", "nosuch"], 4);
    m.bbctl_code(&["status", "--state", "sleepy"], 2);
    let out = m.bbctl_ok(&["status", "--builder", "app-*"]);
    assert!(out.contains("showing 2 of 3 builders"), "{out}");
}
