//! Config files: `check-config` with no master, and `reload`.

use crate::harness::{
    BBCTL, BBCTL_TIMEOUT, Master, code, command, describe, run_with_timeout, temp_dir, text,
};

/// The example config of the issue, verbatim.
const ISSUE_EXAMPLE: &str = include_str!("../config-examples/issue-2.toml");

/// A config with an unknown key on line 4, column 1.
const BAD: &str = "[[worker]]\nname = \"w\"\nlocal = true\nbogus = 1\n";

fn check_config(args: &[&str]) -> std::process::Output {
    let mut cmd = command(BBCTL);
    // No master anywhere near: check-config must not need one.
    cmd.env("BBCTL_SOCKET", "/nonexistent/control.sock")
        .arg("check-config")
        .args(args);
    run_with_timeout(cmd, BBCTL_TIMEOUT)
}

/// `check-config` needs no master: the issue's example is valid (exit 0,
/// with counts), and a file with an unknown key is invalid (exit 1) with
/// `file:line:col: reason` on stderr; `--json` says the same on stdout.
#[test]
fn check_config_good_and_bad() {
    let dir = temp_dir();
    let good = dir.path().join("example.toml");
    std::fs::write(&good, ISSUE_EXAMPLE).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, BAD).unwrap();
    let good_s = good.to_str().unwrap();
    let bad_s = bad.to_str().unwrap();

    let out = check_config(&[good_s]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        format!("{good_s}: valid (2 worker(s), 1 builder(s))\n")
    );

    let out = check_config(&[bad_s]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{bad_s}:4:1: ")) && first.contains("unknown key `bogus`"),
        "{err}"
    );
    assert!(err.contains("is invalid (1 problem(s))"), "{err}");

    let out = check_config(&["--json", good_s]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["workers"], 2, "{v}");
    assert_eq!(v["builders"], 1, "{v}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");

    let out = check_config(&["--json", bad_s]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false, "{v}");
    let problems = v["problems"].as_array().expect("problems is a list");
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["line"], 4, "{v}");
    assert_eq!(problems[0]["column"], 1, "{v}");
    assert_eq!(problems[0]["file"], bad_s, "{v}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bogus"),
        "{v}"
    );

    let out = check_config(&[dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(
        code(&out),
        1,
        "a missing file is invalid: {}",
        describe(&out)
    );
    assert!(
        text(&out.stderr).contains("missing.toml"),
        "{}",
        describe(&out)
    );
}

const ONE: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "one"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo one"
"#;

const TWO: &str = r#"

[[builder]]
name = "two"
workers = ["local-1"]

  [[builder.step]]
  name = "s"
  shell = "echo two"
"#;

/// `reload` applies an edited config: a builder added to the file can be
/// force-built and the generation goes up. An invalid edit is refused with
/// exit 5 and `file:line:col`, and nothing changes.
#[test]
fn reload_applies_good_edits_and_refuses_bad_ones() {
    let m = Master::start(ONE);
    m.bbctl_code(&["force-build", "two", "--wait"], 4);

    m.write_config(&format!("{ONE}{TWO}"));
    let out = m.bbctl_code(&["reload"], 0);
    let said = text(&out.stdout);
    assert!(said.contains("from 1 to 2"), "{said}");
    assert!(said.contains("builders added: two"), "{said}");

    let out = m.bbctl_code(&["force-build", "two", "--follow"], 0);
    assert_eq!(text(&out.stdout), "two\n");
    let s = m.bbctl_json(&["status"]);
    assert_eq!(s["generation"], 2, "{s}");
    let b = m.bbctl_json(&["build", "1"]);
    assert_eq!(b["generation"], 2, "{b}");

    // An unknown key on the last line of the file.
    let broken = format!("{ONE}{TWO}  oops = true\n");
    let line = broken.lines().count();
    m.write_config(&broken);
    let out = m.bbctl_code(&["reload"], 5);
    let err = text(&out.stderr);
    let config = m.config_path();
    assert!(
        err.contains(&format!("{}:{line}:3", config.display())),
        "no file:line:col in:\n{err}"
    );
    let s = m.bbctl_json(&["status"]);
    assert_eq!(
        s["generation"], 2,
        "a refused reload changed the generation: {s}"
    );
    let names: Vec<_> = s["builders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].clone())
        .collect();
    assert_eq!(names, ["one", "two"], "{s}");
    m.bbctl_code(&["force-build", "one", "--wait"], 0);

    // A config that removes a worker still in use by a builder is invalid too.
    m.write_config(&TWO.replace("local-1", "nobody"));
    let out = m.bbctl_code(&["reload"], 5);
    assert!(text(&out.stderr).contains("nobody"), "{}", describe(&out));
    assert_eq!(m.bbctl_json(&["status"])["generation"], 2);
}

/// A file with four problems (a type error, a value out of range, an
/// unknown key, a bad worker limit) reports all four: only a syntax error
/// stops the checks. The type error of a duration gets the hint that a
/// badly written duration gets.
#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = temp_dir();
    let file = dir.path().join("four.toml");
    std::fs::write(
        &file,
        "[master]\nkeepalive = 30\nmax_retries = -1\nstate_dri = \"s\"\n\n\
         [[worker]]\nname = \"w\"\nlocal = true\nmax_builds = 0\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = check_config(&[f]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{f}:2:13: master: `keepalive` must be a duration string, not the integer 30; write it like \"30s\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:4:1: master: unknown key `state_dri`")),
        "{err}"
    );
    assert!(err.contains("is invalid (4 problem(s))"), "{err}");
    let out = check_config(&["--json", f]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(4), "{v}");
}

