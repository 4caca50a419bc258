//! Changes from their sources (`bbctl sendchange`, pollers): stored with
//! ids, and seen by the schedulers, in the batch's one transaction.

use crate::daemon::actor::{Deferred, Master};
use crate::daemon::handlers::core_error;
use crate::protocol::{ChangeBatch, ChangeId, ErrorReply};
use tokio::sync::oneshot;

impl Master {
    /// A batch of changes: the ids are told once the batch is on disk
    /// (`Master::flush`), like a force-build's request id.
    pub(in crate::daemon) fn add_changes(
        &mut self,
        batch: ChangeBatch,
        reply: oneshot::Sender<Result<Vec<ChangeId>, ErrorReply>>,
        now: u64,
    ) {
        let answer = self.core.add_changes(batch, now).map_err(core_error);
        self.replies.push(Deferred::Changes(reply, answer));
    }
}
