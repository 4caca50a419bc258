//! Changes from their sources (`bbctl sendchange`, pollers): stored with
//! ids, and seen by the schedulers, in the batch's one transaction.

use crate::daemon::actor::{Deferred, Master};
use crate::daemon::handlers::core_error;
use crate::protocol::{ChangeBatch, ChangeId, ErrorReply, EventKind};
use tokio::sync::oneshot;

impl Master {
    /// A batch of changes: the ids are told once the batch is on disk
    /// (`Master::flush`), like a force-build's request id. Each stored
    /// change is a `change_added` event, staged before the events of the
    /// builds it starts (those come from the core's records, taken after
    /// this command).
    pub(in crate::daemon) fn add_changes(
        &mut self,
        batch: ChangeBatch,
        sent_by: &str,
        reply: oneshot::Sender<Result<Vec<ChangeId>, ErrorReply>>,
        now: u64,
    ) {
        let said: Vec<_> = batch
            .changes
            .iter()
            .map(|c| {
                (
                    c.repository.clone(),
                    c.branch.clone(),
                    c.revision.clone(),
                    c.author.clone(),
                )
            })
            .collect();
        let answer = self.core.add_changes(batch, now).map_err(core_error);
        if let Ok(ids) = &answer {
            for (id, (repository, branch, revision, author)) in ids.iter().zip(said) {
                self.emit(EventKind::ChangeAdded {
                    change: *id,
                    repository,
                    branch,
                    revision,
                    author,
                    sent_by: sent_by.to_owned(),
                });
            }
        }
        self.replies.push(Deferred::Changes(reply, answer));
    }
}
