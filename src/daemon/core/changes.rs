//! Inputs from change sources (`bbctl sendchange`, pollers, webhooks): a
//! batch of changes, stored with ids, and a poller's cursor, in the same
//! record batch as every scheduler decision they cause.

use crate::protocol::change::MAX_BATCH_CHANGES;
use crate::protocol::{Change, ChangeBatch, ChangeId, NewChange, SourceStamp};

use super::{Core, CoreError, Record};

impl Core {
    /// Accept a batch of changes: each gets an id and a
    /// [`Record::ChangeAdded`], the cursor a [`Record::PollerCursor`], and
    /// the schedulers see each change (their decisions are records of the
    /// same batch). The ids must be told only once the batch is stored.
    /// An invalid change refuses the whole batch, which changes nothing.
    pub fn add_changes(
        &mut self,
        batch: ChangeBatch,
        now_ms: u64,
    ) -> Result<Vec<ChangeId>, CoreError> {
        if batch.changes.len() > MAX_BATCH_CHANGES {
            return Err(CoreError::TooManyChanges(batch.changes.len()));
        }
        for (i, change) in batch.changes.iter().enumerate() {
            if let Some(why) = change.problem() {
                return Err(CoreError::BadChange { index: i + 1, why });
            }
        }
        if let Some(cursor) = &batch.cursor {
            let probe = NewChange {
                repository: cursor.poller.clone(),
                branch: cursor.branch.clone(),
                revision: cursor.revision.clone().unwrap_or_else(|| "-".into()),
                ..NewChange::default()
            };
            if let Some(why) = probe.problem() {
                return Err(CoreError::BadChange {
                    index: 0,
                    why: format!("the poller's cursor: {why}"),
                });
            }
        }
        let mut ids = Vec::with_capacity(batch.changes.len());
        let mut stored = Vec::with_capacity(batch.changes.len());
        for new in batch.changes {
            let id = self.next_change;
            self.next_change += 1;
            let change = Change {
                id,
                new,
                at_ms: now_ms,
            };
            self.record(Record::ChangeAdded(Box::new(change.clone())));
            ids.push(id);
            stored.push(change);
        }
        if let Some(cursor) = batch.cursor {
            self.record(Record::PollerCursor(cursor));
        }
        self.changes_arrived(&stored, now_ms);
        self.dispatch(now_ms);
        Ok(ids)
    }

    /// Is this source stamp one the master could have made: fields that
    /// fit, changes that exist?
    pub(super) fn check_source(&self, source: &SourceStamp) -> Result<(), CoreError> {
        let probe = NewChange {
            repository: source.repository.clone(),
            branch: source.branch.clone(),
            revision: source.revision.clone().unwrap_or_else(|| "-".into()),
            ..NewChange::default()
        };
        if let Some(why) = probe.problem() {
            return Err(CoreError::BadSource(why));
        }
        if let Some(c) = source
            .changes
            .iter()
            .find(|c| **c >= self.next_change || **c == 0)
        {
            return Err(CoreError::BadSource(format!("there is no change {c}")));
        }
        Ok(())
    }
}
