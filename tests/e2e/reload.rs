//! The reload contract (`docs/reload.md`), one test per row, with the real
//! `bbmaster`, `bbworker` and `bbctl`.
//!
//! Builds that must stay running across a reload run a step that prints its
//! version, touches `<dir>/started.<build id>` and then waits for the marker
//! file `<dir>/go`, which the test creates when it is ready; every such step
//! also has a timeout, so nothing here can hang for long.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::harness::{
    BBCTL_TIMEOUT, Background, LineReader, Master, await_subscription, code, describe,
    run_with_timeout, start_worker, text, wait_until,
};

/// How long a test waits for anything to happen.
const WAIT: Duration = Duration::from_secs(15);

/// Every list field of a `ReloadReport`.
const REPORT_LISTS: &[&str] = &[
    "builders_added",
    "builders_changed",
    "builders_removed",
    "builders_renamed",
    "workers_added",
    "workers_changed",
    "workers_removed",
    "workers_draining",
    "requests_moved",
    "requests_cancelled",
    "builds_on_old_generations",
    "needs_restart",
];

/// One local worker with a single build slot.
const LOCAL1: &str = r#"
[[worker]]
name = "local-1"
local = true
max_builds = 1
"#;

/// A `[[builder]]` named `name` on `workers` with one step running `shell`
/// (a TOML literal string: no escapes), and `extra` lines in the builder.
fn builder(name: &str, workers: &[&str], extra: &str, shell: &str) -> String {
    let workers: Vec<String> = workers.iter().map(|w| format!("\"{w}\"")).collect();
    format!(
        r#"
[[builder]]
name = "{name}"
workers = [{}]
{extra}
  [[builder.step]]
  name = "s"
  shell = '{shell}'
  timeout = "30s"
"#,
        workers.join(", ")
    )
}

/// A step that prints `tag`, says it started, and waits for `<dir>/go`.
fn hold(tag: &str) -> String {
    format!(
        "echo {tag}; touch @DIR@/started.$BB_BUILD_ID; while [ ! -e @DIR@/go ]; do sleep 0.02; done"
    )
}

/// A step that prints `tag` and waits for `<dir>/go` only when the build
/// has the property `HOLD=1`.
fn hold_if_asked(tag: &str) -> String {
    format!(
        "echo {tag}; touch @DIR@/started.$BB_BUILD_ID; if [ \"$BB_PROP_HOLD\" = 1 ]; then while [ ! -e @DIR@/go ]; do sleep 0.02; done; fi"
    )
}

/// Wait (bounded) until build `id` has started its holding step.
fn wait_started(m: &Master, id: u64) {
    let marker = m.path().join(format!("started.{id}"));
    wait_until(&format!("build {id} to start"), WAIT, || marker.exists());
}

/// Let every holding step finish.
fn release(m: &Master) {
    fs::write(m.path().join("go"), "").expect("cannot write the go marker");
}

/// `bbctl --json reload ARGS`, expecting exit 0; the report.
fn reload(m: &Master, args: &[&str]) -> Value {
    let mut all = vec!["reload"];
    all.extend_from_slice(args);
    let r = m.bbctl_json(&all);
    assert_eq!(
        r["dry_run"],
        args.contains(&"--dry-run"),
        "dry_run flag: {r}"
    );
    r
}

/// Assert a report's generations, that each field of `lists` holds the
/// given value, and that every other list field is empty.
fn expect_report(r: &Value, before: u64, after: u64, lists: &[(&str, Value)]) {
    assert_eq!(r["generation_before"], before, "generation_before: {r}");
    assert_eq!(r["generation_after"], after, "generation_after: {r}");
    assert!(
        r["config_hash"].as_str().is_some_and(|h| !h.is_empty()),
        "config_hash: {r}"
    );
    for field in REPORT_LISTS {
        let want = lists
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| json!([]));
        assert_eq!(r[*field], want, "{field}: {r}");
    }
    for (field, _) in lists {
        assert!(REPORT_LISTS.contains(field), "no report field {field}");
    }
}

/// `status --json`.
fn status(m: &Master) -> Value {
    m.bbctl_json(&["status"])
}

/// The entry named `name` in the list `key` (`builders`, `workers`) of a
/// status.
fn entry<'a>(s: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
    s[key]
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["name"] == name)
}

