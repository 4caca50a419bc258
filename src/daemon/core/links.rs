//! Inputs about worker links: a worker connected (its held steps taken
//! back, abandoned or their builds retried), paused, lost; and time
//! passing, which retries builds whose worker stayed away past the grace
//! period and ends those past the master's own deadlines.

use crate::protocol::{BuildId, BuildResult, RunningStep};

use super::{Core, CoreError, Effect, LinkId, Record, WorkerCmd};

impl Core {
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
        // A build waiting between steps for a step lock, or in a trigger
        // step, has no step out: it takes the new link and goes on waiting.
        let waiting: Vec<BuildId> = self
            .builds
            .values()
            .filter(|b| {
                b.worker == name
                    && b.link.is_none()
                    && (b.pending_step.is_some() || self.is_waiting(b.id))
            })
            .map(|b| b.id)
            .collect();
        for id in waiting {
            if let Some(b) = self.builds.get_mut(&id) {
                b.link = Some(link);
                b.orphaned_until = None;
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
        // Pausing can let builds start too: a lock waiter that had only
        // this worker free no longer holds later claims back (`locks.rs`).
        self.dispatch(now_ms);
        Ok(())
    }

    /// Builds running on a worker (for `drain --wait`).
    pub fn builds_on(&self, worker: &str) -> usize {
        self.workers.get(worker).map_or(0, |w| w.running.len())
    }

    /// Time passes: builds whose worker stayed away past the grace period
    /// are retried; builds whose worker let the master's own deadline pass
    /// end (see `deadlines.rs`); schedulers whose timer ran out fire.
    pub fn tick(&mut self, now_ms: u64) {
        self.enforce_deadlines(now_ms);
        if self.run_schedulers(now_ms) {
            self.dispatch(now_ms);
        }
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

    /// When the next orphaned build gives up on its worker, a master
    /// deadline passes, or a scheduler's timer runs out, if any: the
    /// shell's timer need not wake before.
    pub fn next_deadline(&self) -> Option<u64> {
        let orphaned = self.builds.values().filter_map(|b| b.orphaned_until).min();
        [
            orphaned,
            self.next_master_deadline(),
            self.next_scheduler_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
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
        let between_steps = build.pending_step.is_some();
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
        // A build waiting between steps for a lock has no step out: its
        // last step's end is recorded already.
        if !between_steps {
            self.record(Record::StepFinished {
                build: id,
                step,
                result: BuildResult::Retry,
                reason: Some(reason.clone()),
                at_ms: now_ms,
            });
        }
        let Some(build) = self.builds.remove(&id) else {
            return;
        };
        self.release_locks(id);
        self.forget_wait(id);
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
}
