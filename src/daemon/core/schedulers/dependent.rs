//! `dependent` schedulers: fire when every build that one firing of the
//! `upstream` scheduler queued (for one source stamp) succeeded, with that
//! source stamp.
//!
//! The open firings of the upstream (the requests still to succeed) are
//! the dependent's durable state, recorded in the same batch as the
//! upstream's firing and as each result, so a restart neither forgets one
//! nor fires twice. A failed, cancelled or skipped-by-collapse-and-failed
//! upstream build drops that firing: the dependent does not fire for it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::protocol::{BuildResult, RequestId, SourceStamp};

/// One firing of the upstream, not yet all succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The source stamp of its requests (the dependent fires with it).
    pub source: Option<SourceStamp>,
    /// Its requests that have not succeeded yet.
    pub left: BTreeSet<RequestId>,
}

/// A dependent scheduler's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DependentState {
    /// The upstream's firings still open, oldest first.
    pub pending: Vec<Pending>,
}

impl DependentState {
    /// The upstream fired.
    pub fn upstream_fired(&mut self, requests: &[RequestId], source: Option<SourceStamp>) {
        if requests.is_empty() {
            return;
        }
        self.pending.push(Pending {
            source,
            left: requests.iter().copied().collect(),
        });
    }

    /// A request ended: `(changed, sources to fire with)`.
    pub fn request_ended(
        &mut self,
        request: RequestId,
        result: BuildResult,
    ) -> (bool, Vec<Option<SourceStamp>>) {
        let mut changed = false;
        let mut fire = Vec::new();
        self.pending.retain_mut(|p| {
            if !p.left.contains(&request) {
                return true;
            }
            changed = true;
            if result != BuildResult::Success {
                return false;
            }
            p.left.remove(&request);
            if p.left.is_empty() {
                fire.push(p.source.clone());
                return false;
            }
            true
        });
        (changed, fire)
    }

    /// A request was merged into `into`; `true` if the state changed.
    pub fn request_collapsed(&mut self, request: RequestId, into: RequestId) -> bool {
        let mut changed = false;
        for p in &mut self.pending {
            if p.left.remove(&request) {
                p.left.insert(into);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_all_succeeded_and_never_after_a_failure() {
        let mut d = DependentState::default();
        let stamp = SourceStamp {
            repository: "r".into(),
            branch: "main".into(),
            revision: Some("abc".into()),
            changes: vec![3],
        };
        d.upstream_fired(&[1, 2], Some(stamp.clone()));
        d.upstream_fired(&[3], None);
        assert_eq!(d.request_ended(1, BuildResult::Success), (true, vec![]));
        assert_eq!(
            d.request_ended(2, BuildResult::Success),
            (true, vec![Some(stamp)])
        );
        assert_eq!(d.request_ended(2, BuildResult::Success), (false, vec![]));
        assert_eq!(d.request_ended(3, BuildResult::Failure), (true, vec![]));
        assert!(d.pending.is_empty());
        d.upstream_fired(&[4], None);
        assert!(d.request_collapsed(4, 5));
        assert_eq!(d.request_ended(5, BuildResult::Success), (true, vec![None]));
    }
}
