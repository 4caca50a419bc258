//! Changes (a commit somewhere, as a change source saw it) and source
//! stamps (what a build is to build), shared by `bbctl`, the core and the
//! change sources (`sendchange`, pollers, webhooks).
//!
//! A leaf: plain serde types, no behaviour beyond small helpers. A change
//! is stored with an id before anyone hears of it (`Record::ChangeAdded`);
//! schedulers turn changes into requests carrying a [`SourceStamp`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BuildId, RequestId};

/// A change's id, given when it is stored.
pub type ChangeId = u64;

/// A change as a source reports it, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NewChange {
    /// The repository (URL or path, as the source names it).
    pub repository: String,
    /// The branch.
    pub branch: String,
    /// The revision (a commit id).
    pub revision: String,
    /// The files it touches, relative to the repository's root.
    #[serde(default)]
    pub files: Vec<String>,
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<String>,
    /// Its message.
    #[serde(default)]
    pub comments: Option<String>,
    /// When it was made, as the source says (ms since the Unix epoch).
    #[serde(default)]
    pub when_ms: Option<u64>,
    /// Free-form properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// A category, for filters.
    #[serde(default)]
    pub category: Option<String>,
}

/// A stored change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Its id.
    pub id: ChangeId,
    /// What the source said.
    #[serde(flatten)]
    pub new: NewChange,
    /// When the master stored it (ms since the Unix epoch).
    pub at_ms: u64,
}

/// What a build builds: a repository's branch at a revision, and the
/// changes that led to it (empty for a force without changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceStamp {
    /// The repository.
    pub repository: String,
    /// The branch.
    pub branch: String,
    /// The revision; `None`: the branch's head when the build checks out.
    #[serde(default)]
    pub revision: Option<String>,
    /// The changes it builds, oldest first.
    #[serde(default)]
    pub changes: Vec<ChangeId>,
}

/// Where a poller stands on one branch, stored in the same batch as the
/// changes it found, so that a restart resumes from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollerCursor {
    /// The poller's name.
    pub poller: String,
    /// The branch (or tag ref) it polls.
    pub branch: String,
    /// The last revision seen; `None`: the branch was deleted (the cursor
    /// is forgotten).
    pub revision: Option<String>,
}

/// What a change source hands the master in one go: changes, and where
/// it now stands (a poller may send only a cursor: a baseline, a branch
/// deleted).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// The changes, oldest first.
    pub changes: Vec<NewChange>,
    /// The poller's new position, stored with the changes.
    pub cursor: Option<PollerCursor>,
}

/// A stored change with the builds it started, for `bbctl changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// The requests whose source stamp names it, oldest first, with their
    /// builds (none yet while queued).
    pub requests: Vec<ChangeRequest>,
}

/// A request that builds a change, and its builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// The request.
    pub request_id: RequestId,
    /// Its builder.
    pub builder: String,
    /// Its builds (more than one when a build was retried).
    pub builds: Vec<BuildId>,
}

/// Most changes one batch may carry.
pub const MAX_BATCH_CHANGES: usize = 10_000;

/// Longest text field of a change (repository, branch, revision, author,
/// a file's name), in bytes; comments may be longer.
pub const MAX_CHANGE_FIELD: usize = 4096;

/// Longest comments of a change, in bytes.
pub const MAX_CHANGE_COMMENTS: usize = 65_536;

/// Most files one change may name.
pub const MAX_CHANGE_FILES: usize = 10_000;

impl NewChange {
    /// What is wrong with this change, if anything: empty or oversized
    /// fields, NUL bytes. Checked by the core before it is stored.
    pub fn problem(&self) -> Option<String> {
        for (what, value, max) in [
            ("repository", &self.repository, MAX_CHANGE_FIELD),
            ("branch", &self.branch, MAX_CHANGE_FIELD),
            ("revision", &self.revision, MAX_CHANGE_FIELD),
        ] {
            if value.is_empty() {
                return Some(format!("the {what} is empty"));
            }
            if let Some(p) = text_problem(value, max) {
                return Some(format!("the {what} {p}"));
            }
        }
        for (what, value, max) in [
            ("author", &self.author, MAX_CHANGE_FIELD),
            ("comments", &self.comments, MAX_CHANGE_COMMENTS),
            ("category", &self.category, MAX_CHANGE_FIELD),
        ] {
            if let Some(p) = value.as_deref().and_then(|v| text_problem(v, max)) {
                return Some(format!("the {what} {p}"));
            }
        }
        if self.files.len() > MAX_CHANGE_FILES {
            return Some(format!(
                "it names {} files, at most {MAX_CHANGE_FILES}",
                self.files.len()
            ));
        }
        for f in &self.files {
            if let Some(p) = text_problem(f, MAX_CHANGE_FIELD) {
                return Some(format!("a file name {p}"));
            }
        }
        for (k, v) in &self.properties {
            if let Some(p) = text_problem(k, MAX_CHANGE_FIELD) {
                return Some(format!("a property name {p}"));
            }
            if let Some(p) = text_problem(v, MAX_CHANGE_FIELD) {
                return Some(format!("property `{k}` {p}"));
            }
        }
        None
    }
}

fn text_problem(value: &str, max: usize) -> Option<String> {
    if value.contains('\0') {
        Some("contains a NUL byte".into())
    } else if value.len() > max {
        Some(format!("is {} bytes long, at most {max}", value.len()))
    } else {
        None
    }
}

impl SourceStamp {
    /// The ids written as `BB_CHANGES` wants them: comma-separated.
    pub fn changes_csv(&self) -> String {
        self.changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}
