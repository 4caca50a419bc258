//! Changes end to end: `bbctl sendchange` through a `branch` scheduler to
//! a build whose steps see the source stamp, `changes`, `rebuild` with the
//! same stamp, and a pending tree-stable timer across a `kill -9` of the
//! master.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Master, describe, text};
use crate::storage::wait_finished;

/// A builder whose step prints the source stamp, and a scheduler on
/// `main` that builds changes touching `src/` once the tree is stable
/// for `TREE_STABLE`.
const CONFIG: &str = r#"
[[worker]]
name = "local-1"
local = true

[[builder]]
name = "test"
workers = ["local-1"]
  [[builder.step]]
  name = "show"
  shell = "echo repo=$BB_REPOSITORY branch=$BB_BRANCH rev=$BB_REVISION changes=$BB_CHANGES"

[[scheduler]]
name = "on-main"
kind = "branch"
builders = ["test"]
branches = ["main", "release/*"]
files = ["src/**"]
tree_stable = "TREE_STABLE"
"#;

fn config(tree_stable: &str) -> String {
    CONFIG.replace("TREE_STABLE", tree_stable)
}

fn sendchange(m: &Master, branch: &str, rev: &str, file: &str) -> u64 {
    let v = m.bbctl_json(&[
        "sendchange",
        "--repository",
        "https://example.org/app.git",
        "--branch",
        branch,
        "--revision",
        rev,
        "--file",
        file,
        "--author",
        "ann",
    ]);
    v["change_id"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

fn builds(m: &Master) -> Vec<Value> {
    m.bbctl_json(&["builds"]).as_array().unwrap().clone()
}

/// A change that touches only docs waits; the next one touching `src/`
/// starts one build with both changes at the newer revision, and its step
/// sees `BB_REPOSITORY`, `BB_BRANCH`, `BB_REVISION`, `BB_CHANGES`. A change
/// on a branch the scheduler does not take starts nothing. `changes` lists
/// the build each started; `rebuild` runs the same source again; `builds`
/// and `build` show branch and revision.
#[test]
fn sendchange_starts_a_build_whose_steps_see_the_source_stamp() {
    let m = Master::start(&config("0s"));
    let docs = sendchange(&m, "main", "aaaa1111", "docs/readme.md");
    let other = sendchange(&m, "dev", "bbbb2222", "src/lib.rs");
    assert_eq!((docs, other), (1, 2));
    let out = m.bbctl(&[
        "sendchange",
        "--repository",
        "r",
        "--branch",
        "",
        "--revision",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("the branch is empty"),
        "{}",
        describe(&out)
    );
    let important = sendchange(&m, "main", "cccc3333", "src/lib.rs");
    assert_eq!(important, 3, "a refused change takes no id");
    let b = wait_finished(&m, 1);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(
        b["source"],
        json!({
            "repository": "https://example.org/app.git",
            "branch": "main",
            "revision": "cccc3333",
            "changes": [1, 3],
        })
    );
    assert_eq!(
        m.bbctl_ok(&["log", "1"]),
        "repo=https://example.org/app.git branch=main rev=cccc3333 changes=1,3\n"
    );
    assert_eq!(builds(&m).len(), 1, "the change on dev started nothing");

    let changes = m.bbctl_json(&["changes"]);
    let started: Vec<(u64, Value)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["requests"].clone()))
        .collect();
    let one = json!([{ "request_id": 1, "builder": "test", "builds": [1] }]);
    assert_eq!(
        started,
        vec![(3, one.clone()), (2, json!([])), (1, one)],
        "{changes}"
    );
    let table = m.bbctl_ok(&["changes"]);
    assert!(table.contains("test #1"), "{table}");

    let out = m.bbctl_code(&["rebuild", "1", "--wait"], 0);
    assert!(text(&out.stderr).contains("queued"), "{}", describe(&out));
    let b = wait_finished(&m, 2);
    assert_eq!(b["source"]["revision"], "cccc3333");
    assert_eq!(
        m.bbctl_ok(&["log", "2"]),
        "repo=https://example.org/app.git branch=main rev=cccc3333 changes=1,3\n"
    );
    let table = m.bbctl_ok(&["builds"]);
    assert!(table.contains("main@cccc3333"), "{table}");
    let detail = m.bbctl_ok(&["build", "2"]);
    assert!(detail.contains("revision:   cccc3333"), "{detail}");
    assert!(detail.contains("changes:    1,3"), "{detail}");
}

/// A change arrives, its `tree_stable` timer is pending, and the master is
/// killed with `kill -9`: the restarted master builds it exactly once,
/// when the time the timer had left runs out. A timer that runs out while
/// the master is down fires once, at the start. Neither fires again after
/// one more restart.
#[test]
fn a_killed_master_builds_a_pending_change_exactly_once() {
    let mut m = Master::start(&config("2s"));
    let first = sendchange(&m, "main", "dddd4444", "src/a.rs");
    m.kill9();
    m.spawn();
    let b = wait_finished(&m, 1);
    assert_eq!(b["source"]["changes"], json!([first]), "{b}");
    // Another one, then a kill, and the master stays down past its timer.
    let second = sendchange(&m, "release/1", "eeee5555", "src/b.rs");
    m.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    m.spawn();
    let b = wait_finished(&m, 2);
    assert_eq!(b["source"]["changes"], json!([second]), "{b}");
    assert_eq!(b["source"]["branch"], "release/1");
    // Nothing fires twice: one request per change after one more restart
    // (a firing due at a start is in the start's first batch, committed
    // before the master answers anything).
    m.kill9();
    m.spawn();
    let changes = m.bbctl_json(&["changes"]);
    for c in changes.as_array().unwrap() {
        assert_eq!(c["requests"].as_array().map(Vec::len), Some(1), "{c}");
    }
    assert_eq!(m.bbctl_json(&["queue"]), json!([]));
    assert_eq!(builds(&m).len(), 2);
}

/// The scheduler rows of `docs/reload.md`, with one change pending in
/// each scheduler (timers of 3 s): an unchanged one and a changed one (its
/// `tree_stable` raised to an hour) keep the change and the time their
/// timer had left; a renamed one carries it; a removed one lists it as
/// dropped; an added one does not take it. After the 3 s, exactly the
/// three that kept it build it.
#[test]
fn a_reload_keeps_moves_and_drops_pending_changes_by_the_scheduler_rows() {
    let schedulers = |names: &[(&str, &str, &str)]| -> String {
        let mut text = CONFIG.split("[[scheduler]]").next().unwrap().to_string();
        for (name, previous, tree_stable) in names {
            text += &format!(
                "[[scheduler]]\nname = \"{name}\"\nkind = \"branch\"\nbuilders = [\"test\"]\n\
                 previous_names = [{previous}]\ntree_stable = \"{tree_stable}\"\n\n"
            );
        }
        text
    };
    let m = Master::start(&schedulers(&[
        ("same", "", "3s"),
        ("changed", "", "3s"),
        ("old", "", "3s"),
        ("gone", "", "3s"),
    ]));
    let change = sendchange(&m, "main", "ffff6666", "src/a.rs");
    m.write_config(&schedulers(&[
        ("same", "", "3s"),
        ("changed", "", "1h"),
        ("new", "\"old\"", "3s"),
        ("added", "", "0s"),
    ]));
    let report = m.bbctl_json(&["reload"]);
    assert_eq!(report["schedulers_changed"], json!(["changed"]), "{report}");
    assert_eq!(report["schedulers_renamed"], json!([["old", "new"]]));
    assert_eq!(report["schedulers_removed"], json!(["gone"]));
    assert_eq!(report["schedulers_added"], json!(["added"]));
    assert_eq!(
        report["changes_dropped"],
        json!([{ "scheduler": "gone", "changes": [change] }])
    );
    let text = m.bbctl_ok(&["reload", "--dry-run"]);
    assert!(!text.contains("changes dropped"), "{text}");
    for id in 1..=3 {
        wait_finished(&m, id);
    }
    let mut reasons: Vec<String> = (1..=3)
        .map(|id| {
            let b = m.bbctl_json(&["build", &id.to_string()]);
            assert_eq!(b["source"]["changes"], json!([change]), "{b}");
            b["request_reason"].as_str().unwrap().to_string()
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "scheduler changed: 1 change on main",
            "scheduler new: 1 change on main",
            "scheduler same: 1 change on main",
        ]
    );
    let changes = m.bbctl_json(&["changes"]);
    assert_eq!(changes[0]["requests"].as_array().map(Vec::len), Some(3));
}

/// `bbctl events --json` carries a `change_added` event for every stored
/// change (id, repository, branch, revision, author, who sent it), before
/// the `build_queued` of the build it starts; a refused change has none.
#[test]
fn a_stored_change_is_an_event_before_the_build_it_starts() {
    let m = Master::start(&config("0s"));
    let mut events = crate::harness::LineReader::spawn(m.bbctl_command(&["--json", "events"]));
    crate::harness::await_subscription(&m, &mut events, "\"master_draining\"");
    let refused = m.bbctl(&[
        "sendchange",
        "--repository",
        "r",
        "--branch",
        "",
        "--revision",
        "x",
    ]);
    assert_eq!(refused.status.code(), Some(5), "{}", describe(&refused));
    let id = sendchange(&m, "main", "dddd4444", "src/main.rs");
    let lines = events.read_until(
        "the build the change starts",
        Duration::from_secs(10),
        |l| l.contains("\"build_queued\""),
    );
    let added: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "change_added")
        .collect();
    assert_eq!(
        added.len(),
        1,
        "one event, none for the refused change: {lines:#?}"
    );
    let e = &added[0];
    crate::json_schema::assert_shape(e, "events");
    crate::json_schema::assert_shape(e, "events:change_added");
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        (
            &e["change"],
            &e["repository"],
            &e["branch"],
            &e["revision"],
            &e["author"],
            &e["sent_by"]
        ),
        (
            &json!(id),
            &json!("https://example.org/app.git"),
            &json!("main"),
            &json!("dddd4444"),
            &json!("ann"),
            &json!(format!("uid:{uid}"))
        ),
        "{e}"
    );
    let added_at = lines.iter().position(|l| l.contains("\"change_added\""));
    let queued_at = lines.iter().position(|l| l.contains("\"build_queued\""));
    assert!(added_at < queued_at, "change_added first: {lines:#?}");
    let human = m.bbctl_ok(&["changes", "-n", "1"]);
    assert!(human.contains("dddd4444"), "{human}");
}
