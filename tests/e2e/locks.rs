//! Locks end to end (`docs/locks.md`): builders sharing an exclusive lock
//! never overlap, a reload lowering `max` keeps the holders and blocks new
//! claims, a `kill -9` of the master leaves the holder its lock, a
//! cancelled waiter leaves the holder its lock and the next waiter its
//! turn, and a holder's worker killed with `kill -9` keeps the lock until
//! its build ends (`worker_grace`), never two holders at once.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Master, process_gone, start_worker, wait_until};

/// How long a step's marker or a build's end may take.
const WAIT: Duration = Duration::from_secs(30);

/// A step that records its start and end times (ns), fails if another
/// holder's step runs (a directory only one can create), and waits for
/// `@DIR@/go` or `@DIR@/go-<build>`.
const PROBE: &str = "echo start $(date +%s%N); mkdir @DIR@/probe || { echo OVERLAP; exit 1; }; \
touch @DIR@/started-$BB_BUILD_ID; \
while [ ! -e @DIR@/go ] && [ ! -e @DIR@/go-$BB_BUILD_ID ]; do sleep 0.02; done; \
rmdir @DIR@/probe; echo end $(date +%s%N)";

/// Two local workers with one slot each, lock `rig` exclusive for both
/// builder `a` (on `l1`) and builder `b` (on `l2`): only the lock keeps
/// their builds apart.
fn rig_config() -> String {
    format!(
        r#"
[[worker]]
name = "l1"
local = true

[[worker]]
name = "l2"
local = true

[[lock]]
name = "rig"

[[builder]]
name = "a"
workers = ["l1"]
locks = [{{ name = "rig", access = "exclusive" }}]
  [[builder.step]]
  name = "probe"
  shell = "{PROBE}"

[[builder]]
name = "b"
workers = ["l2"]
locks = [{{ name = "rig", access = "exclusive" }}]
  [[builder.step]]
  name = "probe"
  shell = "{PROBE}"
"#
    )
}

fn wait_file(m: &Master, name: &str) {
    let path = m.path().join(name);
    wait_until(&format!("{name} to exist"), WAIT, || path.exists());
}

fn touch(m: &Master, name: &str) {
    fs::write(m.path().join(name), "").unwrap();
}

/// The result of build `id`, once it has one.
fn wait_result(m: &Master, id: u64) -> String {
    let mut result = String::new();
    wait_until(&format!("build {id} to finish"), WAIT, || {
        let v = m.bbctl_json(&["build", &id.to_string()]);
        match v["result"].as_str() {
            Some(r) => {
                result = r.to_string();
                true
            }
            None => false,
        }
    });
    result
}

/// `bbctl locks --json`'s entry for `name` (master-wide).
fn lock(m: &Master, name: &str) -> Value {
    let all = m.bbctl_json(&["locks"]);
    all.as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name && l["worker"].is_null())
        .unwrap_or_else(|| panic!("no lock {name} in {all}"))
        .clone()
}

fn ids(v: &Value, key: &str) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x[key].as_u64())
        .collect()
}