/// The names in the list `key` of a status.
fn names(s: &Value, key: &str) -> Vec<String> {
    s[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["name"].as_str().expect("a name").to_string())
        .collect()
}

/// Wait (bounded) until `status --json` satisfies `cond`; returns it.
fn wait_status(m: &Master, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until(what, WAIT, || {
        last = status(m);
        cond(&last)
    });
    last
}

/// Start `bbctl force-build ARGS --wait` in the background; returns it
/// with its request id, once the request is queued.
fn waiter(m: &Master, args: &[&str]) -> (Background, u64) {
    let mut all = vec!["force-build"];
    all.extend_from_slice(args);
    all.push("--wait");
    let mut bg = m.bbctl_spawn(&all);
    let line = bg.wait_stderr("queued for", WAIT);
    let id = line
        .strip_prefix("request r")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request id in {line:?}"));
    (bg, id)
}

/// Finish a background `bbctl`, expecting exit `want`; its stderr.
fn finish(bg: Background, want: i32) -> String {
    let out = bg.finish(WAIT);
    assert_eq!(code(&out), want, "{}", describe(&out));
    text(&out.stderr)
}

/// The `builds --json` list (at most 1,000).
fn builds(m: &Master, extra: &[&str]) -> Vec<Value> {
    let mut all = vec!["builds", "-n", "1000"];
    all.extend_from_slice(extra);
    m.bbctl_json(&all).as_array().expect("a list").clone()
}

/// Write `contents` (with `@DIR@` expanded) to `<dir>/name`.
fn write_in(m: &Master, name: &str, contents: &str) -> String {
    let path = m.path().join(name);
    fs::write(
        &path,
        contents.replace("@DIR@", &m.path().to_string_lossy()),
    )
    .expect("cannot write a file");
    path.to_string_lossy().into_owned()
}

