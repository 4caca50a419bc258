//! Where a poller's changes go: the master's front door, or a test's
//! memory. A poller needs two things of it: its cursors as stored, and a
//! batch of changes stored together with the cursor that follows them.

use std::collections::BTreeMap;
use std::future::Future;

use crate::daemon::auth::Principal;
use crate::daemon::handle::MasterHandle;
use crate::protocol::ErrorReply;

pub use crate::protocol::{ChangeBatch, ChangeId, NewChange, PollerCursor};

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

/// The master's front door as a poller's sink: each call made as
/// `Principal::ChangeSource` named after the poller, which may add
/// changes and read cursors and nothing else.
#[derive(Clone)]
pub struct HandleSink(pub MasterHandle);

impl ChangeSink for HandleSink {
    async fn poller_cursors(&self, poller: &str) -> Result<BTreeMap<String, String>, ErrorReply> {
        let who = Principal::ChangeSource {
            name: poller.to_owned(),
        };
        self.0.poller_cursors(&who, poller).await
    }

    async fn add_changes(&self, batch: ChangeBatch) -> Result<Vec<ChangeId>, ErrorReply> {
        let who = Principal::ChangeSource {
            name: batch
                .cursor
                .as_ref()
                .map(|c| c.poller.clone())
                .unwrap_or_default(),
        };
        self.0.add_changes(&who, batch).await
    }
}
