//! The master's own deadlines: a worker is trusted to enforce a step's
//! timeout and to obey `bbctl stop`, but not forever.
//!
//! A step given to a link must end within its timeout plus
//! `[master] deadline_grace` (counted from when it started, or from when a
//! reconnecting worker resumed it), and a stopped build within the grace
//! after the stop. Past that, the core ends the build itself (`failure`
//! for a timeout, `cancelled` for a stop, the reason saying the worker did
//! not end the step), tells the worker to abandon the step, and frees the
//! worker's slot. The link then treats anything more the worker says about
//! that step as a protocol error and closes (see `worker_link/link.rs`); a late
//! report that reaches the core anyway is refused as not the link's step.

use std::collections::BTreeMap;

use crate::protocol::{BuildId, BuildResult, StepIndex};

use super::{Core, Effect, RunningBuild, WorkerCmd};

/// What the core remembers for deadlines beyond the running builds.
#[derive(Debug, Clone, Default)]
pub(super) struct Deadlines {
    /// When a stop of a build whose worker was connected was asked for.
    stops: BTreeMap<BuildId, u64>,
    /// When a reconnecting worker resumed a build's step: its timeout and
    /// its stop are counted from there at the earliest (the master may not
    /// know when a step started before it restarted, and a worker that
    /// lost its link gets the whole grace to report an end it kept).
    resumed: BTreeMap<BuildId, (StepIndex, u64)>,
}

/// Why the master gives up on a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// Past its timeout plus the grace.
    Timeout,
    /// Past a stop plus the grace.
    Stop,
}

impl Core {
    /// Remember when a build was asked to stop (its worker is connected).
    pub(super) fn note_stop(&mut self, build: BuildId, now_ms: u64) {
        self.deadlines.stops.entry(build).or_insert(now_ms);
    }

    /// Remember that a reconnecting worker resumed a build's step now.
    pub(super) fn note_resumed(&mut self, build: BuildId, step: StepIndex, now_ms: u64) {
        self.deadlines.resumed.insert(build, (step, now_ms));
    }

    /// The master's deadline for a build's current step, and what it is
    /// for; `None` while its worker is away (the worker grace applies) or
    /// when the step has no timeout and no stop was asked for.
    pub(super) fn master_deadline(&self, b: &RunningBuild) -> Option<(u64, Overdue)> {
        b.link?;
        if b.pending_step.is_some() {
            // Between steps, waiting for a lock: no step is out.
            return None;
        }
        let grace = self.config.master.worker_limits.deadline_grace.as_millis() as u64;
        let resumed = match self.deadlines.resumed.get(&b.id) {
            Some((step, at)) if *step == b.step => *at,
            _ => 0,
        };
        let stop = self
            .deadlines
            .stops
            .get(&b.id)
            .filter(|_| b.stopping.is_some())
            .map(|at| ((*at).max(resumed).saturating_add(grace), Overdue::Stop));
        let timeout = b.def.steps.get(b.step as usize).and_then(|s| s.timeout);
        let started = b.step_started_at_ms.max(resumed);
        let timed = timeout.map(|t| {
            (
                started
                    .saturating_add(t.as_millis() as u64)
                    .saturating_add(grace),
                Overdue::Timeout,
            )
        });
        match (stop, timed) {
            (Some(s), Some(t)) => Some(if t.0 < s.0 { t } else { s }),
            (s, t) => s.or(t),
        }
    }

    /// The earliest master deadline of any running build.
    pub(super) fn next_master_deadline(&self) -> Option<u64> {
        self.builds
            .values()
            .filter_map(|b| self.master_deadline(b))
            .map(|(at, _)| at)
            .min()
    }

    /// End the builds whose worker let a deadline pass, abandoning their
    /// steps; forget what ended builds left behind.
    pub(super) fn enforce_deadlines(&mut self, now_ms: u64) {
        let builds = &self.builds;
        self.deadlines.stops.retain(|id, _| builds.contains_key(id));
        self.deadlines
            .resumed
            .retain(|id, _| builds.contains_key(id));
        let overdue: Vec<(BuildId, StepIndex, super::LinkId, Overdue)> = self
            .builds
            .values()
            .filter_map(|b| {
                let (at, why) = self.master_deadline(b)?;
                Some((b.id, b.step, b.link?, why)).filter(|_| at <= now_ms)
            })
            .collect();
        if overdue.is_empty() {
            return;
        }
        let grace = humantime::format_duration(self.config.master.worker_limits.deadline_grace);
        for (id, step, link, why) in overdue {
            let Some(b) = self.builds.get(&id) else {
                continue;
            };
            let def = &b.def.steps[step as usize];
            let (result, reason) = match why {
                Overdue::Timeout => (
                    BuildResult::Failure,
                    format!(
                        "step `{}` timed out after {}; worker `{}` did not end it within the {grace} grace, so the master ended the build and abandoned the step",
                        def.name,
                        humantime::format_duration(def.timeout.unwrap_or_default()),
                        b.worker
                    ),
                ),
                Overdue::Stop => (
                    BuildResult::Cancelled,
                    format!(
                        "{}; worker `{}` did not stop step `{}` within the {grace} grace, so the master ended the build and abandoned the step",
                        b.stopping.as_deref().unwrap_or("stopped"),
                        b.worker,
                        def.name
                    ),
                ),
            };
            self.effects.push(Effect::ToWorker {
                link,
                cmd: WorkerCmd::Abandon { build: id, step },
            });
            self.end_build_at_step(id, step, result, reason, now_ms);
            self.deadlines.stops.remove(&id);
            self.deadlines.resumed.remove(&id);
        }
        self.dispatch(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::tests::config;
    use super::*;
    use crate::protocol::StepEnd;

    /// One worker `w` on link 1, builder `b` of one step with `timeout`,
    /// one build running since t=0.
    fn running(timeout: Option<Duration>) -> Core {
        let mut cfg = (*config(&[("w", 1)], &[("b", &["w"], 1)])).clone();
        cfg.builders[0].steps[0].timeout = timeout;
        let mut core = Core::new(Arc::new(cfg), Default::default(), 0);
        core.worker_connected("w", 1, &[], 0).unwrap();
        core.force_build("b", None, BTreeMap::new(), 0).unwrap();
        core.take_effects();
        core
    }

    fn ends(core: &mut Core) -> (Vec<(BuildResult, Option<String>)>, bool) {
        let effects = core.take_effects();
        let abandoned = effects.iter().any(|e| {
            matches!(
                e,
                Effect::ToWorker {
                    link: 1,
                    cmd: WorkerCmd::Abandon { build: 1, step: 0 }
                }
            )
        });
        let finished = effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Record(super::super::Record::BuildFinished { result, reason, .. }) => {
                    Some((result, reason))
                }
                _ => None,
            })
            .collect();
        (finished, abandoned)
    }

