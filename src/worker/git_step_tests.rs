//! The `git` step run by the real runner against real repositories made
//! in a temp dir.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio::sync::watch;

use crate::protocol::{GitMode, StepAssignment, StepEnd, WireAction};
use crate::worker::guard::Guard;
use crate::worker::runner::{StepContext, run_step};
use crate::worker::spool::{DEFAULT_SPOOL_LIMIT, Progress, prepare_spool_dir, spool_path};
use crate::worker::stop::stop_pair;

/// `git` in `dir` with a private config, panicking on failure; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.org"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare repository `origin.git` and a clone `src` to commit from.
fn repos(root: &Path) -> (String, std::path::PathBuf) {
    let bare = root.join("origin.git");
    let src = root.join("src");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    git(&bare, &["init", "-q", "--bare"]);
    git(&src, &["init", "-q"]);
    git(
        &src,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    (bare.display().to_string(), src)
}

/// Commit a file in `src` and push `branch`; the new revision.
fn commit(src: &Path, file: &str, text: &str, branch: &str) -> String {
    std::fs::write(src.join(file), text).unwrap();
    git(src, &["add", file]);
    git(src, &["commit", "-q", "-m", &format!("{file}: {text}")]);
    git(
        src,
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ],
    );
    git(src, &["rev-parse", "HEAD"])
}

fn step(repo: &str, mode: GitMode, env: &[(&str, &str)]) -> StepAssignment {
    StepAssignment {
        build: 1,
        step: 0,
        builder: "b".into(),
        name: "checkout".into(),
        action: WireAction::Git {
            repository: repo.into(),
            mode,
            submodules: false,
        },
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        pass_env: Vec::new(),
        timeout_ms: Some(60_000),
        max_output: None,
    }
}

/// Run the step in `workers`; its end and output.
async fn run(a: StepAssignment, workers: &Path) -> (StepEnd, String) {
    prepare_spool_dir(workers).unwrap();
    let (tx, _rx) = watch::channel(Progress::default());
    let (_stop, signal) = stop_pair();
    let ctx = StepContext {
        dir: workers.to_path_buf(),
        spool_limit: DEFAULT_SPOOL_LIMIT,
        guard: Guard::disabled(),
    };
    let end = run_step(&a, &ctx, Arc::new(tx), signal, Default::default()).await;
    let out = std::fs::read_to_string(spool_path(workers, a.build, a.step)).unwrap_or_default();
    (end, out)
}

#[tokio::test]
async fn checks_out_the_revision_then_the_branch_head() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = repos(tmp.path());
    let first = commit(&src, "a.txt", "one", "main");
    let second = commit(&src, "a.txt", "two", "main");
    let workers = tmp.path().join("workers");
    let work = workers.join("b");

    let (end, out) = run(
        step(
            &repo,
            GitMode::Incremental,
            &[("BB_REVISION", &first), ("BB_BRANCH", "main")],
        ),
        &workers,
    )
    .await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), first);
    assert_eq!(std::fs::read_to_string(work.join("a.txt")).unwrap(), "one");
    assert!(
        out.contains("+ git fetch"),
        "the commands are logged: {out}"
    );

    // A force without a revision: the branch's head; then the default branch.
    let (end, out) = run(
        step(&repo, GitMode::Incremental, &[("BB_BRANCH", "main")]),
        &workers,
    )
    .await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), second);
    let third = commit(&src, "b.txt", "x", "main");
    let (end, out) = run(step(&repo, GitMode::Incremental, &[]), &workers).await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), third);
}

#[tokio::test]
async fn a_revision_gone_is_a_clear_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = repos(tmp.path());
    commit(&src, "a.txt", "one", "main");
    let gone = "0123456789abcdef0123456789abcdef01234567";
    let workers = tmp.path().join("workers");
    let (end, out) = run(
        step(
            &repo,
            GitMode::Incremental,
            &[("BB_REVISION", gone), ("BB_BRANCH", "main")],
        ),
        &workers,
    )
    .await;
    assert_eq!(end, StepEnd::Exited { code: 3 }, "{out}");
    assert!(
        out.contains(&format!("revision {gone} is not in {repo} (branch main)")),
        "{out}"
    );
}

#[tokio::test]
async fn full_mode_cleans_incremental_keeps_and_hooks_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, src) = repos(tmp.path());
    commit(&src, "a.txt", "one", "main");
    let workers = tmp.path().join("workers");
    let work = workers.join("b");
    let (end, out) = run(step(&repo, GitMode::Incremental, &[]), &workers).await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");

    // Build output and a hook an earlier step planted.
    std::fs::write(work.join("build.out"), "x").unwrap();
    std::fs::write(work.join("a.txt"), "changed").unwrap();
    let hook = work.join(".git/hooks/post-checkout");
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$PWD/hook-ran\"\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (end, out) = run(step(&repo, GitMode::Incremental, &[]), &workers).await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");
    assert!(
        work.join("build.out").exists(),
        "incremental keeps untracked files"
    );
    assert_eq!(std::fs::read_to_string(work.join("a.txt")).unwrap(), "one");
    assert!(!work.join("hook-ran").exists(), "no hook ran");
    let (end, out) = run(step(&repo, GitMode::Full, &[]), &workers).await;
    assert_eq!(end, StepEnd::Exited { code: 0 }, "{out}");
    assert!(!work.join("build.out").exists(), "full removes them: {out}");
}

#[tokio::test]
async fn an_unreachable_repository_is_not_a_revision_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere.git").display().to_string();
    let workers = tmp.path().join("workers");
    let (end, out) = run(
        step(
            &missing,
            GitMode::Incremental,
            &[("BB_REVISION", "0123456789abcdef0123456789abcdef01234567")],
        ),
        &workers,
    )
    .await;
    assert_eq!(end, StepEnd::Exited { code: 1 }, "{out}");
    assert!(out.contains(&format!("cannot reach {missing}")), "{out}");
}