/// Whether `err` holds `file:LINE:COLUMN: ` for `file`, with numbers.
fn has_position(err: &str, file: &Path) -> bool {
    let prefix = format!("{}:", file.display());
    err.match_indices(&prefix).any(|(at, _)| {
        let rest = &err[at + prefix.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().unwrap_or_default();
        let column = parts.next().unwrap_or_default();
        let tail = parts.next().unwrap_or_default();
        !line.is_empty()
            && line.bytes().all(|b| b.is_ascii_digit())
            && !column.is_empty()
            && column.bytes().all(|b| b.is_ascii_digit())
            && tail.starts_with(' ')
    })
}

/// Row "invalid file": for each kind of invalid file (syntax, unknown key,
/// unknown worker, duplicate name, bad value, unreadable `secret_file`),
/// `bbctl reload` exits 5, prints `file:line:column: reason` on stderr and
/// nothing on stdout (with `--json` too), and nothing changes: generation,
/// builders and workers are the same, the running build runs on and the
/// queued request is still queued, then runs.
#[test]
fn invalid_file_changes_nothing() {
    let good = format!("{LOCAL1}{}", builder("b", &["local-1"], "", &hold("v1")));
    let m = Master::start(&good);
    let (first, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);
    let (second, queued) = waiter(&m, &["b"]);
    let before = wait_status(&m, "one running, one queued", |s| {
        let b = entry(s, "builders", "b").unwrap();
        b["running"] == 1 && b["queued"] == 1
    });

    let variants: [(&str, String); 6] = [
        ("syntax", format!("{good}\nname = \n")),
        ("unknown key", format!("{good}  bogus = 1\n")),
        (
            "unknown worker",
            format!("{good}{}", builder("c", &["nobody"], "", "true")),
        ),
        (
            "duplicate name",
            format!("{good}{}", builder("b", &["local-1"], "", "true")),
        ),
        (
            "bad value",
            good.replace("max_builds = 1", "max_builds = \"many\""),
        ),
        (
            "unreadable secret_file",
            format!("{good}\n[[worker]]\nname = \"box\"\nsecret_file = \"@DIR@/missing.secret\"\n"),
        ),
    ];
    let config = m.config_path();
    for (what, bad) in &variants {
        m.write_config(bad);
        for json in [false, true] {
            let args: &[&str] = if json {
                &["--json", "reload"]
            } else {
                &["reload"]
            };
            let out = m.bbctl_code(args, 5);
            assert_eq!(text(&out.stdout), "", "{what}: stdout of {args:?}");
            let err = text(&out.stderr);
            assert!(
                has_position(&err, &config),
                "{what}: no {}:line:column: in\n{err}",
                config.display()
            );
        }
    }
    let after = status(&m);
    for key in ["generation", "config_hash", "builders", "workers"] {
        assert_eq!(after[key], before[key], "{key} changed: {after}");
    }
    assert_eq!(entry(&after, "builders", "b").unwrap()["queued"], 1);

    release(&m);
    assert!(finish(first, 0).contains("build 1 finished: success"));
    assert!(finish(second, 0).contains("finished: success"));
    let last = builds(&m, &[]);
    assert_eq!(last[0]["request_id"], queued, "{last:?}");
    assert_eq!(last[0]["generation"], 1, "{last:?}");
}

/// Row "builder unchanged": reloading the very same file keeps the
/// generation and reports nothing at all, in JSON and in words.
#[test]
fn unchanged_file_changes_nothing() {
    let cfg = format!("{LOCAL1}{}", builder("b", &["local-1"], "", "echo hi"));
    let m = Master::start(&cfg);
    m.bbctl_code(&["force-build", "b", "--wait"], 0);
    let hash = status(&m)["config_hash"].clone();
    m.write_config(&cfg);
    let r = reload(&m, &[]);
    expect_report(&r, 1, 1, &[]);
    assert_eq!(r["config_hash"], hash, "{r}");
    let said = m.bbctl_ok(&["reload"]);
    assert_eq!(said, "nothing changed: generation stays 1\n");
    assert_eq!(status(&m)["generation"], 1);
}

/// Row "builder changed": a build running under v1 keeps running and ends
/// with v1's output and success; the requests queued behind it keep their
/// order and run with v2; `builds --json` shows generation 1 for the first
/// build and 2 (with another config hash) for the others; the report lists
/// the builder as changed and the running build on an old generation.
#[test]
fn changed_builder_running_keeps_v1_queued_get_v2() {
    let v1 = format!("{LOCAL1}{}", builder("b", &["local-1"], "", &hold("v1")));
    let v2 = format!("{LOCAL1}{}", builder("b", &["local-1"], "", "echo v2"));
    let m = Master::start(&v1);
    let (running, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);
    let (q1, r2) = waiter(&m, &["b"]);
    let (q2, r3) = waiter(&m, &["b"]);

    m.write_config(&v2);
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("builders_changed", json!(["b"])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    let s = status(&m);
    assert_eq!(s["generation"], 2, "{s}");
    let b = entry(&s, "builders", "b").unwrap();
    assert_eq!(b["running_builds"], json!([1]), "{s}");
    assert_eq!(b["queued"], 2, "{s}");

    release(&m);
    assert!(finish(running, 0).contains("build 1 finished: success"));
    finish(q1, 0);
    finish(q2, 0);

    let all = builds(&m, &[]);
    let rows: Vec<_> = all
        .iter()
        .rev()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["request_id"].as_u64().unwrap(),
                b["generation"].as_u64().unwrap(),
                b["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ok = "success".to_string();
    assert_eq!(
        rows,
        vec![
            (1, 1, 1, ok.clone()),
            (2, r2, 2, ok.clone()),
            (3, r3, 2, ok)
        ],
        "queued requests run in order, under generation 2: {all:?}"
    );
    assert_ne!(all[2]["config_hash"], all[0]["config_hash"], "{all:?}");
    assert_eq!(all[0]["config_hash"], r["config_hash"], "{all:?}");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "v1\n");
    assert_eq!(m.bbctl_ok(&["log", "2"]), "v2\n");
    assert_eq!(m.bbctl_ok(&["log", "3"]), "v2\n");
    let detail = m.bbctl_json(&["build", "1"]);
    assert_eq!(detail["generation"], 1, "{detail}");
}

/// Row "builder added": right after the reload that adds it, the builder
/// takes a build and `force-build --wait` succeeds.
#[test]
fn added_builder_dispatches_at_once() {
    let one = format!("{LOCAL1}{}", builder("one", &["local-1"], "", "echo one"));
    let m = Master::start(&one);
    m.bbctl_code(&["force-build", "new", "--wait"], 4);
    m.write_config(&format!(
        "{one}{}",
        builder("new", &["local-1"], "", "echo new")
    ));
    let r = reload(&m, &[]);
    expect_report(&r, 1, 2, &[("builders_added", json!(["new"]))]);
    let out = m.bbctl_code(&["force-build", "new", "--follow"], 0);
    assert_eq!(text(&out.stdout), "new\n");
    let b = m.bbctl_json(&["build", "1"]);
    assert_eq!(b["builder"], "new", "{b}");
    assert_eq!(b["generation"], 2, "{b}");
}

/// Row "builder removed": its running build finishes and is recorded as a
/// success; its queued requests are cancelled with the reason `removed by
/// reload, generation 2` (the clients waiting on them exit 1 saying so) and
/// listed in `requests_cancelled`; `force-build` to it exits 4.
#[test]
fn removed_builder_finishes_running_and_cancels_queued() {
    let keep = builder("keep", &["local-1"], "", "echo keep");
    let m = Master::start(&format!(
        "{LOCAL1}{keep}{}",
        builder("gone", &["local-1"], "", &hold("gone"))
    ));
    let (running, r1) = waiter(&m, &["gone"]);
    wait_started(&m, 1);
    let (q1, r2) = waiter(&m, &["gone"]);
    let (q2, r3) = waiter(&m, &["gone"]);

    m.write_config(&format!("{LOCAL1}{keep}"));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("builders_removed", json!(["gone"])),
            ("requests_cancelled", json!([r2, r3])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    for q in [q1, q2] {
        let err = finish(q, 1);
        assert!(
            err.contains("request cancelled before it started: removed by reload, generation 2"),
            "{err}"
        );
    }
    let out = m.bbctl_code(&["force-build", "gone"], 4);
    let err = text(&out.stderr);
    assert!(err.contains("no builder named `gone`"), "{err}");

    release(&m);
    assert!(finish(running, 0).contains("build 1 finished: success"));
    let b = m.bbctl_json(&["build", "1"]);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["request_id"], r1, "{b}");
    assert_eq!(b["builder"], "gone", "{b}");
    assert_eq!(m.bbctl_ok(&["log", "1"]), "gone\n");
    let ids: Vec<_> = builds(&m, &[]).iter().map(|b| b["id"].clone()).collect();
    assert_eq!(ids, [1], "no build for the cancelled requests");
    let s = wait_status(&m, "the removed builder to leave status", |s| {
        names(s, "builders") == ["keep"]
    });
    assert_eq!(s["generation"], 2, "{s}");
    // The worker is free for the builder that stays.
    m.bbctl_code(&["force-build", "keep", "--wait"], 0);
}

/// Row "builder renamed": with `previous_names = ["old"]`, the queue moves
/// to the new name in order, the running build finishes and is recorded
/// under the new name, the history (`builds --builder new`) holds the
/// builds made under the old name, and `force-build old` exits 4 naming
/// the new name.
#[test]
fn renamed_builder_keeps_queue_and_history() {
    let m = Master::start(&format!(
        "{LOCAL1}{}",
        builder("old", &["local-1"], "", &hold_if_asked("same"))
    ));
    m.bbctl_code(&["force-build", "old", "--wait"], 0);
    let (running, _) = waiter(&m, &["old", "-p", "HOLD=1"]);
    wait_started(&m, 2);
    let (q1, r3) = waiter(&m, &["old"]);
    let (q2, r4) = waiter(&m, &["old"]);

    m.write_config(&format!(
        "{LOCAL1}{}",
        builder(
            "new",
            &["local-1"],
            "previous_names = [\"old\"]",
            &hold_if_asked("same")
        )
    ));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("builders_renamed", json!([["old", "new"]])),
            ("requests_moved", json!([r3, r4])),
            ("builds_on_old_generations", json!([2])),
        ],
    );
    let s = status(&m);
    assert_eq!(names(&s, "builders"), ["new"], "{s}");
    let b = entry(&s, "builders", "new").unwrap();
    assert_eq!(b["queued"], 2, "{s}");
    assert_eq!(b["running_builds"], json!([2]), "{s}");

    let out = m.bbctl_code(&["force-build", "old"], 4);
    let err = text(&out.stderr);
    assert!(
        err.contains("no builder named `old`: it was renamed to `new`"),
        "{err}"
    );

    release(&m);
    finish(running, 0);
    finish(q1, 0);
    finish(q2, 0);
    let history = builds(&m, &["--builder", "new"]);
    let rows: Vec<_> = history
        .iter()
        .rev()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["builder"].as_str().unwrap().to_string(),
                b["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |id| (id, "new".to_string(), "success".to_string());
    assert_eq!(rows, vec![row(1), row(2), row(3), row(4)], "{history:?}");
    assert_eq!(history[0]["request_id"], r4, "{history:?}");
    // The old name has no history left and no builder: not found.
    m.bbctl_code(&["builds", "--builder", "old"], 4);
}

/// A remote worker `box` (secret in `box.secret`), plus `local-1`.
fn box_config(max_builds: u32, secret_file: &str, box_builder_workers: &[&str]) -> String {
    format!(
        r#"{LOCAL1}
[[worker]]
name = "box"
secret_file = "@DIR@/{secret_file}"
max_builds = {max_builds}
{}"#,
        builder("b", box_builder_workers, "", &hold("b"))
    )
}

/// Wait (bounded) until worker `name` is connected.
fn wait_connected(m: &Master, name: &str) {
    wait_status(m, &format!("worker {name} to connect"), |s| {
        entry(s, "workers", name).is_some_and(|w| w["connected"] == true)
    });
}

/// Row "worker changed: max_builds": raising the limit starts the queued
/// build at once; lowering it below what runs stops nothing, and new
/// builds then wait for the lower limit.
#[test]
fn worker_max_builds_applies_to_new_builds() {
    let m = Master::start_with_files(
        &box_config(1, "box.secret", &["box"]),
        &[("box.secret", "secret-one-0123456789\n")],
    );
    let worker = start_worker(&m, "box", &m.path().join("box.secret"));
    wait_connected(&m, "box");
    let (b1, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);
    let (b2, _) = waiter(&m, &["b"]);
    let s = status(&m);
    assert_eq!(entry(&s, "builders", "b").unwrap()["queued"], 1, "{s}");

    m.write_config(&box_config(2, "box.secret", &["box"]));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("workers_changed", json!(["box"])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    wait_started(&m, 2);
    let s = status(&m);
    let w = entry(&s, "workers", "box").unwrap();
    assert_eq!(w["max_builds"], 2, "{s}");
    assert_eq!(w["running_builds"], json!([1, 2]), "{s}");

    // Back to 1 with 2 running: both run on, a third waits.
    m.write_config(&box_config(1, "box.secret", &["box"]));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        2,
        3,
        &[
            ("workers_changed", json!(["box"])),
            ("builds_on_old_generations", json!([1, 2])),
        ],
    );
    let (b3, _) = waiter(&m, &["b"]);
    let s = status(&m);
    let w = entry(&s, "workers", "box").unwrap();
    assert_eq!(w["running_builds"], json!([1, 2]), "{s}");
    assert_eq!(entry(&s, "builders", "b").unwrap()["queued"], 1, "{s}");

    release(&m);
    for b in [b1, b2, b3] {
        finish(b, 0);
    }
    let all = builds(&m, &[]);
    assert!(all.iter().all(|b| b["worker"] == "box"), "{all:?}");
    assert_eq!(all[0]["generation"], 3, "{all:?}");
    drop(worker);
}

/// Row "worker removed": a remote worker removed while it runs a build
/// finishes it (success, recorded on it), takes nothing new (the builder's
/// next request runs on `local-1`), and is then disconnected with the
/// reason `removed by reload`: `bbworker` says so and exits, and `status`
/// no longer lists it.
#[test]
fn removed_worker_drains_then_is_disconnected() {
    let m = Master::start_with_files(
        &box_config(2, "box.secret", &["box"]),
        &[("box.secret", "secret-one-0123456789\n")],
    );
    let mut worker = start_worker(&m, "box", &m.path().join("box.secret"));
    wait_connected(&m, "box");
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    let (b1, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);

    // box is gone, and `b` now runs on local-1.
    let without_box = format!("{LOCAL1}{}", builder("b", &["local-1"], "", &hold("b")));
    m.write_config(&without_box);
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("builders_changed", json!(["b"])),
            ("workers_removed", json!(["box"])),
            ("workers_draining", json!(["box"])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    let s = status(&m);
    let w = entry(&s, "workers", "box").expect("box is listed while it drains");
    assert_eq!(w["draining"], true, "{s}");
    assert_eq!(w["running_builds"], json!([1]), "{s}");

    let (b2, _) = waiter(&m, &["b"]);
    wait_started(&m, 2);
    release(&m);
    assert!(finish(b1, 0).contains("build 1 finished: success"));
    finish(b2, 0);

    worker.wait_stderr("removed by reload", WAIT);
    let out = worker.finish(WAIT);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    // An events consumer learns that box left, and why: once.
    let lines = events.read_until("box leaving", WAIT, |l| l.contains("\"worker_lost\""));
    let lost: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (&lost["worker"], &lost["reason"]),
        (&json!("box"), &json!("removed by reload")),
        "{lost}"
    );
    let s = wait_status(&m, "box to leave status", |s| {
        entry(s, "workers", "box").is_none()
    });
    assert_eq!(names(&s, "workers"), ["local-1"], "{s}");
    let all = builds(&m, &[]);
    let on: Vec<_> = all
        .iter()
        .rev()
        .map(|b| (b["worker"].clone(), b["result"].clone()))
        .collect();
    assert_eq!(
        on,
        vec![
            (json!("box"), json!("success")),
            (json!("local-1"), json!("success"))
        ],
        "{all:?}"
    );
}

/// Row "worker changed: credentials": the build running on the old login
/// finishes with success, then the link is closed (`bbworker` exits saying
/// `credentials changed by reload`); a worker with the old secret is
/// refused, and one with the new secret gets in and builds.
#[test]
fn changed_secret_drains_then_requires_the_new_one() {
    let m = Master::start_with_files(
        &box_config(1, "box.secret", &["box"]),
        &[
            ("box.secret", "secret-one-0123456789\n"),
            ("box2.secret", "secret-two-0123456789\n"),
        ],
    );
    let mut worker = start_worker(&m, "box", &m.path().join("box.secret"));
    wait_connected(&m, "box");
    let mut events = LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    await_subscription(&m, &mut events, "\"master_draining\"");
    let (b1, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);

    m.write_config(&box_config(1, "box2.secret", &["box"]));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("workers_changed", json!(["box"])),
            ("workers_draining", json!(["box"])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    // Queued now: it must wait for the worker to come back.
    let (b2, r2) = waiter(&m, &["b"]);
    release(&m);
    assert!(finish(b1, 0).contains("build 1 finished: success"));
    worker.wait_stderr("credentials changed by reload", WAIT);
    let out = worker.finish(WAIT);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    // `worker_draining` at the reload, then `worker_lost` with the reason
    // when the master closes the link.
    let lines = events.read_until("box leaving", WAIT, |l| l.contains("\"worker_lost\""));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"worker_draining\"") && l.contains("\"box\"")),
        "{lines:?}"
    );
    let lost: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (&lost["worker"], &lost["reason"]),
        (
            &json!("box"),
            &json!("credentials changed by reload; authenticate again")
        ),
        "{lost}"
    );

    let old = start_worker(&m, "box", &m.path().join("box.secret"));
    let out = old.finish(WAIT);
    assert_ne!(code(&out), 0, "the old secret got in: {}", describe(&out));
    assert!(
        text(&out.stderr).contains("wrong secret"),
        "{}",
        describe(&out)
    );
    let s = status(&m);
    assert_eq!(
        entry(&s, "workers", "box").unwrap()["connected"],
        false,
        "{s}"
    );
    assert_eq!(entry(&s, "builders", "b").unwrap()["queued"], 1, "{s}");

    let new = start_worker(&m, "box", &m.path().join("box2.secret"));
    finish(b2, 0);
    let last = &builds(&m, &[])[0];
    assert_eq!(last["request_id"], r2, "{last}");
    assert_eq!(last["worker"], "box", "{last}");
    assert_eq!(last["generation"], 2, "{last}");
    drop(new);
}

