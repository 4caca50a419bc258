//! The pure part of a git poller: which refs it watches, what git's
//! output says, and what changed since the cursors. No I/O.

use std::collections::BTreeMap;

use crate::config::PollerDef;

/// Where a watched tag's name starts: a tag is a change on branch
/// `refs/tags/NAME`, so it cannot be mistaken for a branch.
pub const TAG_PREFIX: &str = "refs/tags/";

/// The refs a poll saw: watched name (`main`, `refs/tags/v1`) to the
/// commit it points at (a tag peeled to its commit).
pub type Refs = BTreeMap<String, String>;

/// Does branch `name` match glob `pattern`? `*` and `?` stay within one
/// `/`-separated part, `**` crosses them: the schedulers' own matcher
/// (linear in the name, which comes from the remote), so that a poller
/// and a scheduler read `release/*` alike.
pub fn branch_matches(pattern: &str, name: &str) -> bool {
    crate::daemon::core::glob_match(pattern, name)
}

/// Whether `def` watches the full ref name `refname` (`refs/heads/x`,
/// `refs/tags/v1`), and under which name.
pub fn watched_name(def: &PollerDef, refname: &str) -> Option<String> {
    if let Some(branch) = refname.strip_prefix("refs/heads/") {
        def.branches
            .iter()
            .any(|p| branch_matches(p, branch))
            .then(|| branch.to_owned())
    } else if refname.starts_with(TAG_PREFIX) && def.tags {
        Some(refname.to_owned())
    } else {
        None
    }
}

/// The watched refs in `git ls-remote` output (`<id>\t<refname>` lines;
/// an annotated tag's commit comes as `<refname>^{}` and wins).
pub fn parse_ls_remote(def: &PollerDef, out: &str) -> Refs {
    let mut refs = Refs::new();
    let mut peeled = Refs::new();
    for line in out.lines() {
        let Some((id, refname)) = line.split_once('\t') else {
            continue;
        };
        match refname.strip_suffix("^{}") {
            Some(tag) => {
                if let Some(name) = watched_name(def, tag) {
                    peeled.insert(name, id.to_owned());
                }
            }
            None => {
                if let Some(name) = watched_name(def, refname) {
                    refs.insert(name, id.to_owned());
                }
            }
        }
    }
    refs.extend(peeled);
    refs
}

/// The watched refs in `git for-each-ref --format='%(objectname)
/// %(*objectname) %(refname)'` output (the middle one set for annotated
/// tags only).
pub fn parse_for_each_ref(def: &PollerDef, out: &str) -> Refs {
    let mut refs = Refs::new();
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(id), Some(peeled), Some(refname)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let Some(name) = watched_name(def, refname) {
            let id = if peeled.is_empty() { id } else { peeled };
            refs.insert(name, id.to_owned());
        }
    }
    refs
}

/// What happened to one watched ref since its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved {
    /// Seen for the first time on the poller's very first poll: only its
    /// cursor is recorded (no flood of old commits).
    Baseline {
        /// Its commit.
        to: String,
    },
    /// A ref with no cursor on a later poll: a new branch or tag.
    Created {
        /// Its commit.
        to: String,
    },
    /// It points elsewhere (a fast-forward, a force push, a moved tag).
    Updated {
        /// The cursor's commit.
        from: String,
        /// The new one.
        to: String,
    },
    /// It is gone: its cursor is cleared.
    Deleted,
}

/// Every ref whose cursor must change, by name. `first` is the poller's
/// very first poll (no cursor at all).
pub fn diff(cursors: &Refs, now: &Refs, first: bool) -> Vec<(String, Moved)> {
    let mut out = Vec::new();
    for (name, to) in now {
        let moved = match cursors.get(name) {
            Some(from) if from == to => continue,
            Some(from) => Moved::Updated {
                from: from.clone(),
                to: to.clone(),
            },
            None if first => Moved::Baseline { to: to.clone() },
            None => Moved::Created { to: to.clone() },
        };
        out.push((name.clone(), moved));
    }
    for name in cursors.keys() {
        if !now.contains_key(name) {
            out.push((name.clone(), Moved::Deleted));
        }
    }
    out
}

/// One commit as `git log` described it (see [`LOG_FORMAT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Its id.
    pub revision: String,
    /// `Name <email>`.
    pub author: String,
    /// Its committer time, in ms since the epoch.
    pub when_ms: u64,
    /// Its message.
    pub comments: String,
    /// The files it changed (against its first parent).
    pub files: Vec<String>,
}

