//! Time-driven and triggered schedulers end to end: a `periodic`
//! scheduler builds on its own, and a `trigger` step that waits survives a
//! `kill -9` of the master: after the restart it ends with the triggered
//! build's result, and nothing is triggered twice.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Master, wait_until};

/// How long a build or a firing may take.
const WAIT: Duration = Duration::from_secs(30);

/// `builds --json` entries, oldest first.
fn builds(m: &Master) -> Vec<Value> {
    let v = m.bbctl_json(&["builds", "--limit", "1000"]);
    let mut all = v.as_array().cloned().unwrap_or_default();
    all.reverse();
    all
}

#[test]
fn a_periodic_scheduler_builds_on_its_own() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "tick"
workers = ["local-1"]

  [[builder.step]]
  name = "say"
  shell = "echo tick"

[[scheduler]]
name = "every-second"
kind = "periodic"
builders = ["tick"]
every = "1s"
"#,
    );
    wait_until("two builds fired by the scheduler", WAIT, || {
        builds(&m)
            .iter()
            .filter(|b| b["result"] == "success")
            .count()
            >= 2
    });
    let first = m.bbctl_json(&["build", "1"]);
    assert_eq!(
        first["request_reason"], "scheduler every-second: every 1s",
        "{first}"
    );
    assert_eq!(m.bbctl_ok(&["log", "1"]), "tick\n");
}

#[test]
fn a_waiting_trigger_step_survives_master_kill_9() {
    let mut m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true
max_builds = 3

[[builder]]
name = "parent"
workers = ["local-1"]

  [[builder.step]]
  name = "fan-out"
  trigger = { schedulers = ["children"], wait = true, properties = { suite = "all" } }

  [[builder.step]]
  name = "never"
  shell = "echo the parent must not get here"

[[builder]]
name = "child"
workers = ["local-1"]

  [[builder.step]]
  name = "work"
  shell = "echo child $BB_PROP_suite; touch @DIR@/started; while [ ! -e @DIR@/go ]; do sleep 0.02; done; exit 3"

[[scheduler]]
name = "children"
kind = "triggerable"
builders = ["child"]
"#,
    );
    assert_eq!(m.force_build("parent"), 1);
    let started = m.path().join("started");
    wait_until("the triggered build to run", WAIT, || started.exists());
    m.kill9();
    m.spawn();
    // The restarted master re-attached the wait: no second trigger.
    fs::write(m.path().join("go"), "").unwrap();
    wait_until("the triggering build to end", WAIT, || {
        builds(&m).first().is_some_and(|b| !b["result"].is_null())
    });
    let all = builds(&m);
    let summary: Vec<(u64, String, String)> = all
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["builder"].as_str().unwrap().to_string(),
                b["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "parent".to_string(), "failure".to_string()),
            (2, "child".to_string(), "failure".to_string()),
        ],
        "{all:?}"
    );
    let parent = m.bbctl_json(&["build", "1"]);
    let steps = parent["steps"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        1,
        "the step after the trigger never ran: {parent}"
    );
    assert_eq!(steps[0]["result"], "failure", "{parent}");
    assert!(
        steps[0]["reason"].as_str().unwrap().contains("r2 failure"),
        "{parent}"
    );
    assert_eq!(m.bbctl_ok(&["log", "2"]), "child all\n");
}

/// A worker and a builder `tick` whose one step echoes, for the reload
/// scenarios; `schedulers` is appended.
fn tick_config(schedulers: &str) -> String {
    format!(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "tick"
workers = ["local-1"]

  [[builder.step]]
  name = "say"
  shell = "echo tick"
{schedulers}"#
    )
}

/// Row "`periodic`/`cron` scheduler changed or renamed" of docs/reload.md:
/// an hourly scheduler that has not fired yet is renamed and made to fire
/// every second. It keeps when it started counting (its state moved with
/// the rename), so the new timing's due times since then count as missed
/// and `catch_up = "one"` fires once, saying so; a scheduler that started
/// afresh would fire without catching up.
#[test]
fn a_renamed_and_retimed_periodic_scheduler_keeps_its_last_firing() {
    let m = Master::start(&tick_config(
        r#"
[[scheduler]]
name = "hourly"
kind = "periodic"
builders = ["tick"]
every = "1h"
"#,
    ));
    // Let more than a second pass since the scheduler started counting.
    let started = std::time::Instant::now();
    wait_until("a second to pass", WAIT, || {
        started.elapsed() > Duration::from_millis(1500)
    });
    assert!(builds(&m).is_empty());
    m.write_config(&tick_config(
        r#"
[[scheduler]]
name = "every-second"
previous_names = ["hourly"]
kind = "periodic"
builders = ["tick"]
every = "1s"
"#,
    ));
    m.bbctl_ok(&["reload"]);
    wait_until("a build of the renamed scheduler", WAIT, || {
        builds(&m).first().is_some_and(|b| b["result"] == "success")
    });
    let first = m.bbctl_json(&["build", "1"]);
    let reason = first["request_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("scheduler every-second: every 1s, catching up a firing missed at "),
        "{first}"
    );
}

/// Row "`triggerable` scheduler changed or removed" of docs/reload.md: a
/// trigger step waits; a reload removes the triggerable scheduler; the
/// step goes on waiting and ends with the triggered build's result.
#[test]
fn a_waiting_trigger_step_survives_a_reload_that_removes_its_scheduler() {
    let builders = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "parent"
workers = ["local-1"]

  [[builder.step]]
  name = "fan-out"
  trigger = { schedulers = ["children"], wait = true }

  [[builder.step]]
  name = "after"
  shell = "echo after"

[[builder]]
name = "child"
workers = ["local-1"]

  [[builder.step]]
  name = "work"
  shell = "touch @DIR@/started; while [ ! -e @DIR@/go ]; do sleep 0.02; done"
"#;
    let m = Master::start(&format!(
        "{builders}\n[[scheduler]]\nname = \"children\"\nkind = \"triggerable\"\nbuilders = [\"child\"]\n"
    ));
    assert_eq!(m.force_build("parent"), 1);
    let started = m.path().join("started");
    wait_until("the triggered build to run", WAIT, || started.exists());
    // The parent's trigger step no longer names a scheduler of the config.
    let without = builders.replace(
        "trigger = { schedulers = [\"children\"], wait = true }",
        "shell = \"true\"",
    );
    m.write_config(&without);
    m.bbctl_ok(&["reload"]);
    fs::write(m.path().join("go"), "").unwrap();
    wait_until("the triggering build to end", WAIT, || {
        builds(&m).first().is_some_and(|b| !b["result"].is_null())
    });
    let parent = m.bbctl_json(&["build", "1"]);
    assert_eq!(parent["result"], "success", "{parent}");
    assert_eq!(m.bbctl_ok(&["log", "1", "after"]), "after\n");
    assert_eq!(builds(&m).len(), 2, "nothing triggered twice");
}