/// An empty (or all-comments) file is valid, but `check-config` and
/// `reload` warn that it defines nothing (`--json`: `warnings`). A missing
/// file is invalid with no made-up position.
#[test]
fn empty_and_missing_config_files() {
    let dir = temp_dir();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "# nothing here yet\n").unwrap();
    let e = empty.to_str().unwrap();
    let out = check_config(&[e]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{e}: warning: no builders are defined")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{e}: warning: no workers are defined")),
        "{err}"
    );
    let out = check_config(&["--json", e]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{v}");

    let missing = dir.path().join("nope.toml");
    let m_s = missing.to_str().unwrap();
    let out = check_config(&[m_s]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = text(&out.stderr);
    assert_eq!(
        err.lines().next(),
        Some(format!("cannot read {m_s}: No such file or directory").as_str()),
        "{err}"
    );
    assert!(!err.contains(":1:1"), "{err}");
    let out = check_config(&["--json", m_s]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["problems"][0]["line"], serde_json::Value::Null, "{v}");

    let m = Master::start(ONE);
    m.write_config("# emptied\n");
    let out = m.bbctl_code(&["reload"], 0);
    assert!(
        text(&out.stderr).contains("warning: no builders are defined"),
        "{}",
        describe(&out)
    );
    m.write_config(ONE);
    m.bbctl_code(&["reload"], 0);
    m.write_config("");
    let v = m.bbctl_json(&["reload", "--dry-run"]);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{v}");
}

/// Waiting `trigger` steps that could never end (docs/locks.md): the
/// corpus file with a cycle, a lock the waiting build holds and the one
/// worker slot is refused by `check-config` (exit 1) and by `reload` (exit
/// 5, nothing changes), each problem naming builder, step and scheduler.
/// A triggered builder sharing the triggering one's worker only under
/// load is a warning, from both.
#[test]
fn waiting_triggers_that_never_end_are_refused_by_check_config_and_reload() {
    let deadlocked = include_str!("../config-corpus/trigger-deadlocks.toml");
    let words = [
        "builder `loop-a`, step `fan`: waiting triggers form a cycle",
        "`loop-b` (step `back`) waits for `loop-a` through scheduler `to-a`",
        "builder `deploy`, step `smoke`: while it waits for the builds it triggers, `deploy` \
         (exclusive) holds lock `rig`; builder `smoke-test` (scheduler `smoke`) needs it",
        "builder `tiny`, step `kick`: builder `tiny-child` (scheduler `tiny-kids`) can run only \
         on worker `w2` (max_builds 1)",
    ];
    let dir = temp_dir();
    let file = dir.path().join("deadlocked.toml");
    std::fs::write(&file, deadlocked).unwrap();
    let f = file.to_str().unwrap();
    let out = check_config(&[f]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = text(&out.stderr);
    for w in words {
        assert!(err.contains(w), "no `{w}` in:\n{err}");
    }
    assert!(
        err.contains(&format!("{f}:36:13: builder `deploy`")),
        "{err}"
    );

    let m = Master::start(ONE);
    m.write_config(deadlocked);
    let out = m.bbctl_code(&["reload"], 5);
    let err = text(&out.stderr);
    for w in words {
        assert!(err.contains(w), "no `{w}` in:\n{err}");
    }
    assert_eq!(m.bbctl_json(&["status"])["generation"], 1);

    // Under load only: parent and child share local-1's two slots.
    let shared = format!(
        "{ONE}\n[[builder]]\nname = \"parent\"\nworkers = [\"local-1\"]\n  [[builder.step]]\n  \
         name = \"fan\"\n  trigger = {{ schedulers = [\"kids\"], wait = true }}\n\n\
         [[scheduler]]\nname = \"kids\"\nkind = \"triggerable\"\nbuilders = [\"one\"]\n"
    )
    .replace("local = true", "local = true\nmax_builds = 2");
    let warning = "warning: builder `parent`, step `fan`: builder `one` (scheduler `kids`) runs \
                   only on workers that `parent` runs on too (`local-1` (max_builds 2)); 2 \
                   builds of `parent` waiting at once fill every slot";
    let file = dir.path().join("shared.toml");
    std::fs::write(&file, &shared).unwrap();
    let out = check_config(&[file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(text(&out.stderr).contains(warning), "{}", describe(&out));
    m.write_config(&shared);
    let out = m.bbctl_code(&["reload"], 0);
    assert!(text(&out.stderr).contains(warning), "{}", describe(&out));
    assert_eq!(m.bbctl_json(&["status"])["generation"], 2);
}
