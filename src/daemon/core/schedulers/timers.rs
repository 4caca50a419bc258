//! The `periodic`, `cron`, `triggerable` and `dependent` kinds on the
//! framework ([`super::Kind`]), the events they need beyond it (a
//! scheduler fired, a request ended or was merged), and the state of
//! trigger steps' waits, which belongs to builds, not to schedulers.
//!
//! Every state change is saved by the framework (or, for a wait, as its
//! own `Record::SchedulerState`) in the same event as what caused it, so
//! it lands in the same record batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SchedulerDef;
use crate::protocol::{BuildId, BuildResult, Change, ChangeId, RequestId, SourceStamp};

use super::super::{Core, SavedScheduler};
use super::dependent::DependentState;
use super::timed::{SeenChange, Timed};
use super::triggerable::{WAIT_KIND, Wait};
use super::{Firing, Kind};

/// What the core keeps for trigger steps' waits.
#[derive(Debug, Clone, Default)]
pub(in crate::daemon::core) struct Timers {
    /// Saved waits from the store, until the running builds are back.
    pub(in crate::daemon::core) saved: BTreeMap<String, SavedScheduler>,
    /// Trigger steps waiting, by build.
    pub(in crate::daemon::core) waits: BTreeMap<BuildId, Wait>,
    /// While a config is being applied: a wait that ends meanwhile (a
    /// triggered request cancelled with its builder) must not dispatch
    /// under half the new config; the reload dispatches at its end.
    pub(in crate::daemon::core) applying: bool,
}

impl Timers {
    /// Take the saved waits out of a start's saved states (the framework
    /// forgets states no scheduler claims; waits are no scheduler's).
    pub(in crate::daemon::core) fn split(saved: &mut BTreeMap<String, SavedScheduler>) -> Timers {
        let waits: Vec<String> = saved
            .iter()
            .filter(|(_, s)| s.kind == WAIT_KIND)
            .map(|(n, _)| n.clone())
            .collect();
        let mut t = Timers::default();
        for name in waits {
            if let Some(s) = saved.remove(&name) {
                t.saved.insert(name, s);
            }
        }
        t
    }
}

/// A `triggerable` scheduler's state: none (the waits are the builds').
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::daemon::core) struct Triggerable {}

impl Kind for Triggerable {
    fn save(&self) -> String {
        "{}".into()
    }
}

impl Kind for Timed {
    fn save(&self) -> String {
        self.saved()
    }

    fn on_change(&mut self, _def: &SchedulerDef, change: &Change, _now_ms: u64) -> bool {
        self.change(SeenChange {
            id: change.id,
            repository: change.new.repository.clone(),
            branch: change.new.branch.clone(),
            revision: change.new.revision.clone(),
        })
    }

    fn next_deadline(&self) -> Option<u64> {
        self.deadline()
    }

    fn tick(&mut self, _def: &SchedulerDef, now_ms: u64) -> Vec<Firing> {
        let Some(firing) = Timed::tick(self, now_ms) else {
            return Vec::new();
        };
        firing
            .sources
            .into_iter()
            .map(|s| Firing {
                builders: None,
                reason: firing.why.clone(),
                source: s.map(|s| SourceStamp {
                    repository: s.repository,
                    branch: s.branch,
                    revision: Some(s.revision),
                    changes: s.changes,
                }),
                properties: BTreeMap::new(),
            })
            .collect()
    }

    fn pending_changes(&self) -> Vec<ChangeId> {
        self.state.changes.iter().map(|c| c.id).collect()
    }

    fn reconfigured(
        &mut self,
        _old: &SchedulerDef,
        new: &SchedulerDef,
        now_ms: u64,
    ) -> Vec<ChangeId> {
        let Some(def) = new.kind.timed() else {
            return Vec::new();
        };
        let dropped = if def.only_if_changed {
            Vec::new()
        } else {
            self.pending_changes()
        };
        self.reload(def.clone(), now_ms);
        dropped
    }
}

impl Kind for DependentState {
    fn save(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }

    fn upstream_fired(
        &mut self,
        def: &SchedulerDef,
        upstream: &str,
        requests: &[RequestId],
        source: &Option<SourceStamp>,
    ) -> bool {
        if !matches!(&def.kind, crate::config::SchedulerKind::Dependent { upstream: u } if u == upstream)
            || requests.is_empty()
        {
            return false;
        }
        DependentState::upstream_fired(self, requests, source.clone());
        true
    }

    fn request_ended(
        &mut self,
        def: &SchedulerDef,
        request: RequestId,
        result: BuildResult,
    ) -> (bool, Vec<Firing>) {
        let (changed, fire) = DependentState::request_ended(self, request, result);
        let upstream = match &def.kind {
            crate::config::SchedulerKind::Dependent { upstream } => upstream.as_str(),
            _ => "?",
        };
        let firings = fire
            .into_iter()
            .map(|source| Firing {
                builders: None,
                reason: format!("the builds of `{upstream}` succeeded"),
                source,
                properties: BTreeMap::new(),
            })
            .collect();
        (changed, firings)
    }

    fn request_collapsed(&mut self, request: RequestId, into: RequestId) -> bool {
        DependentState::request_collapsed(self, request, into)
    }
}

impl Core {
    /// Scheduler `name` queued `requests` with `source`: the schedulers
    /// that follow it (`dependent`) take note.
    pub(in crate::daemon::core) fn scheduler_fired(
        &mut self,
        name: &str,
        requests: &[RequestId],
        source: &Option<SourceStamp>,
    ) {
        for s in self.schedulers.set.values_mut() {
            if s.state
                .get_mut()
                .upstream_fired(&s.def, name, requests, source)
            {
                s.dirty = true;
            }
        }
    }

    /// A request ended for good (finished, cancelled): the schedulers and
    /// waits that follow it learn its result; a dependent whose upstream
    /// builds all succeeded fires.
    pub(in crate::daemon::core) fn request_ended(
        &mut self,
        request: RequestId,
        result: BuildResult,
        now_ms: u64,
    ) {
        let mut firings = Vec::new();
        for s in self.schedulers.set.values_mut() {
            let (changed, fired) = s.state.get_mut().request_ended(&s.def, request, result);
            if changed {
                s.dirty = true;
            }
            firings.extend(fired.into_iter().map(|f| (s.def.clone(), f)));
        }
        for (def, firing) in firings {
            self.fire(&def, firing, now_ms);
        }
        self.save_schedulers();
        self.wait_request_ended(request, result, now_ms);
    }

    /// A request was merged into `into` (`collapse`).
    pub(in crate::daemon::core) fn request_collapsed(
        &mut self,
        request: RequestId,
        into: RequestId,
    ) {
        for s in self.schedulers.set.values_mut() {
            if s.state.get_mut().request_collapsed(request, into) {
                s.dirty = true;
            }
        }
        self.save_schedulers();
        self.wait_request_collapsed(request, into);
    }
}
