//! Where a poller's changes go: the master's front door, or a test's
//! memory. A poller needs two things of it: its cursors as stored, and a
//! batch of changes stored together with the cursor that follows them.

use std::collections::BTreeMap;
use std::future::Future;

use crate::protocol::ErrorReply;

// Until the foundation of issue 15 lands, the contract's shapes live here.
/// A change's id.
pub type ChangeId = u64;

/// A change as a source reports it (the contract's `NewChange`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewChange {
    /// The repository, as the poller is configured.
    pub repository: String,
    /// The branch (`refs/tags/NAME` for a tag).
    pub branch: String,
    /// The commit.
    pub revision: String,
    /// Files it changed.
    pub files: Vec<String>,
    /// `Name <email>`.
    pub author: Option<String>,
    /// The commit message.
    pub comments: Option<String>,
    /// The commit's time, ms since the epoch.
    pub when_ms: Option<u64>,
    /// Free-form properties.
    pub properties: BTreeMap<String, String>,
    /// A category.
    pub category: Option<String>,
}

/// A poller's last revision of one branch (`None`: the branch is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerCursor {
    /// The poller's name.
    pub poller: String,
    /// The branch.
    pub branch: String,
    /// Its last revision.
    pub revision: Option<String>,
}

/// Changes stored in one transaction with the cursor that follows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeBatch {
    /// The changes, oldest first.
    pub changes: Vec<NewChange>,
    /// The cursor they move.
    pub cursor: Option<PollerCursor>,
}

/// What a poller needs of the master.
pub trait ChangeSink: Clone + Send + Sync + 'static {
    /// The poller's stored cursors: branch to revision (deleted branches
    /// are absent).
    fn poller_cursors(
        &self,
        poller: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ErrorReply>> + Send;

    /// Store `batch` (changes and cursor in one transaction); answered
    /// once it is on disk.
    fn add_changes(
        &self,
        batch: ChangeBatch,
    ) -> impl Future<Output = Result<Vec<ChangeId>, ErrorReply>> + Send;
}