/// Row "`[master]` settings that need a restart": moving `worker_socket`
/// is reported under `needs_restart` and waits (the old socket still
/// serves, the new path is not bound), while the rest of the file applies:
/// an added builder builds at once.
#[test]
fn restart_settings_wait_and_the_rest_applies() {
    let one = format!("{LOCAL1}{}", builder("one", &["local-1"], "", "echo one"));
    let m = Master::start(&one);
    let moved = m.path().join("moved.sock");
    m.write_config(&format!(
        "[master]\nworker_socket = \"{}\"\n{one}{}",
        moved.display(),
        builder("two", &["local-1"], "", "echo two")
    ));
    let r = reload(&m, &[]);
    expect_report(
        &r,
        1,
        2,
        &[
            ("builders_added", json!(["two"])),
            ("needs_restart", json!(["master.worker_socket"])),
        ],
    );
    let said = m.bbctl_ok(&["reload", "--dry-run"]);
    assert!(said.contains("nothing changed"), "{said}");
    let out = m.bbctl_code(&["force-build", "two", "--follow"], 0);
    assert_eq!(text(&out.stdout), "two\n");
    assert!(
        !moved.exists(),
        "the new worker socket is bound before a restart"
    );
    assert!(m.worker_socket().exists(), "the worker socket moved");
    assert_eq!(status(&m)["generation"], 2);
}

