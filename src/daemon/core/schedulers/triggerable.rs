//! `triggerable` schedulers and the `trigger` step that fires them.
//!
//! A trigger step is run by the master, not by a worker: it queues one
//! request per builder of each named scheduler (with the triggering
//! build's properties, the step's own over them, and its source stamp).
//! With `wait = true` the step then waits: the requests it queued, each
//! with its result once known, are durable state (`Record::SchedulerState`
//! named `trigger:<build>`, kind `trigger-wait`; `:` cannot be in a
//! scheduler's name, so it never collides with one), written in the same
//! batch as the requests and as every result that arrives. A reload does
//! not touch it (the build runs with the definition it started with); a
//! master restart reads it back and re-attaches: nothing is triggered
//! twice. The step ends with the worst result of the triggered builds,
//! once the last one ends. Stopping the triggering build ends the wait
//! (`cancelled`); the triggered builds go on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{SchedulerKind, StepAction, TriggerSpec};
use crate::protocol::{BuildId, BuildResult, RequestId, StepIndex};

use super::super::{Core, Record};

/// The kind word a wait's state is stored under.
pub const WAIT_KIND: &str = "trigger-wait";

/// The state name of build `id`'s wait.
pub fn wait_name(id: BuildId) -> String {
    format!("trigger:{id}")
}

/// A trigger step waiting for the builds it triggered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    /// The trigger step.
    pub step: StepIndex,
    /// Every request it queued, with its result once it ended.
    pub requests: BTreeMap<RequestId, Option<BuildResult>>,
}

impl Wait {
    /// The worst result, once every request ended.
    pub fn outcome(&self) -> Option<BuildResult> {
        let mut worst = BuildResult::Success;
        for r in self.requests.values() {
            let r = (*r)?;
            if rank(r) > rank(worst) {
                worst = r;
            }
        }
        Some(worst)
    }
}

/// How bad a result is, for "the worst of the triggered builds".
fn rank(r: BuildResult) -> u8 {
    match r {
        BuildResult::Success => 0,
        BuildResult::Skipped => 1,
        BuildResult::Failure => 2,
        BuildResult::Exception => 3,
        BuildResult::Retry => 4,
        BuildResult::Cancelled => 5,
    }
}

impl Core {
    /// Run step `step` of build `id`, a trigger step, now: queue the
    /// triggered requests, and end the step at once or wait.
    pub(in crate::daemon::core) fn start_trigger(
        &mut self,
        id: BuildId,
        step: StepIndex,
        spec: &TriggerSpec,
        now_ms: u64,
    ) {
        let Some(build) = self.builds.get(&id) else {
            return;
        };
        let step_name = build.def.steps[step as usize].name.clone();
        let (mut properties, source) = self
            .requests
            .get(&build.request)
            .map(|r| (r.properties.clone(), r.source.clone()))
            .unwrap_or_default();
        properties.extend(spec.properties.clone());
        // Check everything first: a step that cannot trigger all triggers none.
        let mut targets: Vec<(String, String)> = Vec::new();
        for name in &spec.schedulers {
            let builders = match self.config.scheduler(name).map(|s| (&s.kind, &s.builders)) {
                Some((SchedulerKind::Triggerable, builders)) => builders.clone(),
                Some((kind, _)) => {
                    let why = format!(
                        "scheduler `{name}` is of kind \"{}\" in the config in force, not \"triggerable\"",
                        kind.name()
                    );
                    return self.trigger_step_done(
                        id,
                        step,
                        BuildResult::Failure,
                        Some(why),
                        now_ms,
                    );
                }
                None => {
                    let why = format!("no scheduler `{name}` in the config in force");
                    return self.trigger_step_done(
                        id,
                        step,
                        BuildResult::Failure,
                        Some(why),
                        now_ms,
                    );
                }
            };
            for b in builders {
                targets.push((name.clone(), b));
            }
        }
        if self.shutdown {
            let why = "the master is shutting down and queues nothing".to_string();
            return self.trigger_step_done(id, step, BuildResult::Cancelled, Some(why), now_ms);
        }
        let max = self.config.master.max_queued as usize;
        for (_, b) in &targets {
            let queued = self.builders.get(b).map(|s| s.queue.len());
            let queued_here = targets.iter().filter(|(_, o)| o == b).count();
            if queued.is_none_or(|n| n + queued_here > max) {
                let why = match queued {
                    None => format!("builder `{b}` does not exist"),
                    Some(_) => format!("builder `{b}` has {max} requests queued (max_queued)"),
                };
                return self.trigger_step_done(id, step, BuildResult::Failure, Some(why), now_ms);
            }
        }
        let mut requests = BTreeMap::new();
        let mut fired: BTreeMap<String, Vec<RequestId>> = BTreeMap::new();
        for (scheduler, builder) in targets {
            let reason =
                format!("scheduler {scheduler}: triggered by build {id}, step `{step_name}`");
            let r = self.queue_request(
                &builder,
                Some(reason),
                properties.clone(),
                0,
                source.clone(),
                now_ms,
            );
            requests.insert(r, None);
            fired.entry(scheduler).or_default().push(r);
        }
        for (scheduler, ids) in fired {
            self.scheduler_fired(&scheduler, &ids, &source);
        }
        self.save_schedulers();
        if spec.wait && !requests.is_empty() {
            let wait = Wait { step, requests };
            self.save_wait(id, Some(&wait));
            self.timers.waits.insert(id, wait);
        } else {
            self.trigger_step_done(id, step, BuildResult::Success, None, now_ms);
        }
        if !self.timers.applying {
            self.dispatch(now_ms);
        }
    }

