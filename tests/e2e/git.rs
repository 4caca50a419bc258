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