/// `reload --dry-run` reports exactly what the following real reload
/// reports (added, changed and removed builders, cancelled requests, builds
/// on old generations), with `dry_run` true, and changes nothing in
/// between: same generation, builders, queues.
#[test]
fn dry_run_reports_the_same_and_changes_nothing() {
    let m = Master::start(&format!(
        "{LOCAL1}{}{}",
        builder("b", &["local-1"], "", &hold("v1")),
        builder("gone", &["local-1"], "", "echo gone")
    ));
    let (running, _) = waiter(&m, &["b"]);
    wait_started(&m, 1);
    let (queued, r2) = waiter(&m, &["gone"]);
    let before = status(&m);

    m.write_config(&format!(
        "{LOCAL1}{}{}",
        builder("b", &["local-1"], "", "echo v2"),
        builder("added", &["local-1"], "", "echo added")
    ));
    let dry = reload(&m, &["--dry-run"]);
    expect_report(
        &dry,
        1,
        2,
        &[
            ("builders_added", json!(["added"])),
            ("builders_changed", json!(["b"])),
            ("builders_removed", json!(["gone"])),
            ("requests_cancelled", json!([r2])),
            ("builds_on_old_generations", json!([1])),
        ],
    );
    let said = m.bbctl_ok(&["reload", "--dry-run"]);
    assert!(said.contains("would go from 1 to 2"), "{said}");
    assert!(said.contains("dry run"), "{said}");
    let between = status(&m);
    for key in ["generation", "config_hash", "builders", "workers"] {
        assert_eq!(between[key], before[key], "a dry run changed {key}");
    }
    m.bbctl_code(&["force-build", "added"], 4);

    let real = reload(&m, &[]);
    let mut dry_fields = dry.as_object().unwrap().clone();
    let mut real_fields = real.as_object().unwrap().clone();
    assert_eq!(dry_fields.remove("dry_run"), Some(json!(true)));
    assert_eq!(real_fields.remove("dry_run"), Some(json!(false)));
    assert_eq!(dry_fields, real_fields, "dry run and real reload differ");
    assert!(finish(queued, 1).contains("removed by reload, generation 2"));
    release(&m);
    finish(running, 0);
}

