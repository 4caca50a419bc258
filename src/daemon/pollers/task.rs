//! One poller: its loop (poll, then wait `interval`), and one poll.
//!
//! A poll asks the remote for its refs (`git ls-remote`: one process, no
//! objects moved); only when a watched ref differs from its cursor does it
//! fetch into the mirror and read the new commits there. Each ref whose
//! cursor moves is one batch (its changes and its new cursor, stored in
//! one transaction), sent in turn: a crash between two leaves each ref
//! either done or not, never half done, and the next poll finishes the
//! rest from the stored cursors.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::git::{Git, GitError};
use super::refs::{self, Commit, LOG_FORMAT, Moved, Refs, TAG_PREFIX};
use super::sink::{ChangeBatch, ChangeSink, NewChange, PollerCursor};
use super::status::{PollerStatus, SharedStatus};
use crate::config::PollerDef;
use crate::protocol::ErrorReply;

/// Most changes one ref gives in one poll: a push of more (or a force
/// push onto unrelated history) gives its newest this many, and the
/// poller says so in the master's log and in `bbctl status`.
pub const MAX_COMMITS: usize = 100;

/// Why a poll failed; the next poll starts over from the stored cursors.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// A git command failed or timed out.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The mirror's directory cannot be made.
    #[error("cannot create {}: {source}", path.display())]
    Mirror {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The master refused or could not store a batch.
    #[error("the master did not store the changes: {}", .0.message)]
    Sink(ErrorReply),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// Changes stored.
    pub changes: usize,
    /// Cursors moved (baselines and deletions included).
    pub moved: usize,
    /// Whether the mirror was fetched (something differed).
    pub fetched: bool,
    /// Commits skipped beyond [`MAX_COMMITS`], by ref.
    pub skipped: Vec<(String, usize)>,
}

/// One poller's state between polls.
pub struct Poller<S> {
    sink: S,
    /// `<state_dir>/pollers`.
    root: PathBuf,
    /// The cursors as stored; `None`: read them again before the next
    /// poll (at start, and after any failure, so that a batch whose
    /// answer was lost is neither lost nor sent twice).
    cursors: Option<Refs>,
    /// The remote URL the mirror is set to.
    url: Option<String>,
    /// `GIT_SSH_COMMAND` for git, if not the default.
    ssh_command: Option<String>,
}

impl<S: ChangeSink> Poller<S> {
    /// A poller whose mirrors live under `root`.
    pub fn new(sink: S, root: PathBuf) -> Self {
        Poller {
            sink,
            root,
            cursors: None,
            url: None,
            ssh_command: None,
        }
    }

    /// Run ssh as `command` (tests: a hanging "ssh").
    pub fn set_ssh_command(&mut self, command: &str) {
        self.ssh_command = Some(command.to_owned());
    }

    /// The mirror of poller `name`.
    pub fn mirror(root: &Path, name: &str) -> PathBuf {
        // Names hold only [A-Za-z0-9._-]; the suffix keeps `.` and `..` safe.
        root.join(format!("{name}.git"))
    }

    /// Poll once.
    pub async fn poll(&mut self, def: &PollerDef) -> Result<Polled, PollError> {
        let result = self.poll_inner(def).await;
        if result.is_err() {
            self.cursors = None;
        }
        result
    }

    async fn poll_inner(&mut self, def: &PollerDef) -> Result<Polled, PollError> {
        let mirror = Self::mirror(&self.root, &def.name);
        let mut git = Git::new(mirror.clone(), def.timeout);
        if let Some(ssh) = &self.ssh_command {
            git.ssh_command = ssh.clone();
        }
        self.prepare(def, &git, &mirror).await?;
        let cursors = match self.cursors.take() {
            Some(c) => c,
            None => self
                .sink
                .poller_cursors(&def.name)
                .await
                .map_err(PollError::Sink)?,
        };
        let mut args = vec!["ls-remote", "--heads"];
        if def.tags {
            args.push("--tags");
        }
        args.push("origin");
        let remote = refs::parse_ls_remote(def, &git.run(&args).await?);
        let first = cursors.is_empty();
        let mut polled = Polled::default();
        if refs::diff(&cursors, &remote, first).is_empty() {
            self.cursors = Some(cursors);
            return Ok(polled);
        }
        let mut fetch = vec![
            "fetch",
            "--quiet",
            "--prune",
            "--no-tags",
            "origin",
            "+refs/heads/*:refs/heads/*",
        ];
        if def.tags {
            fetch.push("+refs/tags/*:refs/tags/*");
        }
        git.run(&fetch).await?;
        polled.fetched = true;
        let now = refs::parse_for_each_ref(
            def,
            &git.run(&[
                "for-each-ref",
                "--format=%(objectname) %(*objectname) %(refname)",
                "refs/heads",
                "refs/tags",
            ])
            .await?,
        );
        let mut cursors = cursors;
        for (name, moved) in refs::diff(&cursors, &now, first) {
            let (commits, skipped) = self.commits(&git, &name, &moved).await?;
            if skipped > 0 {
                warn!(
                    poller = %def.name,
                    branch = %name,
                    skipped,
                    "more than {MAX_COMMITS} new commits in one poll: only the newest become changes"
                );
                polled.skipped.push((name.clone(), skipped));
            }
            let revision = match &moved {
                Moved::Baseline { to } | Moved::Created { to } | Moved::Updated { to, .. } => {
                    Some(to.clone())
                }
                Moved::Deleted => None,
            };
            let batch = ChangeBatch {
                changes: commits.into_iter().map(|c| change(def, &name, c)).collect(),
                cursor: Some(PollerCursor {
                    poller: def.name.clone(),
                    branch: name.clone(),
                    revision: revision.clone(),
                }),
            };
            let n = batch.changes.len();
            self.sink
                .add_changes(batch)
                .await
                .map_err(PollError::Sink)?;
            polled.changes += n;
            polled.moved += 1;
            match revision {
                Some(rev) => cursors.insert(name, rev),
                None => cursors.remove(&name),
            };
        }
        self.cursors = Some(cursors);
        Ok(polled)
    }

