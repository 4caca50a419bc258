//! A poller against real repositories in a temp dir, storing into memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sink::{ChangeBatch, ChangeId, ChangeSink};
use super::task::{MAX_COMMITS, PollError, Poller};
use crate::config::PollerDef;
use crate::protocol::ErrorReply;

/// A sink that keeps batches and cursors in memory, as the store would.
#[derive(Clone, Default)]
struct Memory {
    batches: Arc<Mutex<Vec<ChangeBatch>>>,
    cursors: Arc<Mutex<BTreeMap<String, String>>>,
    /// Fail the next `add_changes` after storing it (a lost answer).
    lose_answer: Arc<Mutex<bool>>,
}

impl ChangeSink for Memory {
    async fn poller_cursors(&self, _: &str) -> Result<BTreeMap<String, String>, ErrorReply> {
        Ok(self.cursors.lock().unwrap().clone())
    }

    async fn add_changes(&self, batch: ChangeBatch) -> Result<Vec<ChangeId>, ErrorReply> {
        let mut batches = self.batches.lock().unwrap();
        if let Some(c) = &batch.cursor {
            let mut cursors = self.cursors.lock().unwrap();
            match &c.revision {
                Some(r) => cursors.insert(c.branch.clone(), r.clone()),
                None => cursors.remove(&c.branch),
            };
        }
        let first = batches.iter().map(|b| b.changes.len()).sum::<usize>() as u64;
        let ids = (first..first + batch.changes.len() as u64).collect();
        batches.push(batch);
        if std::mem::take(&mut *self.lose_answer.lock().unwrap()) {
            return Err(ErrorReply::failed("the master went away"));
        }
        Ok(ids)
    }
}