/// `SIGHUP` to `bbmaster` reloads its config file: the generation goes up
/// and an added builder builds, and the log says `reload applied` with the
/// summary; an invalid file on `SIGHUP` is logged with `file:line:column`
/// and changes nothing.
#[test]
fn sighup_reloads() {
    let one = format!("{LOCAL1}{}", builder("one", &["local-1"], "", "echo one"));
    let m = Master::start(&one);
    let hup = || kill(Pid::from_raw(m.pid() as i32), Signal::SIGHUP).expect("cannot signal");
    m.write_config(&format!(
        "{one}{}",
        builder("two", &["local-1"], "", "echo two")
    ));
    hup();
    wait_status(&m, "generation 2 after SIGHUP", |s| s["generation"] == 2);
    wait_until("`reload applied` in the master's log", WAIT, || {
        m.stderr()
            .contains("reload applied: generation 1 -> 2; builders +1")
    });
    m.bbctl_code(&["force-build", "two", "--wait"], 0);

    m.write_config(&format!("{one}  bogus = 1\n"));
    hup();
    let config = m.config_path();
    wait_until("`reload rejected` in the master's log", WAIT, || {
        let log = m.stderr();
        log.contains("reload rejected") && has_position(&log, &config)
    });
    let s = status(&m);
    assert_eq!(s["generation"], 2, "{s}");
    assert_eq!(names(&s, "builders"), ["one", "two"], "{s}");
}