    /// The bare mirror exists and fetches from `def.repository`.
    async fn prepare(
        &mut self,
        def: &PollerDef,
        git: &Git,
        mirror: &Path,
    ) -> Result<(), PollError> {
        if !mirror.join("HEAD").exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(mirror)
                .map_err(|source| PollError::Mirror {
                    path: mirror.to_path_buf(),
                    source,
                })?;
            git.run(&["init", "--quiet", "--bare", "."]).await?;
            self.url = None;
        }
        if self.url.as_deref() != Some(def.repository.as_str()) {
            git.run(&["config", "remote.origin.url", &def.repository])
                .await?;
            self.url = Some(def.repository.clone());
        }
        Ok(())
    }

    /// The commits a moved ref brings, oldest first, and how many more
    /// there were beyond [`MAX_COMMITS`].
    async fn commits(
        &self,
        git: &Git,
        name: &str,
        moved: &Moved,
    ) -> Result<(Vec<Commit>, usize), PollError> {
        // Which commits: `range`, at most `limit` of them.
        let (range, limit): (Vec<String>, usize) = match moved {
            Moved::Baseline { .. } | Moved::Deleted => return Ok((Vec::new(), 0)),
            // A tag is one change: the commit it now names.
            Moved::Created { to } | Moved::Updated { to, .. } if name.starts_with(TAG_PREFIX) => {
                (vec![to.clone()], 1)
            }
            // A new branch: what no other branch has.
            Moved::Created { to } => (
                vec![
                    to.clone(),
                    "--not".into(),
                    format!("--exclude={name}"),
                    "--branches".into(),
                ],
                MAX_COMMITS,
            ),
            // What the new head has that the old one had not: a
            // fast-forward's new commits, or a force push's replacement.
            Moved::Updated { from, to } if self.has_commit(git, from).await => {
                (vec![format!("{from}..{to}")], MAX_COMMITS)
            }
            // The old head is not in the mirror (a mirror made anew): the
            // new head alone.
            Moved::Updated { to, .. } => (vec![to.clone()], 1),
        };
        let max = format!("--max-count={}", limit + 1);
        let mut args = vec![
            "log",
            "--reverse",
            &max,
            LOG_FORMAT,
            "--name-only",
            "--diff-merges=first-parent",
        ];
        args.extend(range.iter().map(String::as_str));
        let mut commits = refs::parse_log(&git.run(&args).await?);
        if commits.len() <= limit {
            return Ok((commits, 0));
        }
        if limit == 1 {
            // The head alone was asked for: `--reverse` put it last.
            let head = commits.pop().expect("more than one");
            return Ok((vec![head], 0));
        }
        let mut count = vec!["rev-list", "--count"];
        count.extend(range.iter().map(String::as_str));
        let total: usize = git
            .run(&count)
            .await?
            .trim()
            .parse()
            .unwrap_or(commits.len());
        commits.drain(..commits.len() - limit);
        Ok((commits, total.saturating_sub(limit)))
    }

    async fn has_commit(&self, git: &Git, rev: &str) -> bool {
        git.run(&["cat-file", "-e", &format!("{rev}^{{commit}}")])
            .await
            .is_ok()
    }
}

/// A commit of ref `name` as a change, fitted to what the master stores.
fn change(def: &PollerDef, name: &str, c: Commit) -> NewChange {
    fit(NewChange {
        repository: def.repository.clone(),
        branch: name.to_owned(),
        revision: c.revision,
        files: c.files,
        author: Some(c.author),
        comments: Some(c.comments),
        when_ms: Some(c.when_ms),
        ..NewChange::default()
    })
}