    /// A triggered request ended: note its result; a wait whose last
    /// request ended ends its step.
    pub(in crate::daemon::core) fn wait_request_ended(
        &mut self,
        request: RequestId,
        result: BuildResult,
        now_ms: u64,
    ) {
        let waiting: Vec<BuildId> = self
            .timers
            .waits
            .iter()
            .filter(|(_, w)| w.requests.get(&request).is_some_and(Option::is_none))
            .map(|(b, _)| *b)
            .collect();
        for build in waiting {
            let Some(wait) = self.timers.waits.get_mut(&build) else {
                continue;
            };
            wait.requests.insert(request, Some(result));
            let Some(outcome) = wait.outcome() else {
                let wait = wait.clone();
                self.save_wait(build, Some(&wait));
                continue;
            };
            let Some(wait) = self.timers.waits.remove(&build) else {
                continue;
            };
            self.save_wait(build, None);
            let why = (outcome != BuildResult::Success).then(|| {
                let bad: Vec<String> = wait
                    .requests
                    .iter()
                    .filter(|(_, r)| **r != Some(BuildResult::Success))
                    .map(|(id, r)| format!("r{id} {}", r.map_or("?", |r| r.as_str())))
                    .collect();
                format!("triggered builds ended: {}", bad.join(", "))
            });
            self.trigger_step_done(build, wait.step, outcome, why, now_ms);
        }
    }

    /// A triggered request was merged into `into` (`collapse`): the wait
    /// follows the request that runs for it.
    pub(in crate::daemon::core) fn wait_request_collapsed(
        &mut self,
        request: RequestId,
        into: RequestId,
    ) {
        let builds: Vec<BuildId> = self
            .timers
            .waits
            .iter()
            .filter(|(_, w)| w.requests.get(&request).is_some_and(Option::is_none))
            .map(|(b, _)| *b)
            .collect();
        for build in builds {
            if let Some(wait) = self.timers.waits.get_mut(&build) {
                wait.requests.remove(&request);
                wait.requests.entry(into).or_insert(None);
                let wait = wait.clone();
                self.save_wait(build, Some(&wait));
            }
        }
    }

    /// Stopping a build that waits: the wait ends `cancelled` now (the
    /// worker runs nothing for it). `false` if the build does not wait.
    pub(in crate::daemon::core) fn stop_waiting(
        &mut self,
        id: BuildId,
        reason: &str,
        now_ms: u64,
    ) -> bool {
        let Some(wait) = self.timers.waits.remove(&id) else {
            return false;
        };
        self.save_wait(id, None);
        self.trigger_step_done(
            id,
            wait.step,
            BuildResult::Cancelled,
            Some(reason.to_string()),
            now_ms,
        );
        true
    }

    /// A build ended or was retried: its wait, if any, ends with it (the
    /// triggered builds go on; a retried build triggers anew).
    pub(in crate::daemon::core) fn forget_wait(&mut self, id: BuildId) {
        if self.timers.waits.remove(&id).is_some() {
            self.save_wait(id, None);
        }
    }

    /// Whether build `id` is waiting in a trigger step (its worker runs
    /// nothing for it).
    pub(in crate::daemon::core) fn is_waiting(&self, id: BuildId) -> bool {
        self.timers.waits.contains_key(&id)
    }

