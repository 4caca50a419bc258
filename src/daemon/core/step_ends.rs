//! A worker's report that a step ended, and how builds end: the next step,
//! the build's result, its worker slot freed.

use crate::protocol::{BuildId, BuildResult, StepEnd, StepIndex, StepResult};

use super::{Core, CoreError, LinkId, Record};

impl Core {
    /// A worker reports that a step it was given has ended.
    pub fn step_ended(
        &mut self,
        link: LinkId,
        build_id: BuildId,
        step: StepIndex,
        end: StepEnd,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        let build = match self.builds.get(&build_id) {
            // A build waiting between steps for a lock has no step out (its
            // last step's end came in already), and a trigger step is the
            // master's own: no worker reports on either.
            Some(b)
                if b.link == Some(link)
                    && b.step == step
                    && b.pending_step.is_none()
                    && !self.is_waiting(build_id) =>
            {
                b
            }
            _ => {
                return Err(CoreError::NotYourStep {
                    link,
                    build: build_id,
                    step,
                });
            }
        };
        let step_name = build.def.steps[step as usize].name.clone();
        let last = step as usize + 1 >= build.def.steps.len();
        let stopping = build.stopping.clone();
        let (result, why) = step_outcome(&end, stopping.as_deref());
        // The step's own locks go with it, whatever comes next.
        self.locks
            .release(|h| h == super::locks::Holder::Step(build_id, step));
        self.record(Record::StepFinished {
            build: build_id,
            step,
            result,
            reason: why.clone(),
            at_ms: now_ms,
        });
        match (result, stopping) {
            (StepResult::Success, None) if !last => {
                self.begin_step(build_id, step + 1, now_ms);
                self.dispatch(now_ms);
            }
            (StepResult::Success, None) => {
                self.finish_build(build_id, BuildResult::Success, None, now_ms);
                self.dispatch(now_ms);
            }
            (StepResult::Success, Some(reason)) => {
                self.finish_build(build_id, BuildResult::Cancelled, Some(reason), now_ms);
                self.dispatch(now_ms);
            }
            (result, _) => {
                let reason = why.map(|w| format!("step `{step_name}` {w}"));
                self.finish_build(build_id, result, reason, now_ms);
                self.dispatch(now_ms);
            }
        }
        Ok(())
    }

    /// End a build from outside its step (stopped while its worker is
    /// away, given up after retries): its current step and the build end
    /// together, with the same result and reason.
    pub(super) fn end_build_at_step(
        &mut self,
        id: BuildId,
        step: StepIndex,
        result: BuildResult,
        reason: String,
        now_ms: u64,
    ) {
        // Between steps (waiting for a lock) no step is out: the last
        // one's end is recorded already.
        if self
            .builds
            .get(&id)
            .is_none_or(|b| b.pending_step.is_none())
        {
            self.record(Record::StepFinished {
                build: id,
                step,
                result,
                reason: Some(reason.clone()),
                at_ms: now_ms,
            });
        }
        self.finish_build(id, result, Some(reason), now_ms);
    }

    /// End a running build: record it, free its worker slot, and close the
    /// worker's link if it was draining and is now idle.
    pub(super) fn finish_build(
        &mut self,
        id: BuildId,
        result: BuildResult,
        reason: Option<String>,
        now_ms: u64,
    ) {
        let Some(build) = self.builds.remove(&id) else {
            return;
        };
        self.release_locks(id);
        self.requests.remove(&build.request);
        self.record(Record::BuildFinished {
            build: id,
            request: build.request,
            result,
            reason,
            at_ms: now_ms,
        });
        self.forget_wait(id);
        if let Some(worker) = self.workers.get_mut(&build.worker) {
            worker.running.remove(&id);
        }
        self.close_if_drained(&build.worker);
        self.request_ended(build.request, result, now_ms);
    }
}

/// What a step's end means for the build, and why in words.
fn step_outcome(end: &StepEnd, stopping: Option<&str>) -> (StepResult, Option<String>) {
    match end {
        StepEnd::Exited { code: 0 } => (StepResult::Success, None),
        StepEnd::Exited { code } => (
            StepResult::Failure,
            Some(format!("exited with code {code}")),
        ),
        StepEnd::Signalled { signal } => (
            StepResult::Failure,
            Some(format!("was killed by signal {signal}")),
        ),
        StepEnd::TimedOut { after_ms } => (
            StepResult::Failure,
            Some(format!(
                "timed out after {}",
                humantime::format_duration(std::time::Duration::from_millis(*after_ms))
            )),
        ),
        StepEnd::Stopped => (
            StepResult::Cancelled,
            Some(stopping.unwrap_or("was stopped").to_string()),
        ),
        StepEnd::SpawnFailed { error } => (
            StepResult::Exception,
            Some(format!("could not start: {error}")),
        ),
        StepEnd::TransferFailed { error } => (
            StepResult::Failure,
            Some(format!("transfer failed: {error}")),
        ),
        StepEnd::OutputLost { error } => {
            (StepResult::Exception, Some(format!("output lost: {error}")))
        }
    }
}
