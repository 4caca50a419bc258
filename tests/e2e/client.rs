//! bbctl's own promises (issue 11, 12, 21): ids that cannot be confused,
//! data on stdout and progress on stderr, JSON Lines streams, `rebuild`,
//! waits that survive a master restart.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{LineReader, Master, code, describe, text, wait_until};

const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 2

[[worker]]
name = "away"
secret = "never-connects-0123456789"

[[builder]]
name = "nowhere"
workers = ["away"]

  [[builder.step]]
  name = "never"
  shell = "true"

[[builder]]
name = "quick"
workers = ["local-1"]

  [[builder.step]]
  name = "say"
  shell = "echo quick $BB_PROP_WHO"

  [[builder.step]]
  name = "again"
  shell = "echo again"

[[builder]]
name = "hold"
workers = ["local-1"]

  [[builder.step]]
  name = "wait"
  shell = "echo holding; touch @DIR@/started-$BB_BUILD_ID; while [ ! -e @DIR@/go ]; do sleep 0.02; done; echo released"
  timeout = "60s"
"#;

fn wait_started(m: &Master, id: u64) {
    let marker = m.path().join(format!("started-{id}"));
    wait_until(&format!("build {id} to start"), WAIT, || marker.exists());
}

/// Every line of `stdout` is one compact JSON object with `"schema": 1`;
/// returns them.
fn json_lines(what: &str, stdout: &[u8]) -> Vec<Value> {
    let out = text(stdout);
    assert!(out.ends_with('\n'), "{what}: output ends mid-line:\n{out}");
    out.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {line:?}\n{out}"));
            assert!(v.is_object(), "{what}: {line}");
            assert_eq!(v["schema"], 1, "{what}: no schema on {line}");
            v
        })
        .collect()
}