    #[test]
    fn a_step_past_its_timeout_and_the_grace_ends_its_build() {
        let mut core = running(Some(Duration::from_secs(10)));
        assert_eq!(core.next_deadline(), Some(40_000), "10 s + 30 s grace");
        core.tick(39_999);
        assert_eq!(ends(&mut core), (vec![], false));
        core.tick(40_000);
        let (finished, abandoned) = ends(&mut core);
        assert!(abandoned, "the worker is told to abandon the step");
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].0, BuildResult::Failure);
        let reason = finished[0].1.as_deref().unwrap();
        assert!(
            reason.contains("did not end it within the 30s grace"),
            "{reason}"
        );
        assert!(core.running_build(1).is_none());
        // The worker's late report is refused: the step is no longer its.
        assert!(
            core.step_ended(1, 1, 0, StepEnd::Exited { code: 0 }, 41_000)
                .is_err()
        );
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn a_stop_the_worker_ignores_ends_the_build_after_the_grace() {
        let mut core = running(None);
        assert_eq!(core.next_deadline(), None, "no timeout, no stop");
        core.stop_build(1, "stopped by alice", 5_000).unwrap();
        core.take_effects();
        assert_eq!(core.next_deadline(), Some(35_000));
        core.tick(35_000);
        let (finished, abandoned) = ends(&mut core);
        assert!(abandoned);
        assert_eq!(finished[0].0, BuildResult::Cancelled);
        let reason = finished[0].1.as_deref().unwrap();
        assert!(
            reason.starts_with("stopped by alice; worker `w` did not stop step `s0`"),
            "{reason}"
        );
    }

    #[test]
    fn a_resumed_step_gets_its_time_from_the_resume() {
        let mut core = running(Some(Duration::from_secs(10)));
        core.stop_build(1, "stop", 1_000).unwrap();
        core.worker_lost(1, 2_000);
        core.worker_connected(
            "w",
            2,
            &[crate::protocol::RunningStep { build: 1, step: 0 }],
            20_000,
        )
        .unwrap();
        let effects = core.take_effects();
        assert!(
            effects.iter().any(|e| matches!(
                e,
                Effect::ToWorker {
                    link: 2,
                    cmd: WorkerCmd::Stop { build: 1, step: 0 }
                }
            )),
            "the stop is asked again on the new link: {effects:?}"
        );
        assert_eq!(core.next_deadline(), Some(50_000));
        core.tick(49_999);
        assert!(core.running_build(1).is_some());
        // An honest worker reports in time: nothing is overdue.
        core.step_ended(2, 1, 0, StepEnd::Stopped, 49_999).unwrap();
        assert_eq!(core.next_deadline(), None);
    }

    #[test]
    fn the_earlier_of_a_timeout_and_a_stop_counts() {
        // Timeout deadline 40 s (10 s + grace), stop deadline 50 s.
        let mut core = running(Some(Duration::from_secs(10)));
        core.stop_build(1, "stop", 20_000).unwrap();
        core.take_effects();
        assert_eq!(core.next_deadline(), Some(40_000));
        core.tick(40_000);
        let (finished, abandoned) = ends(&mut core);
        assert!(abandoned);
        assert_eq!(finished.len(), 1, "ended at the timeout's deadline");

        // Stop deadline 35 s, timeout deadline 40 s.
        let mut core = running(Some(Duration::from_secs(10)));
        core.stop_build(1, "stop", 5_000).unwrap();
        core.take_effects();
        assert_eq!(core.next_deadline(), Some(35_000));
    }

    #[test]
    fn at_a_tie_the_stop_is_the_reason() {
        // Both deadlines at 40 s: the person's stop is what the build ends by.
        let mut core = running(Some(Duration::from_secs(10)));
        core.stop_build(1, "stopped by alice", 10_000).unwrap();
        core.take_effects();
        core.tick(40_000);
        let (finished, _) = ends(&mut core);
        assert_eq!(finished[0].0, BuildResult::Cancelled);
        let reason = finished[0].1.as_deref().unwrap();
        assert!(reason.starts_with("stopped by alice"), "{reason}");
    }
}