/// `git log --format` for [`parse_log`]: a record separator, then the
/// fields separated by unit separators; `--name-only` lists the files
/// after the last one.
pub const LOG_FORMAT: &str = "--format=%x1e%H%x1f%an <%ae>%x1f%ct%x1f%B%x1f";

/// The commits of `git log LOG_FORMAT --name-only`, in git's order.
pub fn parse_log(out: &str) -> Vec<Commit> {
    out.split('\x1e')
        .filter_map(|record| {
            let mut f = record.splitn(5, '\x1f');
            let revision = f.next()?.trim().to_owned();
            let author = f.next()?.to_owned();
            let when: u64 = f.next()?.trim().parse().ok()?;
            let comments = f.next()?.trim_end().to_owned();
            let files = f
                .next()
                .unwrap_or_default()
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            (!revision.is_empty()).then_some(Commit {
                revision,
                author,
                when_ms: when.saturating_mul(1000),
                comments,
                files,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn def(branches: &[&str], tags: bool) -> PollerDef {
        PollerDef {
            name: "p".into(),
            repository: "/r".into(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
            tags,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn branch_globs() {
        assert!(branch_matches("main", "main"));
        assert!(!branch_matches("main", "mainline"));
        assert!(branch_matches("release/*", "release/1.0"));
        assert!(!branch_matches("release/*", "release/1.0/hotfix"));
        assert!(!branch_matches("release/*", "release"));
        assert!(branch_matches("release/**", "release/1.0/hotfix"));
        assert!(branch_matches("**", "a/b/c"));
        assert!(branch_matches("**", "main"));
        assert!(branch_matches("feat-?", "feat-x"));
        assert!(branch_matches("**/fix", "a/b/fix"));
        assert!(branch_matches("**/fix", "fix"));
    }

    #[test]
    fn ls_remote_peels_tags_and_filters() {
        let out = "aaa\tHEAD\nbbb\trefs/heads/main\nccc\trefs/heads/dev\n\
                   ddd\trefs/tags/v1\neee\trefs/tags/v1^{}\nfff\trefs/tags/v2\n\
                   999\trefs/pull/1/head\n";
        let refs = parse_ls_remote(&def(&["main"], true), out);
        let want: Refs = [
            ("main", "bbb"),
            ("refs/tags/v1", "eee"),
            ("refs/tags/v2", "fff"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(refs, want);
        assert_eq!(parse_ls_remote(&def(&["**"], false), out).len(), 2);
    }

    #[test]
    fn for_each_ref_peels_annotated_tags() {
        let out = "bbb  refs/heads/main\nddd eee refs/tags/v1\n";
        let refs = parse_for_each_ref(&def(&["main"], true), out);
        assert_eq!(refs["main"], "bbb");
        assert_eq!(refs["refs/tags/v1"], "eee");
    }

    #[test]
    fn diff_says_what_moved() {
        let refs = |pairs: &[(&str, &str)]| -> Refs {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let now = refs(&[("main", "2"), ("new", "9"), ("same", "5")]);
        assert_eq!(
            diff(&Refs::new(), &now, true),
            vec![
                ("main".into(), Moved::Baseline { to: "2".into() }),
                ("new".into(), Moved::Baseline { to: "9".into() }),
                ("same".into(), Moved::Baseline { to: "5".into() }),
            ]
        );
        let cursors = refs(&[("main", "1"), ("gone", "3"), ("same", "5")]);
        assert_eq!(
            diff(&cursors, &now, false),
            vec![
                (
                    "main".into(),
                    Moved::Updated {
                        from: "1".into(),
                        to: "2".into()
                    }
                ),
                ("new".into(), Moved::Created { to: "9".into() }),
                ("gone".into(), Moved::Deleted),
            ]
        );
        assert!(diff(&now, &now, false).is_empty());
    }

    #[test]
    fn log_records() {
        let out = "\x1eabc\x1fAnn <a@x>\x1f1700000000\x1fFix it\n\nbody\n\x1f\n\nsrc/a.rs\nREADME\n\
                   \x1edef\x1fBob <b@x>\x1f1700000001\x1fMerge\n\x1f\n";
        let commits = parse_log(out);
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].revision, "abc");
        assert_eq!(commits[0].author, "Ann <a@x>");
        assert_eq!(commits[0].when_ms, 1_700_000_000_000);
        assert_eq!(commits[0].comments, "Fix it\n\nbody");
        assert_eq!(commits[0].files, ["src/a.rs", "README"]);
        assert!(commits[1].files.is_empty());
    }
}