/// Five `bbctl reload` run at once on a changed file are applied whole, one
/// after another (the master loop owns the core): all exit 0, exactly one
/// applies the change (generation 1 -> 2, the builder added), and each of
/// the others re-reads the same file and finds nothing to change
/// (generation 2 -> 2, empty report).
#[test]
fn concurrent_reloads_are_applied_one_after_another() {
    let one = format!("{LOCAL1}{}", builder("one", &["local-1"], "", "echo one"));
    let m = Master::start(&one);
    m.write_config(&format!(
        "{one}{}",
        builder("two", &["local-1"], "", "echo two")
    ));
    let all: Vec<Background> = (0..5)
        .map(|_| m.bbctl_spawn(&["--json", "reload"]))
        .collect();
    let reports: Vec<Value> = all
        .into_iter()
        .map(|bg| {
            let out = bg.finish(BBCTL_TIMEOUT);
            assert_eq!(code(&out), 0, "{}", describe(&out));
            serde_json::from_slice(&out.stdout).expect("a JSON report")
        })
        .collect();
    let (applied, idle): (Vec<&Value>, Vec<&Value>) = reports
        .iter()
        .partition(|r| r["generation_before"] != r["generation_after"]);
    assert_eq!(applied.len(), 1, "exactly one applies: {reports:?}");
    expect_report(applied[0], 1, 2, &[("builders_added", json!(["two"]))]);
    for r in idle {
        expect_report(r, 2, 2, &[]);
        assert_eq!(r["config_hash"], applied[0]["config_hash"]);
    }
    assert_eq!(status(&m)["generation"], 2);
}