    /// A trigger step ended: the build goes on like after a worker's step.
    fn trigger_step_done(
        &mut self,
        id: BuildId,
        step: StepIndex,
        result: BuildResult,
        why: Option<String>,
        now_ms: u64,
    ) {
        let Some(build) = self.builds.get(&id) else {
            return;
        };
        if build.step != step {
            return;
        }
        let step_name = build.def.steps[step as usize].name.clone();
        let last = step as usize + 1 >= build.def.steps.len();
        let stopping = build.stopping.clone();
        self.record(Record::StepFinished {
            build: id,
            step,
            result,
            reason: why.clone(),
            at_ms: now_ms,
        });
        match (result, stopping) {
            (BuildResult::Success, None) if !last => self.begin_step(id, step + 1, now_ms),
            (BuildResult::Success, None) => {
                self.finish_build(id, BuildResult::Success, None, now_ms);
            }
            (BuildResult::Success, Some(reason)) => {
                self.finish_build(id, BuildResult::Cancelled, Some(reason), now_ms);
            }
            (result, _) => {
                let reason = why.map(|w| format!("step `{step_name}`: {w}"));
                self.finish_build(id, result, reason, now_ms);
            }
        }
        if !self.timers.applying {
            self.dispatch(now_ms);
        }
    }

    /// Record a wait's state (`None`: it ended).
    fn save_wait(&mut self, id: BuildId, wait: Option<&Wait>) {
        self.record(Record::SchedulerState {
            name: wait_name(id),
            kind: WAIT_KIND.to_string(),
            state: wait.map(|w| serde_json::to_string(w).expect("plain data serializes")),
        });
    }

    /// After a restart: the waits of builds that were in a trigger step,
    /// from their saved state. A saved wait whose build no longer runs is
    /// forgotten; a build in a waiting trigger step without one (which a
    /// batch cannot leave behind) fails that step rather than trigger again.
    pub(in crate::daemon::core) fn restore_waits(&mut self, now_ms: u64) {
        let saved: Vec<(String, String)> = self
            .timers
            .saved
            .iter()
            .filter(|(_, s)| s.kind == WAIT_KIND)
            .map(|(n, s)| (n.clone(), s.state.clone()))
            .collect();
        for (name, _) in &saved {
            self.timers.saved.remove(name);
        }
        let mut found: BTreeMap<BuildId, Wait> = BTreeMap::new();
        for (name, state) in saved {
            let parsed = name
                .strip_prefix("trigger:")
                .and_then(|n| n.parse::<BuildId>().ok())
                .zip(serde_json::from_str::<Wait>(&state).ok());
            match parsed {
                Some((build, wait))
                    if self.builds.get(&build).is_some_and(|b| b.step == wait.step) =>
                {
                    found.insert(build, wait);
                }
                _ => self.record(Record::SchedulerState {
                    name,
                    kind: WAIT_KIND.to_string(),
                    state: None,
                }),
            }
        }
        let in_trigger: Vec<(BuildId, StepIndex, bool)> = self
            .builds
            .values()
            .filter_map(|b| match &b.def.steps[b.step as usize].action {
                StepAction::Trigger(t) => Some((b.id, b.step, t.wait)),
                _ => None,
            })
            .collect();
        for (build, step, wait) in in_trigger {
            match found.remove(&build) {
                Some(w) => {
                    self.timers.waits.insert(build, w);
                }
                None if wait => self.trigger_step_done(
                    build,
                    step,
                    BuildResult::Exception,
                    Some("its wait was not found after a master restart".into()),
                    now_ms,
                ),
                // Not waiting: it ended in the batch that started it.
                None => {}
            }
        }
        // A triggered request that ended before the restart had its result
        // recorded with it; one that is gone without a result (cancelled
        // by the restart's config) ends the wait's count as an exception.
        let gone: Vec<RequestId> = self
            .timers
            .waits
            .values()
            .flat_map(|w| w.requests.iter())
            .filter(|(r, res)| res.is_none() && !self.requests.contains_key(r))
            .map(|(r, _)| *r)
            .collect();
        for r in gone {
            self.wait_request_ended(r, BuildResult::Exception, now_ms);
        }
        let done: Vec<(BuildId, StepIndex, BuildResult)> = self
            .timers
            .waits
            .iter()
            .filter_map(|(b, w)| Some((*b, w.step, w.outcome()?)))
            .collect();
        for (b, step, outcome) in done {
            self.timers.waits.remove(&b);
            self.save_wait(b, None);
            self.trigger_step_done(b, step, outcome, None, now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_result_wins_once_all_ended() {
        let mut w = Wait {
            step: 0,
            requests: BTreeMap::from([(1, Some(BuildResult::Success)), (2, None)]),
        };
        assert_eq!(w.outcome(), None);
        w.requests.insert(2, Some(BuildResult::Failure));
        assert_eq!(w.outcome(), Some(BuildResult::Failure));
        w.requests.insert(3, Some(BuildResult::Cancelled));
        assert_eq!(w.outcome(), Some(BuildResult::Cancelled));
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<Wait>(&json).unwrap(), w);
    }
}