/// (start, end) in ns from a probe step's log.
fn span(m: &Master, build: u64) -> (u128, u128) {
    let log = m.bbctl_ok(&["log", &build.to_string()]);
    let at = |word: &str| -> u128 {
        log.lines()
            .find_map(|l| l.strip_prefix(word))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{word}` time in build {build}'s log:\n{log}"))
    };
    (at("start "), at("end "))
}

#[test]
fn builders_sharing_an_exclusive_lock_never_overlap() {
    let m = Master::start(&rig_config());
    for b in ["a", "b", "a", "b"] {
        m.force_build(b);
    }
    wait_file(&m, "started-1");
    let rig = lock(&m, "rig");
    assert_eq!(ids(&rig["holders"], "build"), vec![1], "{rig}");
    // r2 could run on the free l2 but for the lock (r3 waits for l1, r4
    // is behind r2 in b's queue).
    assert_eq!(ids(&rig["waiters"], "request"), vec![2], "{rig}");
    assert_eq!(
        rig["waiters"][0]["held_by"],
        serde_json::json!([1]),
        "{rig}"
    );
    let status = m.bbctl_ok(&["status"]);
    assert!(
        status.contains("r2 (b) waiting for lock rig (held by build 1)"),
        "{status}"
    );
    assert!(!m.path().join("started-2").exists());
    touch(&m, "go");
    for id in 1..=4 {
        assert_eq!(wait_result(&m, id), "success", "build {id}");
    }
    let mut spans: Vec<(u128, u128)> = (1..=4).map(|b| span(&m, b)).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "two holders overlapped: {spans:?}");
    }
    // Both workers were used: the lock, not a lack of workers, kept them apart.
    let builds = m.bbctl_json(&["builds"]);
    let workers: std::collections::BTreeSet<&str> = builds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["worker"].as_str())
        .collect();
    assert_eq!(workers.len(), 2, "{builds}");
}

fn cpu_config(max: u32) -> String {
    format!(
        r#"
[[worker]]
name = "l1"
local = true
max_builds = 3

[[lock]]
name = "cpu"
max = {max}

[[builder]]
name = "c"
workers = ["l1"]
locks = [{{ name = "cpu", access = "counting" }}]
  [[builder.step]]
  name = "wait"
  shell = "touch @DIR@/started-$BB_BUILD_ID; while [ ! -e @DIR@/go-$BB_BUILD_ID ]; do sleep 0.02; done"
"#
    )
}

#[test]
fn a_reload_lowering_max_keeps_the_holders_and_blocks_new_claims() {
    let m = Master::start(&cpu_config(2));
    for _ in 0..3 {
        m.force_build("c");
    }
    wait_file(&m, "started-1");
    wait_file(&m, "started-2");
    let cpu = lock(&m, "cpu");
    assert_eq!(ids(&cpu["holders"], "build"), vec![1, 2], "{cpu}");
    assert_eq!(ids(&cpu["waiters"], "request"), vec![3], "{cpu}");

    m.write_config(&cpu_config(1));
    let report = m.bbctl_json(&["reload"]);
    assert_eq!(report["generation_after"], 2, "{report}");
    let cpu = lock(&m, "cpu");
    assert_eq!(cpu["max"], 1, "{cpu}");
    assert_eq!(
        ids(&cpu["holders"], "build"),
        vec![1, 2],
        "reload never preempts: {cpu}"
    );

    // One holder ends: still at the new max, so r3 keeps waiting.
    touch(&m, "go-1");
    assert_eq!(wait_result(&m, 1), "success");
    let cpu = lock(&m, "cpu");
    assert_eq!(ids(&cpu["holders"], "build"), vec![2], "{cpu}");
    assert_eq!(ids(&cpu["waiters"], "request"), vec![3], "{cpu}");
    assert!(!m.path().join("started-3").exists());

    touch(&m, "go-2");
    assert_eq!(wait_result(&m, 2), "success");
    wait_file(&m, "started-3");
    assert_eq!(ids(&lock(&m, "cpu")["holders"], "build"), vec![3]);
    touch(&m, "go-3");
    assert_eq!(wait_result(&m, 3), "success");
}

#[test]
fn a_killed_master_restarts_with_the_holder_keeping_its_lock() {
    let mut m = Master::start(&rig_config());
    m.force_build("a");
    wait_file(&m, "started-1");
    m.force_build("b");
    wait_until("r2 to wait for rig", WAIT, || {
        ids(&lock(&m, "rig")["waiters"], "request") == vec![2]
    });
    m.kill9();
    m.spawn();
    // Both local workers are back and build 1 is re-adopted.
    wait_until("both workers and build 1 back", WAIT, || {
        let s = m.bbctl_json(&["status"]);
        let connected = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["connected"] == true);
        let adopted = s["running"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["build"] == 1 && r["waiting_for_worker"] == false);
        connected && adopted
    });
    let rig = lock(&m, "rig");
    assert_eq!(ids(&rig["holders"], "build"), vec![1], "{rig}");
    assert_eq!(ids(&rig["waiters"], "request"), vec![2], "{rig}");
    assert!(
        !m.path().join("started-2").exists(),
        "a second holder started"
    );
    touch(&m, "go");
    assert_eq!(wait_result(&m, 1), "success");
    assert_eq!(wait_result(&m, 2), "success", "the probe saw no overlap");
}

/// `bbctl cancel` of a request waiting for a lock ends it `cancelled`
/// without touching the holder, and the request queued behind it still
/// gets the lock once the holder ends.
#[test]
fn a_cancelled_waiter_leaves_the_holder_its_lock_and_the_next_its_turn() {
    let m = Master::start(&rig_config());
    m.force_build("a");
    wait_file(&m, "started-1");
    m.force_build("b");
    m.force_build("b");
    wait_until("r2 to wait for rig", WAIT, || {
        ids(&lock(&m, "rig")["waiters"], "request") == vec![2]
    });

    m.bbctl_ok(&["cancel", "2"]);
    let out = m.bbctl(&["wait", "2", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("`wait r2 --json` printed no JSON ({e}): {stdout}"));
    assert_eq!(last["result"], "cancelled", "{last}");
    assert!(last["build_id"].is_null(), "{last}");

    // The holder keeps the lock; r3, now at the head of b's queue, waits.
    wait_until("r3 to wait for rig", WAIT, || {
        ids(&lock(&m, "rig")["waiters"], "request") == vec![3]
    });
    let rig = lock(&m, "rig");
    assert_eq!(ids(&rig["holders"], "build"), vec![1], "{rig}");
    assert!(
        !m.path().join("started-2").exists(),
        "a second holder started"
    );

    touch(&m, "go-1");
    assert_eq!(wait_result(&m, 1), "success");
    wait_file(&m, "started-2");
    let build = m.bbctl_json(&["build", "2"]);
    assert_eq!(build["request_id"], 3, "{build}");
    assert_eq!(ids(&lock(&m, "rig")["holders"], "build"), vec![2]);
    touch(&m, "go-2");
    assert_eq!(wait_result(&m, 2), "success");
}

/// Two remote workers `w1` (builder `a`) and `w2` (builder `b`), lock
/// `rig` exclusive for both, `worker_grace = "1s"`; each step records its
/// shell's pid in `@DIR@/pid-<build>` and waits for `@DIR@/go`.
fn remote_rig_config() -> String {
    let step = "echo $$ > @DIR@/pid-$BB_BUILD_ID.tmp; mv @DIR@/pid-$BB_BUILD_ID.tmp @DIR@/pid-$BB_BUILD_ID; \
touch @DIR@/started-$BB_BUILD_ID; while [ ! -e @DIR@/go ]; do sleep 0.02; done";
    let mut config = String::from("[master]\nworker_grace = \"1s\"\n");
    for (worker, builder) in [("w1", "a"), ("w2", "b")] {
        config.push_str(&format!(
            r#"
[[worker]]
name = "{worker}"
secret_file = "@DIR@/{worker}.secret"

[[builder]]
name = "{builder}"
workers = ["{worker}"]
locks = [{{ name = "rig", access = "exclusive" }}]
  [[builder.step]]
  name = "s"
  shell = "{step}"
"#
        ));
    }
    config.push_str("\n[[lock]]\nname = \"rig\"\n");
    config
}

/// A holder's worker killed with `kill -9` keeps the lock through
/// `worker_grace`; when the build ends (`retry`), the lock is released and
/// the waiter starts, never beside the old holder; the retried request
/// then waits for the lock in its turn.
#[test]
fn a_killed_holders_worker_releases_the_lock_only_when_its_build_ends() {
    let m = Master::start_with_files(
        &remote_rig_config(),
        &[
            ("w1.secret", "w1-secret-0123456789\n"),
            ("w2.secret", "w2-secret-0123456789\n"),
        ],
    );
    let secret = |w: &str| m.path().join(format!("{w}.secret"));
    let w1 = start_worker(&m, "w1", &secret("w1"));
    let _w2 = start_worker(&m, "w2", &secret("w2"));
    m.force_build("a");
    wait_file(&m, "started-1");
    let pid1: i32 = fs::read_to_string(m.path().join("pid-1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    m.force_build("b");
    wait_until("r2 to wait for rig", WAIT, || {
        ids(&lock(&m, "rig")["waiters"], "request") == vec![2]
    });

    w1.kill9();
    // Until build 1 has a result it holds the lock, and build 2 (r2's)
    // has not started; the marker is read before the result, so a start
    // beside the holder cannot slip between the two reads.
    let mut result = String::new();
    wait_until("build 1 to end", WAIT, || {
        let started = m.path().join("started-2").exists();
        let rig = lock(&m, "rig");
        let holders = ids(&rig["holders"], "build");
        assert!(holders.len() <= 1, "two holders: {rig}");
        let b = m.bbctl_json(&["build", "1"]);
        match b["result"].as_str() {
            Some(r) => {
                result = r.to_string();
                true
            }
            None => {
                assert!(!started, "build 2 started while build 1 held rig: {rig}");
                assert_eq!(holders, vec![1], "{rig}");
                false
            }
        }
    });
    assert_eq!(result, "retry");
    wait_file(&m, "started-2");
    assert!(process_gone(pid1), "build 1's step outlived its worker");
    let rig = lock(&m, "rig");
    assert_eq!(ids(&rig["holders"], "build"), vec![2], "{rig}");

    // r1 is queued again; with w1 back its new build waits for the lock.
    let _w1 = start_worker(&m, "w1", &secret("w1"));
    wait_until("r1 to wait for rig", WAIT, || {
        ids(&lock(&m, "rig")["waiters"], "request") == vec![1]
    });
    assert!(
        !m.path().join("started-3").exists(),
        "a second holder started"
    );
    touch(&m, "go");
    assert_eq!(wait_result(&m, 2), "success");
    assert_eq!(wait_result(&m, 3), "success");
    assert_eq!(m.bbctl_json(&["build", "3"])["request_id"], 1);
}
