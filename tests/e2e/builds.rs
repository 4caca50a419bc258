//! Building: force-build with --wait and --follow, results, logs,
//! history, properties.

use std::time::Duration;

use crate::harness::{Master, describe, text, wait_until};

/// A config with a passing and a failing builder on one local worker.
const PASS_FAIL: &str = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 2

[[builder]]
name = "pass"
workers = ["local-1"]

  [[builder.step]]
  name = "ok"
  shell = "echo fine"

[[builder]]
name = "fail"
workers = ["local-1"]

  [[builder.step]]
  name = "bad"
  shell = "echo nope; exit 3"

  [[builder.step]]
  name = "never"
  shell = "echo should not run"
"#;

/// The embedded default works out of the box: `force-build hello --wait`
/// succeeds, `bbctl log` with no argument prints the latest build's output,
/// and `builds --json` describes it with the documented keys.
#[test]
fn default_config_builds_hello() {
    let m = Master::start_default();
    let out = m.bbctl_code(&["force-build", "hello", "--wait"], 0);
    assert_eq!(
        text(&out.stdout),
        "",
        "--wait prints no build output on stdout"
    );
    assert!(
        text(&out.stderr).contains("build 1 finished: success"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(m.bbctl_ok(&["log"]), "hello from hello build 1\n");

    let builds = m.bbctl_json(&["builds"]);
    let list = builds.as_array().expect("builds --json is a list");
    assert_eq!(list.len(), 1, "{builds}");
    let b = &list[0];
    assert_eq!(b["id"], 1, "{b}");
    assert_eq!(b["builder"], "hello", "{b}");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["generation"], 1, "{b}");
    assert_eq!(b["worker"], "local-1", "{b}");
}

/// The README's tour: the embedded default's `slow` builder runs long
/// enough that `bbctl stop BUILD` stops it (the tour's `stop` used to find
/// the build already finished).
#[test]
fn default_config_slow_build_can_be_stopped() {
    let m = Master::start_default();
    let mut waiter = m.bbctl_spawn(&["force-build", "slow", "--wait"]);
    waiter.wait_stderr("queued", Duration::from_secs(10));
    wait_until("the slow build to print", Duration::from_secs(20), || {
        text(&m.bbctl(&["log", "1"]).stdout).contains("tick 1 of 45")
    });
    m.bbctl_code(&["stop", "1"], 0);
    let out = waiter.finish(Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["builder"], "slow", "{detail}");
    assert_eq!(detail["result"], "cancelled", "{detail}");
}

/// `--wait` exits 0 for a passing build and 1 for a failing one; the
/// failing build stops at its first failing step, whose result and reason
/// (`exited with code 3`) `build ID --json` shows, and the log holds what
/// the step printed.
#[test]
fn wait_exit_codes_and_failure_details() {
    let m = Master::start(PASS_FAIL);
    m.bbctl_code(&["force-build", "pass", "--wait"], 0);
    let out = m.bbctl_code(&["force-build", "fail", "--wait"], 1);
    assert!(
        text(&out.stderr).contains("build 2 finished: failure"),
        "{}",
        text(&out.stderr)
    );

    let pass = m.bbctl_json(&["build", "1"]);
    assert_eq!(pass["result"], "success", "{pass}");
    assert_eq!(pass["steps"][0]["result"], "success", "{pass}");

    let fail = m.bbctl_json(&["build", "2"]);
    assert_eq!(fail["builder"], "fail", "{fail}");
    assert_eq!(fail["result"], "failure", "{fail}");
    let steps = fail["steps"].as_array().expect("steps is a list");
    assert_eq!(
        steps.len(),
        1,
        "the step after the failing one never ran: {fail}"
    );
    assert_eq!(steps[0]["name"], "bad", "{fail}");
    assert_eq!(steps[0]["result"], "failure", "{fail}");
    let reason = steps[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("exited with code 3"), "step reason: {fail}");

    assert_eq!(m.bbctl_ok(&["log", "2"]), "nope\n");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "fine\n");

    let results: Vec<_> = m
        .bbctl_json(&["builds"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![(2, "failure".to_string()), (1, "success".to_string())],
        "builds lists newest first"
    );
}

/// `force-build --follow` streams the build's output in order on stdout,
/// and nothing else: progress and the result line go to stderr.
#[test]
fn follow_streams_output_in_order() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "count"
workers = ["local-1"]

  [[builder.step]]
  name = "lines"
  shell = "for i in 1 2 3; do echo line $i; done"

  [[builder.step]]
  name = "more"
  command = ["echo", "line 4"]
"#,
    );
    let out = m.bbctl_code(&["force-build", "count", "--follow"], 0);
    assert_eq!(text(&out.stdout), "line 1\nline 2\nline 3\nline 4\n");
    let err = text(&out.stderr);
    assert!(err.contains("request r1 queued for count"), "{err}");
    assert!(err.contains("build 1 finished: success"), "{err}");

    // The stored log is the same bytes, per build and per step.
    assert_eq!(
        m.bbctl_ok(&["log", "1"]),
        "line 1\nline 2\nline 3\nline 4\n"
    );
    assert_eq!(
        m.bbctl_ok(&["log", "1", "lines"]),
        "line 1\nline 2\nline 3\n"
    );
    assert_eq!(m.bbctl_ok(&["log", "1", "1"]), "line 4\n");
    m.bbctl_code(&["log", "1", "nosuchstep"], 4);
}

/// Properties reach steps as `BB_PROP_<NAME>` environment variables and
/// are never pasted into a shell line: a value full of shell syntax is
/// printed literally and runs nothing. A bad property name is a usage
/// error (exit 2) that queues nothing.
#[test]
fn properties_are_environment_not_shell() {
    let m = Master::start(
        r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "b"
workers = ["local-1"]

  [[builder.step]]
  name = "show"
  shell = "echo \"$BB_PROP_NAME\"; echo \"$BB_PROP_OTHER\""
"#,
    );
    let pwned = m.path().join("pwned");
    let pwned2 = m.path().join("pwned2");
    let value = format!("x; touch {}", pwned.display());
    let other = format!("$(touch {}) `touch {}`", pwned2.display(), pwned2.display());
    let out = m.bbctl_code(
        &[
            "force-build",
            "b",
            "-p",
            &format!("NAME={value}"),
            "--property",
            &format!("OTHER={other}"),
            "--follow",
        ],
        0,
    );
    assert_eq!(text(&out.stdout), format!("{value}\n{other}\n"));
    assert!(!pwned.exists(), "a property value was run by a shell");
    assert!(!pwned2.exists(), "a property value was run by a shell");

    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["properties"]["NAME"], value.as_str(), "{detail}");

    for bad in ["1A=x", "A-B=x", "novalue"] {
        let out = m.bbctl_code(&["force-build", "b", "-p", bad], 2);
        assert_eq!(text(&out.stdout), "");
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "error: invalid value '{bad}' for '--property <K=V>'"
            )),
            "the usage error names the bad property: {err}"
        );
    }
    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["builders"][0]["queued"], 0, "{status}");
    assert_eq!(m.bbctl_json(&["builds"]).as_array().unwrap().len(), 1);
}