/// A repository's content is not ours: a commit message of a megabyte, a
/// commit touching 50,000 files or a NUL byte in an author must not make
/// the master refuse the batch, or the poller would be stuck on that ref
/// for ever. What does not fit is cut, and the change says so in its
/// properties (`truncated`).
pub fn fit(mut c: NewChange) -> NewChange {
    use crate::protocol::change::{MAX_CHANGE_COMMENTS, MAX_CHANGE_FIELD, MAX_CHANGE_FILES};
    let mut cut = Vec::new();
    let clean = |text: &mut String, max: usize, what: &str, cut: &mut Vec<String>| {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{fffd}");
        }
        if text.len() > max {
            let mut end = max;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            cut.push(what.to_owned());
        }
    };
    if let Some(a) = c.author.as_mut() {
        clean(a, MAX_CHANGE_FIELD, "author", &mut cut);
    }
    if let Some(m) = c.comments.as_mut() {
        clean(m, MAX_CHANGE_COMMENTS, "comments", &mut cut);
    }
    let before = c.files.len();
    c.files
        .retain(|f| !f.contains('\0') && f.len() <= MAX_CHANGE_FIELD && !f.is_empty());
    c.files.truncate(MAX_CHANGE_FILES);
    if c.files.len() < before {
        cut.push(format!("files ({} of {before} kept)", c.files.len()));
    }
    if !cut.is_empty() {
        c.properties.insert("truncated".into(), cut.join(", "));
    }
    c
}

/// Run poller `def` until its sender is dropped (the poller was removed or
/// the master stops): poll, then wait `interval` after the poll's end. A
/// changed definition takes effect at the next poll, and its interval is
/// counted from the last poll's end: a reload causes no extra poll.
pub async fn run<S: ChangeSink>(
    mut defs: watch::Receiver<PollerDef>,
    mut poller: Poller<S>,
    status: SharedStatus,
) {
    let first = {
        let def = defs.borrow();
        start_delay(&def.name, def.interval)
    };
    tokio::select! {
        () = tokio::time::sleep(first) => {}
        changed = defs.changed() => if changed.is_err() { return },
    }
    loop {
        let def = defs.borrow_and_update().clone();
        let started = Instant::now();
        let at_ms = crate::paths::now_ms();
        let outcome = poller.poll(&def).await;
        let took = started.elapsed();
        let ended = Instant::now();
        match &outcome {
            Ok(p) if p.moved > 0 => info!(
                poller = %def.name,
                changes = p.changes,
                refs = p.moved,
                "poll stored changes"
            ),
            Ok(_) => {}
            Err(e) => warn!(poller = %def.name, "poll failed: {e}"),
        }
        status.update(&def.name, |s: &mut PollerStatus| {
            s.repository = def.repository.clone();
            s.last_poll_ms = Some(at_ms);
            s.last_duration_ms = Some(took.as_millis() as u64);
            match &outcome {
                Ok(p) => {
                    s.last_error = None;
                    s.changes += p.changes as u64;
                    if let Some(cursors) = &poller.cursors {
                        s.refs = cursors.len() as u64;
                    }
                    if !p.skipped.is_empty() {
                        s.last_warning = Some(format!(
                            "more than {MAX_COMMITS} new commits on {}: only the newest were taken",
                            p.skipped
                                .iter()
                                .map(|(b, n)| format!("{b} ({n} skipped)"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
                Err(e) => s.last_error = Some(e.to_string()),
            }
        });
        let mut deadline = ended + def.interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                changed = defs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let interval = defs.borrow().interval;
                    deadline = ended + interval;
                }
            }
        }
    }
}

/// How long a poller waits at most before its first poll after a master
/// start, spread by name so that many pollers do not all start at once.
pub fn start_delay(name: &str, interval: Duration) -> Duration {
    let spread = interval.min(Duration::from_secs(10)).as_millis() as u64;
    if spread == 0 {
        return Duration::ZERO;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Duration::from_millis(hash % spread)
}

#[cfg(test)]
mod fit_tests {
    use super::fit;
    use crate::protocol::NewChange;
    use crate::protocol::change::{MAX_CHANGE_COMMENTS, MAX_CHANGE_FILES};

    #[test]
    fn what_the_master_would_refuse_is_cut_and_said() {
        let c = fit(NewChange {
            repository: "/r".into(),
            branch: "main".into(),
            revision: "abc".into(),
            author: Some("A\0B".into()),
            comments: Some("é".repeat(MAX_CHANGE_COMMENTS)),
            files: (0..MAX_CHANGE_FILES + 5).map(|i| format!("f{i}")).collect(),
            ..NewChange::default()
        });
        assert_eq!(c.problem(), None);
        assert_eq!(c.author.as_deref(), Some("A\u{fffd}B"));
        assert_eq!(c.files.len(), MAX_CHANGE_FILES);
        assert_eq!(
            c.properties["truncated"],
            format!(
                "comments, files ({MAX_CHANGE_FILES} of {} kept)",
                MAX_CHANGE_FILES + 5
            )
        );
        let plain = NewChange {
            repository: "/r".into(),
            branch: "main".into(),
            revision: "abc".into(),
            ..NewChange::default()
        };
        assert_eq!(fit(plain.clone()), plain);
    }
}
