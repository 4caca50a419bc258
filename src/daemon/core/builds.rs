//! Inputs about requests, builds and worker links.

use std::collections::BTreeMap;

use crate::protocol::{
    BuildId, BuildResult, RequestId, RunningStep, StepEnd, StepIndex, StepResult,
};

use super::{Core, CoreError, Effect, LinkId, LiveRequest, Record, WorkerCmd};

/// Most properties one request may carry.
pub const MAX_PROPERTIES: usize = 64;

/// Longest property value, in bytes.
pub const MAX_PROPERTY_VALUE: usize = 4096;

/// Properties become environment variables: names must fit one, values
/// must be representable (no NUL byte) and reasonably small.
fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(CoreError::TooManyProperties(properties.len()));
    }
    for (name, value) in properties {
        if !valid_property_name(name) {
            return Err(CoreError::BadPropertyName(name.clone()));
        }
        let why = if value.contains('\0') {
            "it contains a NUL byte".to_string()
        } else if value.len() > MAX_PROPERTY_VALUE {
            format!("{} bytes long, at most {MAX_PROPERTY_VALUE}", value.len())
        } else {
            continue;
        };
        return Err(CoreError::BadPropertyValue {
            name: name.clone(),
            why,
        });
    }
    Ok(())
}

/// Whether `name` can become part of an environment variable name.
pub fn valid_property_name(name: &str) -> bool {
    if name.len() > 128 {
        return false;
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Core {
    /// Accept a build request of priority 0; see [`Core::force_build_with_priority`].
    pub fn force_build(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        now_ms: u64,
    ) -> Result<RequestId, CoreError> {
        self.force_build_with_priority(builder, reason, properties, 0, now_ms)
    }

    /// Accept a build request; higher priorities run first, then oldest
    /// first. The [`Record::RequestQueued`] effect must be stored before
    /// the id is told to anyone.
    pub fn force_build_with_priority(
        &mut self,
        builder: &str,
        reason: Option<String>,
        properties: BTreeMap<String, String>,
        priority: i32,
        now_ms: u64,
    ) -> Result<RequestId, CoreError> {
        if self.shutdown {
            return Err(CoreError::Draining);
        }
        if !self.builders.contains_key(builder) {
            if let Some(b) = self
                .config
                .builders
                .iter()
                .find(|b| b.previous_names.iter().any(|p| p == builder))
            {
                return Err(CoreError::RenamedBuilder {
                    old: builder.to_string(),
                    new: b.name.clone(),
                });
            }
            return Err(CoreError::UnknownBuilder(builder.to_string()));
        }
        check_properties(&properties)?;
        let max = self.config.master.max_queued;
        if self
            .builders
            .get(builder)
            .is_some_and(|b| b.queue.len() >= max as usize)
        {
            return Err(CoreError::QueueFull {
                builder: builder.to_string(),
                max,
            });
        }
        let id = self.next_request;
        self.next_request += 1;
        self.record(Record::RequestQueued {
            request: id,
            builder: builder.to_string(),
            reason: reason.clone(),
            properties: properties.clone(),
            priority,
            at_ms: now_ms,
        });
        self.requests.insert(
            id,
            LiveRequest {
                id,
                builder: builder.to_string(),
                reason,
                properties,
                build: None,
                retries: 0,
                priority,
                submitted_at_ms: now_ms,
            },
        );
        self.enqueue(builder, id);
        self.dispatch(now_ms);
        Ok(id)
    }

    /// Cancel a queued request; a running one has its build stopped.
    pub fn cancel_request(
        &mut self,
        id: RequestId,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        let req = self
            .requests
            .get(&id)
            .ok_or(CoreError::RequestNotLive(id))?;
        if let Some(build) = req.build {
            return self.stop_build(build, reason, now_ms);
        }
        let builder = req.builder.clone();
        if let Some(state) = self.builders.get_mut(&builder) {
            state.queue.retain(|r| *r != id);
        }
        self.requests.remove(&id);
        self.record(Record::RequestCancelled {
            request: id,
            reason: reason.to_string(),
            at_ms: now_ms,
        });
        Ok(())
    }

    /// Ask the worker to stop a running build's current step; the build
    /// ends `cancelled` when the worker reports the step's end.
    pub fn stop_build(&mut self, id: BuildId, reason: &str, now_ms: u64) -> Result<(), CoreError> {
        let build = self
            .builds
            .get_mut(&id)
            .ok_or(CoreError::BuildNotRunning(id))?;
        if build.stopping.is_some() {
            return Ok(());
        }
        build.stopping = Some(reason.to_string());
        let step = build.step;
        match build.link {
            Some(link) => {
                self.note_stop(id, now_ms);
                self.effects.push(super::Effect::ToWorker {
                    link,
                    cmd: WorkerCmd::Stop { build: id, step },
                });
            }
            None => {
                // Its worker is away: end it now. If the worker comes back
                // still holding the step, it is told to abandon it.
                self.end_build_at_step(
                    id,
                    step,
                    BuildResult::Cancelled,
                    reason.to_string(),
                    now_ms,
                );
                self.dispatch(now_ms);
            }
        }
        Ok(())
    }

    /// A worker proved who it is on a new link, holding the steps `held`
    /// (running, or ended with the end not yet reported). Builds waiting
    /// for this worker take their steps back; steps the master no longer
    /// wants are abandoned; builds whose step the worker lost are retried.
    pub fn worker_connected(
        &mut self,
        name: &str,
        link: LinkId,
        held: &[RunningStep],
        now_ms: u64,
    ) -> Result<(), CoreError> {
        let worker = self
            .workers
            .get_mut(name)
            .ok_or_else(|| CoreError::UnknownWorker(name.to_string()))?;
        if worker.removed {
            return Err(CoreError::WorkerRemoved(name.to_string()));
        }
        if worker.link.is_some() {
            return Err(CoreError::WorkerAlreadyConnected(name.to_string()));
        }
        worker.link = Some(link);
        // A worker drained for new credentials comes back clean.
        worker.draining = None;
        self.links.insert(link, name.to_string());
        for h in held {
            match self.builds.get_mut(&h.build) {
                Some(b) if b.worker == name && b.link.is_none() && b.step == h.step => {
                    b.link = Some(link);
                    b.orphaned_until = None;
                    let stopping = b.stopping.is_some();
                    self.note_resumed(h.build, h.step, now_ms);
                    self.effects.push(Effect::ToWorker {
                        link,
                        cmd: WorkerCmd::Resume {
                            build: h.build,
                            step: h.step,
                        },
                    });
                    if stopping {
                        // The stop may have been lost with the old link:
                        // ask again (the master's deadline counts from now).
                        self.effects.push(Effect::ToWorker {
                            link,
                            cmd: WorkerCmd::Stop {
                                build: h.build,
                                step: h.step,
                            },
                        });
                    }
                }
                _ => self.effects.push(Effect::ToWorker {
                    link,
                    cmd: WorkerCmd::Abandon {
                        build: h.build,
                        step: h.step,
                    },
                }),
            }
        }
        let lost: Vec<BuildId> = self
            .builds
            .values()
            .filter(|b| b.worker == name && b.link.is_none())
            .map(|b| b.id)
            .collect();
        for id in lost {
            self.retry_build(
                id,
                format!(
                    "worker `{name}` came back without the build's step (it never received it, or lost it)"
                ),
                now_ms,
            );
        }
        self.dispatch(now_ms);
        Ok(())
    }

    /// Pause or resume one worker (`bbctl drain --worker` / `undrain`): a
    /// paused worker finishes what it runs and takes nothing new, but stays
    /// connected.
    pub fn set_worker_paused(
        &mut self,
        name: &str,
        paused: bool,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        let worker = self
            .workers
            .get_mut(name)
            .ok_or_else(|| CoreError::UnknownWorker(name.to_string()))?;
        worker.paused = paused;
        if !paused {
            self.dispatch(now_ms);
        }
        Ok(())
    }

    /// Builds running on a worker (for `drain --wait`).
    pub fn builds_on(&self, worker: &str) -> usize {
        self.workers.get(worker).map_or(0, |w| w.running.len())
    }

    /// Time passes: builds whose worker stayed away past the grace period
    /// are retried; builds whose worker let the master's own deadline pass
    /// end (see `deadlines.rs`).
    pub fn tick(&mut self, now_ms: u64) {
        self.enforce_deadlines(now_ms);
        let expired: Vec<(BuildId, String)> = self
            .builds
            .values()
            .filter(|b| b.orphaned_until.is_some_and(|t| t <= now_ms))
            .map(|b| (b.id, b.worker.clone()))
            .collect();
        if expired.is_empty() {
            return;
        }
        let grace = humantime::format_duration(self.config.master.worker_grace);
        for (id, worker) in expired {
            self.retry_build(
                id,
                format!("worker `{worker}` did not come back within {grace}"),
                now_ms,
            );
        }
        self.dispatch(now_ms);
    }

    /// When the next orphaned build gives up on its worker, if any: the
    /// shell's timer need not wake before.
    pub fn next_deadline(&self) -> Option<u64> {
        let orphaned = self.builds.values().filter_map(|b| b.orphaned_until).min();
        match (orphaned, self.next_master_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// End a build whose worker is gone for good: `retry` and its request
    /// queued again in order, or `exception` past `max_retries`, when its
    /// builder is gone, or when its definition says `retry = false` (a
    /// build that must never run twice).
    pub(super) fn retry_build(&mut self, id: BuildId, reason: String, now_ms: u64) {
        let Some(build) = self.builds.get(&id) else {
            return;
        };
        let (request, step, builder) = (build.request, build.step, build.builder.clone());
        let may_retry = build.def.retry;
        let retries = self.requests.get(&request).map_or(0, |r| r.retries);
        let max = self.config.master.max_retries;
        if !may_retry || retries >= max || !self.builders.contains_key(&builder) {
            let why = if !may_retry {
                format!("{reason}; not run again (retry = false)")
            } else if retries >= max {
                format!("{reason}; gave up after {retries} retries (max_retries = {max})")
            } else {
                format!("{reason}; builder `{builder}` no longer exists")
            };
            self.end_build_at_step(id, step, BuildResult::Exception, why, now_ms);
            return;
        }
        self.record(Record::StepFinished {
            build: id,
            step,
            result: BuildResult::Retry,
            reason: Some(reason.clone()),
            at_ms: now_ms,
        });
        let Some(build) = self.builds.remove(&id) else {
            return;
        };
        if let Some(worker) = self.workers.get_mut(&build.worker) {
            worker.running.remove(&id);
        }
        self.record(Record::BuildRetried {
            build: id,
            request,
            reason,
            at_ms: now_ms,
        });
        if let Some(req) = self.requests.get_mut(&request) {
            req.build = None;
            req.retries += 1;
        }
        // Back at its place: by priority, then older requests first.
        self.enqueue(&builder, request);
        self.close_if_drained(&build.worker);
    }

    /// A worker's link is gone. Its builds wait for it to come back (with
    /// their steps, which a worker keeps running) until the grace period
    /// ends; see [`Core::worker_connected`] and [`Core::tick`].
    pub fn worker_lost(&mut self, link: LinkId, now_ms: u64) {
        let Some(name) = self.links.remove(&link) else {
            return;
        };
        // The link is gone before its builds end, so that ending them
        // never tries to close it again.
        if let Some(worker) = self.workers.get_mut(&name) {
            worker.link = None;
        }
        let deadline = now_ms + self.config.master.worker_grace.as_millis() as u64;
        for build in self.builds.values_mut().filter(|b| b.link == Some(link)) {
            build.link = None;
            build.orphaned_until = Some(deadline);
        }
        let removed = self.workers.get(&name).is_some_and(|w| w.removed);
        if removed {
            // A removed worker is refused if it comes back: its builds
            // cannot be resumed, so they are retried now.
            let stranded: Vec<BuildId> = self.workers[&name].running.iter().copied().collect();
            for id in stranded {
                self.retry_build(
                    id,
                    format!("worker `{name}` was removed by reload and its link is gone"),
                    now_ms,
                );
            }
            self.workers.remove(&name);
        } else if let Some(worker) = self.workers.get_mut(&name) {
            worker.draining = None;
        }
        self.dispatch(now_ms);
    }

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
            Some(b) if b.link == Some(link) && b.step == step => b,
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
        self.record(Record::StepFinished {
            build: build_id,
            step,
            result,
            reason: why.clone(),
            at_ms: now_ms,
        });
        match (result, stopping) {
            (StepResult::Success, None) if !last => self.start_step(build_id, step + 1, now_ms),
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
        self.record(Record::StepFinished {
            build: id,
            step,
            result,
            reason: Some(reason.clone()),
            at_ms: now_ms,
        });
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
        self.requests.remove(&build.request);
        self.record(Record::BuildFinished {
            build: id,
            request: build.request,
            result,
            reason,
            at_ms: now_ms,
        });
        if let Some(worker) = self.workers.get_mut(&build.worker) {
            worker.running.remove(&id);
        }
        self.close_if_drained(&build.worker);
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
