//! `kind = "branch"`: changes that pass a filter (repository, branch
//! globs) are collected per repository and branch; a change touching a
//! file of `files` (or any change, without `files`) is important and
//! (re)starts the `tree_stable` timer. When the timer runs out, the
//! scheduler fires once for that branch with every change collected since
//! its last firing there (important or not), at the newest one's revision.
//! Changes that are not important wait for the next important one.

use serde::{Deserialize, Serialize};

use crate::config::{BranchFilter, SchedulerDef, SchedulerKind};
use crate::protocol::{Change, ChangeId, SourceStamp};

use super::{Firing, Kind, glob_match};

/// The durable state: the changes waiting, per repository and branch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::daemon::core) struct Branch {
    /// One entry per repository and branch with changes waiting.
    buckets: Vec<Bucket>,
}

/// The changes waiting on one repository's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    repository: String,
    branch: String,
    /// Oldest first.
    changes: Vec<Pending>,
    /// When it fires: `tree_stable` after its latest important change;
    /// `None` while only unimportant changes wait.
    due_ms: Option<u64>,
}

/// One change waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    id: ChangeId,
    revision: String,
    important: bool,
}

fn filter(def: &SchedulerDef) -> Option<&BranchFilter> {
    match &def.kind {
        SchedulerKind::Branch(f) => Some(f),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Does the scheduler take changes of this repository and branch?
fn takes(f: &BranchFilter, repository: &str, branch: &str) -> bool {
    f.repository.as_deref().is_none_or(|r| r == repository)
        && (f.branches.is_empty() || f.branches.iter().any(|g| glob_match(g, branch)))
}

/// Is the change important: does it touch a file of `files`? A change
/// that names no files is important (nothing says it is not).
fn important(f: &BranchFilter, change: &Change) -> bool {
    f.files.is_empty()
        || change.new.files.is_empty()
        || change
            .new
            .files
            .iter()
            .any(|file| f.files.iter().any(|g| glob_match(g, file)))
}

impl Kind for Branch {
    fn save(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    fn on_change(&mut self, def: &SchedulerDef, change: &Change, now_ms: u64) -> bool {
        let Some(f) = filter(def) else {
            return false;
        };
        let c = &change.new;
        if !takes(f, &c.repository, &c.branch) {
            return false;
        }
        let important = important(f, change);
        let at = match self
            .buckets
            .iter()
            .position(|b| b.repository == c.repository && b.branch == c.branch)
        {
            Some(at) => at,
            None => {
                self.buckets.push(Bucket {
                    repository: c.repository.clone(),
                    branch: c.branch.clone(),
                    changes: Vec::new(),
                    due_ms: None,
                });
                self.buckets.len() - 1
            }
        };
        let bucket = &mut self.buckets[at];
        bucket.changes.push(Pending {
            id: change.id,
            revision: c.revision.clone(),
            important,
        });
        if important {
            bucket.due_ms = Some(now_ms.saturating_add(f.tree_stable.as_millis() as u64));
        }
        true
    }

    fn next_deadline(&self) -> Option<u64> {
        self.buckets.iter().filter_map(|b| b.due_ms).min()
    }

    fn tick(&mut self, _def: &SchedulerDef, now_ms: u64) -> Vec<Firing> {
        let (due, waiting): (Vec<Bucket>, Vec<Bucket>) = std::mem::take(&mut self.buckets)
            .into_iter()
            .partition(|b| b.due_ms.is_some_and(|t| t <= now_ms));
        self.buckets = waiting;
        due.into_iter()
            .map(|b| {
                let revision = b.changes.last().map(|p| p.revision.clone());
                let n = b.changes.len();
                Firing {
                    builders: None,
                    reason: format!(
                        "{n} change{} on {}",
                        if n == 1 { "" } else { "s" },
                        b.branch
                    ),
                    source: Some(SourceStamp {
                        repository: b.repository,
                        branch: b.branch,
                        revision,
                        changes: b.changes.iter().map(|p| p.id).collect(),
                    }),
                    properties: Default::default(),
                }
            })
            .collect()
    }

    fn pending_changes(&self) -> Vec<ChangeId> {
        let mut ids: Vec<ChangeId> = self
            .buckets
            .iter()
            .flat_map(|b| b.changes.iter().map(|p| p.id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Branches the new filter no longer takes are dropped; the others
    /// keep their changes and their timer with the time it had left.
    fn reconfigured(
        &mut self,
        _old: &SchedulerDef,
        new: &SchedulerDef,
        _now_ms: u64,
    ) -> Vec<ChangeId> {
        let Some(f) = filter(new) else {
            return self.pending_changes();
        };
        let (kept, gone): (Vec<Bucket>, Vec<Bucket>) = std::mem::take(&mut self.buckets)
            .into_iter()
            .partition(|b| takes(f, &b.repository, &b.branch));
        self.buckets = kept;
        let mut ids: Vec<ChangeId> = gone
            .iter()
            .flat_map(|b| b.changes.iter().map(|p| p.id))
            .collect();
        ids.sort_unstable();
        ids
    }
}
