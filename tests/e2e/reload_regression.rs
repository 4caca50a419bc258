//! Regressions of reload: the seed mail's lost builds (issue 3, item 3),
//! and Buildbot's hang when a builder and its worker go away mid-build.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Master, code, describe, process_gone, processes_using, start_worker, wait_until,
};

/// Two local workers with two slots each, and the builder `flow` whose one
/// step prints `v<version> <generation>` and sleeps 0.1 to 0.3 s.
fn flow_config(version: u32) -> String {
    let mut cfg = String::new();
    for w in ["local-1", "local-2"] {
        cfg.push_str(&format!(
            "[[worker]]\nname = \"{w}\"\nlocal = true\nmax_builds = 2\n\n"
        ));
    }
    cfg.push_str(&format!(
        r#"[[builder]]
name = "flow"
workers = ["local-1", "local-2"]

  [[builder.step]]
  name = "work"
  shell = 'echo v{version} $BB_GENERATION; sleep 0.$(( BB_BUILD_ID % 3 + 1 ))'
  timeout = "30s"
"#
    ));
    cfg
}

/// The id of the latest build (0 before the first).
fn latest_build(m: &Master) -> u64 {
    m.bbctl_json(&["builds", "-n", "1"])[0]["id"]
        .as_u64()
        .unwrap_or(0)
}

/// The seed mail's bug (builds started after a reconfig that never finished
/// nor reported, because the work went to a stale object) cannot happen:
/// while builds flow through two workers, 50 reloads alternate the
/// builder's step between printing `v1` and `v2`, with a request queued
/// after each. Then every request has exactly one build, which succeeded;
/// nothing is left queued or running; and each build's log shows the
/// version of the generation it started under (generation -> version from
/// the reloads' answers), and that generation, as its step saw it, matches
/// `builds --json`.
#[test]
fn fifty_reloads_while_builds_flow() {
    let m = Master::start(&flow_config(1));
    let mut version_of: BTreeMap<u64, u32> = BTreeMap::from([(1, 1)]);
    let mut requests: Vec<u64> = (0..20).map(|_| m.force_build("flow")).collect();
    let mut generation = 1;
    let mut while_running = 0;
    for i in 0..50 {
        let version = if i % 2 == 0 { 2 } else { 1 };
        m.write_config(&flow_config(version));
        let r = m.bbctl_json(&["reload"]);
        assert_eq!(r["generation_before"], generation, "reload {i}: {r}");
        assert_eq!(r["generation_after"], generation + 1, "reload {i}: {r}");
        assert_eq!(r["builders_changed"], json!(["flow"]), "reload {i}: {r}");
        assert_eq!(r["requests_cancelled"], json!([]), "reload {i}: {r}");
        generation += 1;
        version_of.insert(generation, version);
        if !r["builds_on_old_generations"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            while_running += 1;
        }
        // Pace the reloads by the flow: the next one waits until a build
        // has started under this generation (perhaps this request's).
        let before = latest_build(&m);
        requests.push(m.force_build("flow"));
        wait_until(
            &format!("a build to start under generation {generation}"),
            Duration::from_secs(10),
            || latest_build(&m) > before,
        );
    }
    assert!(
        while_running >= 25,
        "only {while_running} of 50 reloads happened while a build ran"
    );

    let mut last = Value::Null;
    wait_until("every request to finish", Duration::from_secs(60), || {
        last = m.bbctl_json(&["status"]);
        let b = &last["builders"][0];
        b["queued"] == 0 && b["running"] == 0
    });
    assert_eq!(last["generation"], generation, "{last}");

    let builds = m.bbctl_json(&["builds", "-n", "1000"]);
    let builds = builds.as_array().expect("a list");
    let mut seen = BTreeSet::new();
    let mut workers = BTreeSet::new();
    let mut generations = BTreeSet::new();
    for b in builds {
        let request = b["request_id"].as_u64().unwrap();
        assert!(seen.insert(request), "request {request} built twice: {b}");
        assert_eq!(b["result"], "success", "{b}");
        workers.insert(b["worker"].as_str().unwrap().to_string());
        let g = b["generation"].as_u64().unwrap();
        generations.insert(g);
        let version = version_of
            .get(&g)
            .unwrap_or_else(|| panic!("build under unknown generation {g}: {b}"));
        let id = b["id"].as_u64().unwrap().to_string();
        let log = m.bbctl_ok(&["log", &id]);
        assert_eq!(
            log,
            format!("v{version} {g}\n"),
            "build {id} started under generation {g} (v{version}): {b}"
        );
    }
    let wanted: BTreeSet<u64> = requests.iter().copied().collect();
    assert_eq!(
        seen, wanted,
        "requests without a build, or builds without a request"
    );
    assert_eq!(workers.len(), 2, "both workers built: {workers:?}");
    let every: BTreeSet<u64> = (1..=generation).collect();
    assert_eq!(
        generations, every,
        "each generation started at least one build"
    );
}

