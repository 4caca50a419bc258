//! Waiting `trigger` steps that could never end (cycles, locks, worker
//! slots): the findings of [`crate::config::deadlocks`] reported at the
//! step's `trigger`, as problems or as warnings.

use super::super::deadlocks::trigger_deadlocks;
use super::super::model::{BuilderDef, SchedulerDef, WorkerDef};
use super::super::raw::RawBuilder;
use super::Checker;

impl Checker<'_> {
    /// Report every finding at its trigger step; run on a config that is
    /// otherwise valid (a broken one would give findings of its gaps).
    pub(super) fn trigger_deadlocks(
        &mut self,
        raw: &[RawBuilder],
        builders: &[BuilderDef],
        schedulers: &[SchedulerDef],
        workers: &[WorkerDef],
    ) {
        let locks = std::mem::take(&mut self.locks);
        for f in trigger_deadlocks(builders, schedulers, &locks, workers) {
            let step = raw
                .iter()
                .find(|b| *b.name.get_ref() == f.builder)
                .and_then(|b| b.step.as_ref())
                .and_then(|steps| steps.get_ref().get(f.step));
            let Some(step) = step else { continue };
            let at = step
                .trigger
                .as_ref()
                .map_or_else(|| step.name.span(), |t| t.span());
            if f.refused {
                self.report(&at, f.message);
            } else {
                self.warn(&at, f.message);
            }
        }
        self.locks = locks;
    }
}
