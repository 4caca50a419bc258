//! Change pollers (`[[poller]]`).

use std::time::Duration;

/// A `[[poller]]` entry: a git repository the master polls for commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerDef {
    /// Unique name: the key of its durable cursors and of its mirror dir.
    pub name: String,
    /// A URL or a path the master's `git` can fetch from.
    pub repository: String,
    /// Branch name globs (`main`, `release/*`); `*` stays within one
    /// `/`-separated part, `**` crosses them.
    pub branches: Vec<String>,
    /// Also watch tags (a new or moved tag is a change on branch
    /// `refs/tags/NAME`).
    pub tags: bool,
    /// Time between the end of one poll and the start of the next.
    pub interval: Duration,
    /// How long one git command may run before it is killed.
    pub timeout: Duration,
}
