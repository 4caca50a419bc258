//! Builds from git (issue 15): the `git` step checking out real
//! repositories made in a temp dir, the git poller seeing commits, force
//! pushes, deleted branches and tags, and force parameters.

use std::path::Path;
use std::process::Command;

use crate::harness::{Master, code, text};
use crate::storage::wait_finished;

/// `git ARGS` in `dir` with a private config; its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Ann", "-c", "user.email=ann@example.org"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    text(&out.stdout).trim().to_owned()
}

/// A bare repository `origin.git` under `root` and a clone `src` that
/// pushes to it.
pub struct Repo {
    /// The bare repository's path.
    pub bare: String,
    /// The working clone.
    pub src: std::path::PathBuf,
}

impl Repo {
    pub fn new(root: &Path) -> Repo {
        let bare = root.join("origin.git");
        let src = root.join("src");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        git(&src, &["init", "-q"]);
        git(&src, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo {
            bare: bare.display().to_string(),
            src,
        }
    }

    /// Commit `file` holding `msg` on the current branch; the revision.
    pub fn commit(&self, file: &str, msg: &str) -> String {
        std::fs::write(self.src.join(file), msg).unwrap();
        git(&self.src, &["add", file]);
        git(&self.src, &["commit", "-q", "-m", msg]);
        git(&self.src, &["rev-parse", "HEAD"])
    }

    /// `git push -f origin REFSPEC`.
    pub fn push(&self, refspec: &str) {
        git(&self.src, &["push", "-q", "-f", "origin", refspec]);
    }
}

fn local_worker_config(extra: &str) -> String {
    format!(
        r#"
[[worker]]
name = "local-1"
local = true

{extra}
"#
    )
}

/// A force without a source stamp checks out the default branch's head;
/// the checkout's commands and result are in the step's log; a hook in
/// the work dir never runs.
#[test]
fn the_git_step_checks_out_the_branch_head() {
    let m = Master::start(&local_worker_config(
        r#"
[[builder]]
name = "app"
workers = ["local-1"]

  [[builder.step]]
  name = "checkout"
  git = { repository = "@DIR@/origin.git", mode = "full" }

  [[builder.step]]
  name = "show"
  shell = "cat a.txt; git rev-parse HEAD"
"#,
    ));
    let repo = Repo::new(m.path());
    repo.commit("a.txt", "one");
    let head = repo.commit("a.txt", "two");
    repo.push("HEAD:refs/heads/main");
    let id = m.force_build("app");
    let b = wait_finished(&m, id);
    let log = m.bbctl_ok(&["log", &b["id"].to_string(), "checkout"]);
    assert_eq!(b["result"], "success", "{b}\n{log}");
    assert!(log.contains("+ git fetch"), "{log}");
    assert!(
        log.contains(&format!("git step: checked out {head}")),
        "{log}"
    );
    let show = m.bbctl_ok(&["log", &b["id"].to_string(), "show"]);
    assert_eq!(show, format!("two{head}\n"));
}

/// A builder's `force_properties`: defaults reach the steps, and each
/// wrong property is refused (exit 5, nothing queued) with a message
/// naming the property and why.
#[test]
fn force_parameters_are_checked() {
    let m = Master::start(&local_worker_config(
        r#"
[[builder]]
name = "b"
workers = ["local-1"]
force_properties = [
  { name = "arch", type = "choice", choices = ["x86", "arm"], required = true },
  { name = "jobs", type = "int", default = 4 },
]

  [[builder.step]]
  name = "show"
  shell = "echo $BB_PROP_arch $BB_PROP_jobs"
"#,
    ));
    for (args, want) in [
        (
            vec!["-p", "arch=mips"],
            "force property `arch` of builder `b`: \"mips\" is not one of \"x86\", \"arm\"",
        ),
        (
            vec!["-p", "jobs=2"],
            "builder `b` needs force property `arch` (choice of \"x86\", \"arm\")",
        ),
        (
            vec!["-p", "arch=arm", "-p", "job=2"],
            "builder `b` takes no force property `job`",
        ),
        (
            vec!["-p", "arch=arm", "-p", "jobs=two"],
            "\"two\" is not a whole number",
        ),
    ] {
        let mut all = vec!["force-build", "b"];
        all.extend(args.iter().copied());
        let out = m.bbctl(&all);
        assert_eq!(code(&out), 5, "{all:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{all:?}: {err}");
    }
    let status = m.bbctl_json(&["status"]);
    assert_eq!(status["builders"][0]["queued"], 0, "{status}");
    let out = m.bbctl_code(&["force-build", "b", "-p", "arch=arm", "--follow"], 0);
    assert_eq!(text(&out.stdout), "arm 4\n");
}

/// The stored changes as (branch, revision, first line of comments), by id.
fn stored_changes(m: &Master) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        m.state_dir().join("master.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = conn
        .prepare("SELECT branch, revision, comments FROM changes ORDER BY id")
        .unwrap();
    q.query_map([], |r| {
        let comments: Option<String> = r.get(2)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            comments
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The stored cursors of poller `app`: branch to revision.
fn cursors(m: &Master) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        m.state_dir().join("master.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = conn
        .prepare("SELECT branch, revision FROM poller_cursors WHERE poller = 'app' ORDER BY branch")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The poller `app` of `status --json`.
fn poller(m: &Master) -> serde_json::Value {
    poller_named(m, "app").unwrap_or_else(|| panic!("no poller `app` in status"))
}

/// Poller `name` of `status --json`, if it runs.
fn poller_named(m: &Master, name: &str) -> Option<serde_json::Value> {
    let status = m.bbctl_json(&["status"]);
    status["pollers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .cloned()
}

/// Wait (bounded) until the stored changes number `n`; they.
fn wait_changes(m: &Master, n: usize) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    crate::harness::wait_until(&format!("{n} changes stored"), WAIT, || {
        found = stored_changes(m);
        found.len() >= n
    });
    assert_eq!(found.len(), n, "{found:?}\n{}", m.stderr());
    found
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

const POLLER: &str = r#"
[[poller]]
name = "app"
repository = "@DIR@/origin.git"
branches = ["main", "release/*"]
tags = true
interval = "1s"
"#;

/// The git poller end to end: a baseline first (no old commit becomes a
/// change), then new commits, a force push (only the replacement commit),
/// a new branch, a tag, a deleted branch (its cursor goes), commits pushed
/// while the master is down (each stored once after the restart), and a
/// reload that leaves the poller running (its counters are not reset).
#[test]
fn the_poller_sees_commits_force_pushes_branches_and_tags() {
    let dir = crate::harness::temp_dir();
    let repo = Repo::new(dir.path());
    repo.commit("a.txt", "old one");
    let base = repo.commit("a.txt", "old two");
    repo.push("HEAD:refs/heads/main");
    let config = local_worker_config(&format!(
        "{}\n[[builder]]\nname = \"b\"\nworkers = [\"local-1\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n",
        POLLER.replace("@DIR@/origin.git", &repo.bare)
    ));
    let mut m = Master::start(&config);

    crate::harness::wait_until("the baseline", WAIT, || {
        !poller(&m)["last_poll_ms"].is_null() && poller(&m)["refs"] == 1
    });
    assert!(stored_changes(&m).is_empty(), "a baseline stores no change");
    assert_eq!(cursors(&m), [("main".to_string(), base.clone())]);
    assert!(m.state_dir().join("pollers/app.git/HEAD").exists());

    let one = repo.commit("b.txt", "new one");
    let two = repo.commit("c.txt", "new two");
    repo.push("HEAD:refs/heads/main");
    let changes = wait_changes(&m, 2);
    assert_eq!(
        changes,
        [
            ("main".into(), one, "new one".into()),
            ("main".into(), two.clone(), "new two".into())
        ]
    );

    // A force push onto `base` with one new commit: that commit only.
    git(&repo.src, &["reset", "-q", "--hard", &base]);
    let rewritten = repo.commit("d.txt", "rewritten");
    repo.push("HEAD:refs/heads/main");
    assert_eq!(
        wait_changes(&m, 3)[2],
        ("main".into(), rewritten.clone(), "rewritten".into())
    );

    // A release branch with its own commit, and a tag on it.
    git(&repo.src, &["checkout", "-q", "-b", "rel"]);
    let fix = repo.commit("e.txt", "release fix");
    repo.push("HEAD:refs/heads/release/1");
    git(&repo.src, &["tag", "v1"]);
    repo.push("refs/tags/v1");
    let changes = wait_changes(&m, 5);
    let mut last_two = changes[3..].to_vec();
    last_two.sort();
    assert_eq!(
        last_two,
        [
            ("refs/tags/v1".into(), fix.clone(), "release fix".into()),
            ("release/1".into(), fix.clone(), "release fix".into()),
        ]
    );

    // The branch deleted: its cursor goes, no change.
    git(
        &repo.src,
        &["push", "-q", "origin", ":refs/heads/release/1"],
    );
    crate::harness::wait_until("the deleted branch's cursor to go", WAIT, || {
        !cursors(&m).iter().any(|(b, _)| b == "release/1")
    });
    assert_eq!(stored_changes(&m).len(), 5);

    // A reload that does not touch the poller: the same task goes on.
    let before = poller(&m)["changes"].clone();
    assert_eq!(before, 5);
    m.write_config(&format!("{config}\n# a comment\n"));
    m.bbctl_ok(&["reload"]);
    assert_eq!(
        poller(&m)["changes"],
        before,
        "the poller was not restarted"
    );

    // Commits pushed while the master is down: stored once after a restart.
    m.kill9();
    git(&repo.src, &["checkout", "-q", "main"]);
    let down = repo.commit("f.txt", "while down");
    repo.push("HEAD:refs/heads/main");
    m.spawn();
    let changes = wait_changes(&m, 6);
    assert_eq!(
        changes[5],
        ("main".into(), down.clone(), "while down".into())
    );
    crate::harness::wait_until("a few more polls", WAIT, || {
        poller(&m)["last_poll_ms"].as_u64().is_some()
    });
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(stored_changes(&m).len(), 6, "nothing stored twice");
    assert!(
        cursors(&m).contains(&("main".to_string(), down)),
        "{:?}",
        cursors(&m)
    );
}

/// The whole chain: a push seen by the poller becomes a change, a branch
/// scheduler starts a build with it, and the build's `git` step checks out
/// exactly that revision: not the branch's head when the branch moved on
/// while the build waited, and the replacement after a force push.
#[test]
fn a_push_builds_the_pushed_revision() {
    let dir = crate::harness::temp_dir();
    let repo = Repo::new(dir.path());
    repo.commit("a.txt", "one");
    repo.push("HEAD:refs/heads/main");
    let go = dir.path().join("go");
    let m = Master::start(&local_worker_config(&format!(
        r#"
[[poller]]
name = "app"
repository = "{bare}"
branches = ["main"]
interval = "1s"

[[scheduler]]
name = "on-main"
kind = "branch"
builders = ["app"]
branches = ["main"]
tree_stable = "0s"

[[builder]]
name = "app"
workers = ["local-1"]

  [[builder.step]]
  name = "wait"
  shell = "while [ ! -f {go} ]; do sleep 0.05; done"
  timeout = "60s"

  [[builder.step]]
  name = "checkout"
  git = {{ repository = "{bare}" }}

  [[builder.step]]
  name = "show"
  shell = "echo $BB_BRANCH $BB_REVISION; git rev-parse HEAD; cat a.txt"
"#,
        bare = repo.bare,
        go = go.display()
    )));
    crate::harness::wait_until("the baseline", WAIT, || {
        !poller(&m)["last_poll_ms"].is_null() && poller(&m)["refs"] == 1
    });
    let keep = git(&repo.src, &["rev-parse", "HEAD"]);
    let two = repo.commit("a.txt", "two");
    repo.push("HEAD:refs/heads/main");
    crate::harness::wait_until("build 1 to wait", WAIT, || {
        let status = m.bbctl_json(&["status"]);
        status["running"][0]["step_name"] == "wait"
    });
    // The branch moves on while build 1 waits: it still builds `two`.
    let three = repo.commit("a.txt", "three");
    repo.push("HEAD:refs/heads/main");
    wait_changes(&m, 2);
    std::fs::write(&go, "").unwrap();
    for (id, rev, text) in [(1, &two, "two"), (2, &three, "three")] {
        let b = wait_finished(&m, id);
        let show = m.bbctl_ok(&["log", &id.to_string(), "show"]);
        assert_eq!(b["result"], "success", "{b}\n{show}");
        assert_eq!(show, format!("main {rev}\n{rev}\n{text}"), "build {id}");
    }

    // A force push: the replacement is built, checked out by its id.
    git(&repo.src, &["reset", "-q", "--hard", &keep]);
    let four = repo.commit("a.txt", "four");
    repo.push("HEAD:refs/heads/main");
    let b = wait_finished(&m, 3);
    let show = m.bbctl_ok(&["log", "3", "show"]);
    assert_eq!(b["result"], "success", "{b}\n{show}");
    assert_eq!(show, format!("main {four}\n{four}\nfour"));
}

/// A reload changes what a running poller watches without restarting it
/// (its counters go on), starts an added poller and stops a removed one;
/// a force is checked against the reloaded `force_properties`.
#[test]
fn pollers_and_force_properties_follow_a_reload() {
    let dir = crate::harness::temp_dir();
    let repo = Repo::new(dir.path());
    repo.commit("a.txt", "one");
    repo.push("HEAD:refs/heads/main");
    let config = |branches: &str, other: bool, choices: &str| {
        let mut c = local_worker_config(&format!(
            r#"
[[poller]]
name = "app"
repository = "{bare}"
branches = {branches}
interval = "1s"

[[builder]]
name = "b"
workers = ["local-1"]
force_properties = [{{ name = "mode", type = "choice", choices = {choices} }}]

  [[builder.step]]
  name = "s"
  shell = "echo $BB_PROP_mode"
"#,
            bare = repo.bare
        ));
        if other {
            c.push_str(&format!(
                "\n[[poller]]\nname = \"other\"\nrepository = \"{}\"\ninterval = \"1s\"\n",
                repo.bare
            ));
        }
        c
    };
    let m = Master::start(&config(r#"["main"]"#, false, r#"["a", "b"]"#));
    crate::harness::wait_until("the baseline", WAIT, || {
        !poller(&m)["last_poll_ms"].is_null() && poller(&m)["refs"] == 1
    });
    repo.commit("b.txt", "on main");
    repo.push("HEAD:refs/heads/main");
    wait_changes(&m, 1);
    git(&repo.src, &["checkout", "-q", "-b", "dev"]);
    let dev = repo.commit("c.txt", "on dev");
    repo.push("HEAD:refs/heads/dev");
    let out = m.bbctl(&["force-build", "b", "-p", "mode=c"]);
    assert_eq!(code(&out), 5, "{out:?}");

    m.write_config(&config(r#"["main", "dev"]"#, true, r#"["a", "b", "c"]"#));
    m.bbctl_ok(&["reload"]);
    let changes = wait_changes(&m, 2);
    assert_eq!(changes[1], ("dev".into(), dev, "on dev".into()));
    assert_eq!(poller(&m)["changes"], 2, "the same task goes on counting");
    crate::harness::wait_until("the added poller's baseline", WAIT, || {
        poller_named(&m, "other").is_some_and(|p| p["refs"] == 2)
    });
    assert_eq!(poller_named(&m, "other").unwrap()["changes"], 0);
    let out = m.bbctl_code(&["force-build", "b", "-p", "mode=c", "--follow"], 0);
    assert_eq!(text(&out.stdout), "c\n");

    m.write_config(&config(r#"["main", "dev"]"#, false, r#"["a", "b", "c"]"#));
    m.bbctl_ok(&["reload"]);
    assert!(
        poller_named(&m, "other").is_none(),
        "a removed poller stops"
    );
    assert_eq!(poller(&m)["changes"], 2);
    assert_eq!(stored_changes(&m).len(), 2);
}