/// `reload --config OTHER` applies another file (a relative path, resolved
/// by `bbctl` from its own directory), and later plain reloads and SIGHUP
/// read that file, not the one the master was started with.
#[test]
fn reload_config_switches_the_file() {
    let one = format!("{LOCAL1}{}", builder("one", &["local-1"], "", "echo one"));
    let m = Master::start(&one);
    let two = builder("two", &["local-1"], "", "echo two");
    let other = write_in(&m, "other.toml", &format!("{one}{two}"));

    let mut cmd = m.bbctl_command(&["--json", "reload", "--config", "other.toml"]);
    cmd.current_dir(m.path());
    let out = run_with_timeout(cmd, BBCTL_TIMEOUT);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    expect_report(&r, 1, 2, &[("builders_added", json!(["two"]))]);
    let s = status(&m);
    assert!(
        s["config_origin"]
            .as_str()
            .unwrap_or_default()
            .contains(&other),
        "{s}"
    );

    // The master's own file changes too, but it is no longer read.
    m.write_config(&format!(
        "{one}{}",
        builder("ignored", &["local-1"], "", "true")
    ));
    write_in(
        &m,
        "other.toml",
        &format!(
            "{one}{two}{}",
            builder("three", &["local-1"], "", "echo three")
        ),
    );
    let r = reload(&m, &[]);
    expect_report(&r, 2, 3, &[("builders_added", json!(["three"]))]);
    assert_eq!(names(&status(&m), "builders"), ["one", "three", "two"]);
    let out = m.bbctl_code(&["force-build", "three", "--follow"], 0);
    assert_eq!(text(&out.stdout), "three\n");

    // SIGHUP reads it too.
    write_in(&m, "other.toml", &format!("{one}{two}"));
    kill(Pid::from_raw(m.pid() as i32), Signal::SIGHUP).expect("cannot signal");
    let s = wait_status(&m, "generation 4 after SIGHUP", |s| s["generation"] == 4);
    assert_eq!(names(&s, "builders"), ["one", "two"], "{s}");

    // A missing file is an invalid config: exit 5, nothing changes.
    let out = m.bbctl_code(&["reload", "--config", "/nonexistent/x.toml"], 5);
    assert!(
        text(&out.stderr).contains("/nonexistent/x.toml"),
        "{}",
        describe(&out)
    );
    assert_eq!(status(&m)["generation"], 4);
}