/// A builder and the only worker it runs on are removed by one reload
/// while that worker runs one of its builds (Buildbot can hang there): the
/// build finishes and is recorded as a success, its queued request is
/// cancelled, then the worker is disconnected with `removed by reload` and
/// both are gone from `status`.
#[test]
fn builder_and_its_worker_removed_mid_build() {
    let keep = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "keep"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;
    let m = Master::start_with_files(
        &format!(
            r#"{keep}
[[worker]]
name = "box"
secret_file = "@DIR@/box.secret"

[[builder]]
name = "b"
workers = ["box"]

  [[builder.step]]
  name = "s"
  shell = 'echo on box; touch @DIR@/started; while [ ! -e @DIR@/go ]; do sleep 0.02; done'
  timeout = "30s"
"#
        ),
        &[("box.secret", "secret-one-0123456789\n")],
    );
    let mut worker = start_worker(&m, "box", &m.path().join("box.secret"));
    let mut running = m.bbctl_spawn(&["force-build", "b", "--wait"]);
    running.wait_stderr("request r1 queued", Duration::from_secs(10));
    let started = m.path().join("started");
    wait_until("build 1 to start", Duration::from_secs(15), || {
        started.exists()
    });
    let mut queued = m.bbctl_spawn(&["force-build", "b", "--wait"]);
    queued.wait_stderr("request r2 queued", Duration::from_secs(10));

    m.write_config(keep);
    let r = m.bbctl_json(&["reload"]);
    assert_eq!(r["builders_removed"], json!(["b"]), "{r}");
    assert_eq!(r["workers_removed"], json!(["box"]), "{r}");
    assert_eq!(r["workers_draining"], json!(["box"]), "{r}");
    assert_eq!(r["requests_cancelled"], json!([2]), "{r}");
    assert_eq!(r["builds_on_old_generations"], json!([1]), "{r}");
    let out = queued.finish(Duration::from_secs(15));
    assert_eq!(code(&out), 1, "{}", describe(&out));

    fs::write(m.path().join("go"), "").unwrap();
    let out = running.finish(Duration::from_secs(15));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    worker.wait_stderr("removed by reload", Duration::from_secs(15));
    let out = worker.finish(Duration::from_secs(15));
    assert_eq!(code(&out), 0, "{}", describe(&out));

    let b = m.bbctl_json(&["build", "1"]);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["worker"], "box", "{b}");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "on box\n");
    let mut s = Value::Null;
    wait_until("b and box to leave status", Duration::from_secs(15), || {
        s = m.bbctl_json(&["status"]);
        s["builders"].as_array().unwrap().len() == 1 && s["workers"].as_array().unwrap().len() == 1
    });
    assert_eq!(s["builders"][0]["name"], "keep", "{s}");
    assert_eq!(s["workers"][0]["name"], "local-1", "{s}");
}

/// The live `bbworker` processes of local worker `name` under `m`.
fn local_worker_pids(m: &Master, name: &str) -> Vec<i32> {
    let flag = format!("--name {name} ");
    processes_using(m.path())
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains("bbworker") && cmdline.contains(&flag))
        .map(|(pid, _)| pid)
        .collect()
}

/// A local worker removed by reload drains like any other, however long
/// its build runs: a 6 s build (longer than the master's 5 s grace after a
/// goodbye) finishes with success on it; then the worker process leaves
/// and is not started again.
#[test]
fn removed_local_worker_finishes_a_long_build() {
    let a = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "a"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;
    let m = Master::start(&format!(
        r#"{a}
[[worker]]
name = "local-2"
local = true

[[builder]]
name = "long"
workers = ["local-2"]

  [[builder.step]]
  name = "s"
  shell = 'echo long; touch @DIR@/started; sleep 6; echo done'
  timeout = "30s"
"#
    ));
    let mut running = m.bbctl_spawn(&["force-build", "long", "--wait"]);
    running.wait_stderr("request r1 queued", Duration::from_secs(10));
    let started = m.path().join("started");
    wait_until("build 1 to start", Duration::from_secs(15), || {
        started.exists()
    });
    let pids = local_worker_pids(&m, "local-2");
    assert_eq!(pids.len(), 1, "one local-2 process: {pids:?}");

    m.write_config(a);
    let r = m.bbctl_json(&["reload"]);
    assert_eq!(r["workers_removed"], json!(["local-2"]), "{r}");
    assert_eq!(r["workers_draining"], json!(["local-2"]), "{r}");
    assert_eq!(r["builders_removed"], json!(["long"]), "{r}");

    let out = running.finish(Duration::from_secs(20));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let b = m.bbctl_json(&["build", "1"]);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["worker"], "local-2", "{b}");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "long\ndone\n");

    wait_until("local-2 to leave", Duration::from_secs(15), || {
        process_gone(pids[0])
    });
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["workers"].as_array().unwrap().len(), 1, "{s}");
    m.bbctl_code(&["force-build", "a", "--wait"], 0);
    assert_eq!(
        local_worker_pids(&m, "local-2"),
        Vec::<i32>::new(),
        "local-2 was started again"
    );
}