impl Memory {
    /// Every change stored so far as (branch, first line of comments).
    fn changes(&self) -> Vec<(String, String)> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.changes.iter())
            .map(|c| {
                let msg = c.comments.clone().unwrap_or_default();
                (
                    c.branch.clone(),
                    msg.lines().next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct World {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    def: PollerDef,
    root: PathBuf,
}

fn world(branches: &[&str], tags: bool) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("origin.git");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    git(&bare, &["init", "-q", "--bare"]);
    git(&src, &["init", "-q"]);
    git(&src, &["remote", "add", "origin", bare.to_str().unwrap()]);
    World {
        src,
        root: tmp.path().join("state/pollers"),
        def: PollerDef {
            name: "app".into(),
            repository: bare.display().to_string(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            tags,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        },
        _tmp: tmp,
    }
}

impl World {
    /// Commit `file` with message `msg` on the current branch.
    fn commit(&self, file: &str, msg: &str) -> String {
        let path = self.src.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, msg).unwrap();
        git(&self.src, &["add", file]);
        git(&self.src, &["commit", "-q", "-m", msg]);
        git(&self.src, &["rev-parse", "HEAD"])
    }

    fn push(&self, refspec: &str) {
        git(&self.src, &["push", "-q", "-f", "origin", refspec]);
    }
}

#[tokio::test]
async fn baseline_then_commits_force_push_deletion_and_tags() {
    let w = world(&["main", "release/*"], true);
    w.commit("a.txt", "old one");
    w.commit("a.txt", "old two");
    w.push("HEAD:refs/heads/main");
    w.push("HEAD:refs/heads/unwatched");
    let sink = Memory::default();
    let mut poller = Poller::new(sink.clone(), w.root.clone());

    // The very first poll: a baseline, no change.
    let polled = poller.poll(&w.def).await.unwrap();
    assert_eq!(polled.changes, 0);
    assert_eq!(polled.moved, 1);
    assert!(sink.changes().is_empty());
    assert_eq!(
        sink.cursors.lock().unwrap().len(),
        1,
        "only `main` is watched"
    );

    // Nothing new: no fetch, nothing stored.
    let polled = poller.poll(&w.def).await.unwrap();
    assert_eq!(polled, Default::default());

    // Two commits pushed: two changes, oldest first, with files and author.
    let keep = git(&w.src, &["rev-parse", "HEAD"]);
    w.commit("b.txt", "new one");
    let head = w.commit("src/c.rs", "new two");
    w.push("HEAD:refs/heads/main");
    poller.poll(&w.def).await.unwrap();
    assert_eq!(
        sink.changes(),
        [
            ("main".into(), "new one".into()),
            ("main".into(), "new two".into())
        ]
    );
    {
        let batches = sink.batches.lock().unwrap();
        let last = batches.last().unwrap();
        assert_eq!(last.changes[1].revision, head);
        assert_eq!(last.changes[1].files, ["src/c.rs"]);
        assert_eq!(
            last.changes[1].author.as_deref(),
            Some("Ann <ann@example.org>")
        );
        assert_eq!(
            last.cursor.as_ref().unwrap().revision.as_deref(),
            Some(head.as_str())
        );
    }

    // A force push back to the old commit plus one new one: only the new one.
    git(&w.src, &["reset", "-q", "--hard", &keep]);
    w.commit("d.txt", "rewritten");
    w.push("HEAD:refs/heads/main");
    poller.poll(&w.def).await.unwrap();
    assert_eq!(
        sink.changes().last().unwrap(),
        &("main".into(), "rewritten".into())
    );
    assert_eq!(sink.changes().len(), 3);

    // A new release branch: its own commit only (main's history is known).
    git(&w.src, &["checkout", "-q", "-b", "rel"]);
    w.commit("e.txt", "release fix");
    w.push("HEAD:refs/heads/release/1.0");
    // A tag: one change on `refs/tags/v1`.
    git(&w.src, &["tag", "-a", "-m", "version 1", "v1"]);
    w.push("refs/tags/v1");
    poller.poll(&w.def).await.unwrap();
    let changes = sink.changes();
    assert_eq!(
        changes[3..],
        [
            ("refs/tags/v1".into(), "release fix".into()),
            ("release/1.0".into(), "release fix".into())
        ]
    );

    // The branch deleted: its cursor goes, no change.
    git(&w.src, &["push", "-q", "origin", ":refs/heads/release/1.0"]);
    poller.poll(&w.def).await.unwrap();
    assert_eq!(sink.changes().len(), 5);
    assert!(!sink.cursors.lock().unwrap().contains_key("release/1.0"));
    let last = sink.batches.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.cursor.unwrap().revision, None);
}

#[tokio::test]
async fn a_restart_resumes_from_the_stored_cursors_and_a_lost_answer_is_not_doubled() {
    let w = world(&["main"], false);
    w.commit("a.txt", "one");
    w.push("HEAD:refs/heads/main");
    let sink = Memory::default();
    Poller::new(sink.clone(), w.root.clone())
        .poll(&w.def)
        .await
        .unwrap();
    w.commit("a.txt", "two");
    w.push("HEAD:refs/heads/main");

    // A new poller (a master restart) on the same store: one change.
    let mut poller = Poller::new(sink.clone(), w.root.clone());
    *sink.lose_answer.lock().unwrap() = true;
    let err = poller.poll(&w.def).await.unwrap_err();
    assert!(matches!(err, PollError::Sink(_)), "{err}");
    assert_eq!(sink.changes(), [("main".into(), "two".into())]);
    // The batch was stored although its answer was lost: the next poll
    // reads the cursors again and stores nothing twice.
    let polled = poller.poll(&w.def).await.unwrap();
    assert_eq!(polled.changes, 0);
    assert_eq!(sink.changes().len(), 1);
}

#[tokio::test]
async fn many_commits_are_bounded() {
    let w = world(&["main"], false);
    w.commit("a.txt", "base");
    w.push("HEAD:refs/heads/main");
    let sink = Memory::default();
    let mut poller = Poller::new(sink.clone(), w.root.clone());
    poller.poll(&w.def).await.unwrap();
    for i in 0..MAX_COMMITS + 3 {
        git(
            &w.src,
            &["commit", "-q", "--allow-empty", "-m", &format!("c{i}")],
        );
    }
    w.push("HEAD:refs/heads/main");
    let polled = poller.poll(&w.def).await.unwrap();
    assert_eq!(polled.changes, MAX_COMMITS);
    assert_eq!(polled.skipped, [("main".to_string(), 3)]);
    let changes = sink.changes();
    assert_eq!(changes.first().unwrap().1, "c3", "the newest are kept");
    assert_eq!(changes.last().unwrap().1, format!("c{}", MAX_COMMITS + 2));
}

#[tokio::test]
async fn a_hanging_git_is_killed_at_its_timeout() {
    let mut w = world(&["main"], false);
    w.def.repository = "ssh://example.invalid/x.git".into();
    w.def.timeout = Duration::from_millis(500);
    let sink = Memory::default();
    let mut poller = Poller::new(sink.clone(), w.root.clone());
    let marker = format!("bb-poller-test-{}", std::process::id());
    poller.set_ssh_command(&format!("sleep 30 #{marker}"));
    let started = std::time::Instant::now();
    let err = poller.poll(&w.def).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.to_string().contains("took longer than 500ms; killed"),
        "{err}"
    );
    // ssh (here: sleep) went with git.
    let left = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    let mut alive = !left.stdout.is_empty();
    for _ in 0..50 {
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive = !Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .unwrap()
            .stdout
            .is_empty();
    }
    assert!(!alive, "the command's process group was killed");
}