/// `--json` with `--wait`, `--follow`, `wait`, `log` and `log --follow`
/// prints JSON Lines: each line parses alone, the final outcome included.
#[test]
fn streaming_json_is_json_lines() {
    let m = Master::start(CONFIG);
    let out = m.bbctl_code(&["--json", "force-build", "quick", "--follow"], 0);
    let items = json_lines("force-build --follow", &out.stdout);
    let last = items.last().unwrap();
    assert_eq!(last["result"], "success", "{last}");
    assert_eq!(last["request_id"], 1, "{last}");
    assert!(items.iter().any(|v| v["type"] == "output"), "{items:?}");

    let out = m.bbctl_code(&["--json", "force-build", "quick", "--wait"], 0);
    let items = json_lines("force-build --wait", &out.stdout);
    assert_eq!(items.last().unwrap()["build_id"], 2);

    for args in [
        &["--json", "wait", "r1"][..],
        &["--json", "wait", "1", "--follow"],
        &["--json", "log", "1"],
        &["--json", "log", "#1", "--follow"],
    ] {
        let out = m.bbctl_code(args, 0);
        let items = json_lines(&format!("{args:?}"), &out.stdout);
        assert!(!items.is_empty(), "{args:?}");
    }
    // A failed build: still JSON Lines, exit 1.
    let out = m.bbctl(&["--json", "rebuild", "1", "--wait"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    json_lines("rebuild --wait", &out.stdout);
}

/// Requests are `r8`, builds `7`/`#7`; each argument refuses the other
/// kind's notation with a usage error that says what to do; `stop` says
/// whose build it stopped; `force-build --wait` names the build when it
/// starts. Progress and confirmations go to stderr, stdout holds data.
#[test]
fn request_and_build_ids_cannot_be_confused() {
    let m = Master::start(CONFIG);
    // Build 1 serves request 2: the two numbers differ.
    m.bbctl_code(&["force-build", "nowhere"], 0);
    m.bbctl_code(&["cancel", "r1"], 0);
    let out = m.bbctl_code(&["force-build", "hold"], 0);
    assert_eq!(text(&out.stdout), "", "a confirmation is not data");
    assert_eq!(text(&out.stderr), "request r2 queued for hold\n");
    wait_started(&m, 1);

    let out = m.bbctl_code(&["stop", "r2"], 2);
    assert!(
        text(&out.stderr).contains("`r2` is a request id"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["wait", "#1"], 2);
    assert!(
        text(&out.stderr).contains("`#1` is a build id"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["queue"], 0);
    assert!(
        text(&out.stdout).contains("nothing queued"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["stop", "#1"], 0);
    assert_eq!(text(&out.stdout), "");
    assert!(
        text(&out.stderr).contains("build 1 (request r2) is stopping"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["build", "1"], 0);
    assert!(
        text(&out.stdout).starts_with("build 1 of hold (request r2)"),
        "{}",
        describe(&out)
    );

    let out = m.bbctl_code(&["force-build", "quick", "--wait"], 0);
    let err = text(&out.stderr);
    assert_eq!(text(&out.stdout), "", "--wait prints no data");
    assert!(err.contains("request r3 queued for quick\n"), "{err}");
    assert!(
        err.contains("build 2 of quick started on local-1 (request r3)\n"),
        "{err}"
    );
    assert!(err.contains("build 2 finished: success"), "{err}");
}

/// `rebuild BUILD`: same builder, same properties, reason `rebuild of
/// build N`; an unknown build is exit 4.
#[test]
fn rebuild_runs_the_same_build_again() {
    let m = Master::start(CONFIG);
    m.bbctl_code(
        &["force-build", "quick", "--property", "WHO=me", "--wait"],
        0,
    );
    let out = m.bbctl_code(&["rebuild", "1", "--follow"], 0);
    assert_eq!(text(&out.stdout), "quick me\nagain\n", "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("request r2 queued for quick"),
        "{}",
        describe(&out)
    );
    let b = m.bbctl_json(&["build", "2"]);
    assert_eq!(b["builder"], "quick", "{b}");
    assert_eq!(b["request_id"], 2, "{b}");
    assert_eq!(b["properties"], serde_json::json!({"WHO": "me"}), "{b}");
    assert_eq!(b["request_reason"], "rebuild of build 1", "{b}");
    assert_eq!(b["result"], "success", "{b}");
    let out = m.bbctl_code(&["rebuild", "99"], 4);
    assert!(
        text(&out.stderr).contains("no build 99"),
        "{}",
        describe(&out)
    );
    m.bbctl_code(&["rebuild", "r1"], 2);
}

/// `force-build --wait` of a running build, the master restarted under
/// it: bbctl re-attaches and exits 0 when the build succeeds (not 1); a
/// `log --follow` does the same without printing anything twice.
#[test]
fn waits_survive_a_master_restart() {
    let mut m = Master::start(CONFIG);
    let mut waiter = m.bbctl_spawn(&["force-build", "hold", "--wait"]);
    waiter.wait_stderr("started on", WAIT);
    let mut follower = LineReader::spawn(m.bbctl_command(&["log", "1", "--follow"]));
    follower.read_until("holding", WAIT, |l| l == "holding");
    let mut json = LineReader::spawn(m.bbctl_command(&["--json", "wait", "r1", "--follow"]));
    json.read_until("the output so far", WAIT, |l| l.contains("holding"));
    m.signal(Signal::SIGTERM);
    m.wait_exit(WAIT);
    m.spawn();
    std::fs::write(m.path().join("go"), "").unwrap();

    let out = waiter.finish(WAIT);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("re-attaching"), "{err}");
    assert!(err.contains("build 1 finished: success"), "{err}");

    let (status, lines) = follower.finish(WAIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert_eq!(lines, vec!["holding", "released"], "nothing printed twice");

    let (status, lines) = json.finish(WAIT);
    assert_eq!(status.code(), Some(0), "{lines:?}");
    let mut all = lines.join("\n");
    all.push('\n');
    let items = json_lines("wait --follow", all.as_bytes());
    let starts = items
        .iter()
        .filter(|v| v["type"] == "build_started")
        .count();
    assert_eq!(starts, 1, "nothing printed twice: {items:?}");
    let holding = items.iter().filter(|v| v["text"] == "holding\n").count();
    assert_eq!(holding, 1, "nothing printed twice: {items:?}");
    assert_eq!(items.last().unwrap()["result"], "success");
}

/// A master that goes away and does not come back within
/// `--reconnect-for`: exit 3 (unreachable), never 1 (build failed).
#[test]
fn a_lost_master_that_stays_away_is_exit_3() {
    let mut m = Master::start(CONFIG);
    let waiter = m.bbctl_spawn(&["--reconnect-for", "1s", "force-build", "hold", "--wait"]);
    wait_started(&m, 1);
    m.kill9();
    let out = waiter.finish(WAIT);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("did not come back within 1s"),
        "{}",
        describe(&out)
    );
}

/// A bbctl pointed at nothing: no variable of the caller leaks in, and the
/// default state dir is an empty temp dir.
fn bare_bbctl(m: &Master, args: &[&str]) -> std::process::Command {
    let mut cmd = crate::harness::command(crate::harness::BBCTL);
    cmd.env_remove("BBMASTER_STATE_DIR")
        .env_remove("BBCTL_SOCKET")
        .env_remove("BBMASTER_CONFIG")
        .env("XDG_STATE_HOME", m.path().join("no-such-home"))
        .args(args);
    cmd
}

fn run(cmd: std::process::Command) -> std::process::Output {
    crate::harness::run_with_timeout(cmd, crate::harness::BBCTL_TIMEOUT)
}

/// A master whose config sets `state_dir` is found through that config
/// (`BBMASTER_CONFIG`, which bbmaster reads too, or `--master-config`),
/// with no `--state-dir` on every call. A flag beats any variable; at the
/// same level a socket beats a state dir, which beats a config.
#[test]
fn bbctl_finds_the_master_through_its_config() {
    let m = Master::start(CONFIG);
    let config = m.path().join("pointer.toml");
    std::fs::write(
        &config,
        format!(
            "[master]\nstate_dir = {:?}\n",
            m.state_dir().display().to_string()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let state = m.state_dir();
    let state = state.to_str().unwrap();
    let nowhere = m.path().join("nowhere.sock");
    let nowhere = nowhere.to_str().unwrap();

    // Nothing set: the default state dir, where no master runs.
    assert_eq!(code(&run(bare_bbctl(&m, &["status"]))), 3);

    let mut cmd = bare_bbctl(&m, &["status"]);
    cmd.env("BBMASTER_CONFIG", config);
    let out = run(cmd);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let out = run(bare_bbctl(&m, &["--master-config", config, "status"]));
    assert_eq!(code(&out), 0, "{}", describe(&out));

    // A flag beats a variable of any kind.
    let mut cmd = bare_bbctl(&m, &["--state-dir", state, "status"]);
    cmd.env("BBCTL_SOCKET", nowhere);
    let out = run(cmd);
    assert_eq!(
        code(&out),
        0,
        "--state-dir beats BBCTL_SOCKET: {}",
        describe(&out)
    );
    let mut cmd = bare_bbctl(&m, &["--socket", nowhere, "status"]);
    cmd.env("BBMASTER_STATE_DIR", state);
    let out = run(cmd);
    assert_eq!(
        code(&out),
        3,
        "--socket beats BBMASTER_STATE_DIR: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("nowhere.sock"),
        "{}",
        describe(&out)
    );
    // Among variables: the socket beats the state dir beats the config.
    let mut cmd = bare_bbctl(&m, &["status"]);
    cmd.env("BBMASTER_STATE_DIR", state)
        .env("BBMASTER_CONFIG", "/no/such.toml");
    assert_eq!(code(&run(cmd)), 0);
    // A config that cannot be read says so: exit 2.
    let out = run(bare_bbctl(
        &m,
        &["--master-config", "/no/such.toml", "status"],
    ));
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("/no/such.toml"),
        "{}",
        describe(&out)
    );
}

/// A mistyped builder or worker name: the error suggests the closest
/// names (exit 4 still).
#[test]
fn unknown_names_come_with_did_you_mean() {
    let m = Master::start(CONFIG);
    let out = m.bbctl_code(&["force-build", "quik"], 4);
    assert!(
        text(&out.stderr).contains("no builder named `quik` (did you mean `quick`?)"),
        "{}",
        describe(&out)
    );
    for args in [
        &["queue", "hodl"][..],
        &["status", "--builder", "hodl"],
        &["builds", "--builder", "hodl"],
    ] {
        let out = m.bbctl_code(args, 4);
        assert!(
            text(&out.stderr).contains("did you mean `hold`?"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    let out = m.bbctl_code(&["ping", "local1"], 4);
    assert!(
        text(&out.stderr).contains("did you mean `local-1`?"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["drain", "--worker", "lcoal-1"], 4);
    assert!(
        text(&out.stderr).contains("did you mean `local-1`?"),
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["force-build", "zzzzzz"], 4);
    assert!(
        !text(&out.stderr).contains("did you mean"),
        "{}",
        describe(&out)
    );
}

/// Completion offers the running master's builder and worker names: the
/// hidden `__complete` lists them, and bash's completion function uses it.
#[test]
fn completion_offers_names_from_the_master() {
    let m = Master::start(CONFIG);
    let out = m.bbctl_code(&["__complete", "builders"], 0);
    assert_eq!(
        text(&out.stdout),
        "hold\nnowhere\nquick\n",
        "{}",
        describe(&out)
    );
    let out = m.bbctl_code(&["__complete", "workers"], 0);
    assert!(
        text(&out.stdout).contains("local-1\n"),
        "{}",
        describe(&out)
    );
    // No master: nothing, quietly.
    let out = run(bare_bbctl(&m, &["__complete", "builders"]));
    assert_eq!(
        (code(&out), text(&out.stdout), text(&out.stderr)),
        (0, String::new(), String::new())
    );

    let script = m.path().join("bbctl.bash");
    std::fs::write(&script, m.bbctl_code(&["completions", "bash"], 0).stdout).unwrap();
    let bin_dir = std::path::Path::new(crate::harness::BBCTL)
        .parent()
        .unwrap();
    let complete = |words: &str| {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _bbctl_names; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["--norc", "-c", &line])
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("BBMASTER_STATE_DIR", m.state_dir());
        let out = run(cmd);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        text(&out.stdout)
    };
    assert_eq!(complete("bbctl force-build q"), "quick\n");
    assert_eq!(complete("bbctl status --builder h"), "hold\n");
    assert_eq!(complete("bbctl ping l"), "local-1\n");
}

/// A restart-only setting changed by a reload keeps being reported as
/// waiting for a restart by later reloads and dry runs, until a restart.
#[test]
fn restart_only_settings_wait_for_a_restart_until_one_happens() {
    let mut m = Master::start(CONFIG);
    m.write_config(&format!("[master]\nkeepalive = \"7s\"\n{CONFIG}"));
    let out = m.bbctl_ok(&["reload"]);
    assert!(
        out.contains("waiting for a restart: master.keepalive"),
        "{out}"
    );
    for args in [&["reload", "--dry-run"][..], &["reload"]] {
        let out = m.bbctl_ok(args);
        assert!(out.contains("nothing changed"), "{args:?}: {out}");
        assert!(
            out.contains("waiting for a restart: master.keepalive"),
            "{args:?}: {out}"
        );
        let v = m.bbctl_json(args);
        assert_eq!(
            v["needs_restart"],
            serde_json::json!(["master.keepalive"]),
            "{v}"
        );
    }
    m.signal(Signal::SIGTERM);
    m.wait_exit(WAIT);
    m.spawn();
    let out = m.bbctl_ok(&["reload", "--dry-run"]);
    assert!(!out.contains("waiting for a restart"), "{out}");
}

/// A master that takes connections but never answers (stopped, or out of
/// file descriptors) does not hang bbctl: it exits 3 within its handshake
/// bound, saying why; once the master runs again, bbctl works.
#[test]
fn a_master_that_never_answers_is_exit_3_not_a_hang() {
    let m = Master::start(CONFIG);
    m.signal(Signal::SIGSTOP);
    let started = std::time::Instant::now();
    let out = m.bbctl(&["status"]);
    let took = started.elapsed();
    m.signal(Signal::SIGCONT);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("did not answer within 5 s"),
        "{}",
        describe(&out)
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    m.bbctl_code(&["status"], 0);
}
