//! Matching queued requests with free workers (tags, `worker_choice`,
//! `max_running`, build locks), starting steps (step locks). The lock
//! algorithm is described in `locks.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::{StepAction, WorkerChoice};
use crate::protocol::{BuildId, RequestId, StepIndex};

use super::locks::{Blocked, Holder};
use super::{
    Core, Effect, LockWait, LockWaiter, Record, RunningBuild, StepStart, WorkerCmd, WorkerState,
};

impl Core {
    /// One dispatch pass: builds waiting between steps take their step
    /// locks (oldest wait first), then every queued request that has a
    /// free eligible worker and its build locks starts, in run order
    /// across all builders (priority, then age), so no builder starves
    /// another. Repeats until nothing more starts.
    pub(super) fn dispatch(&mut self, now_ms: u64) {
        if self.restoring {
            return;
        }
        let mut waits: BTreeMap<LockWaiter, Blocked> = BTreeMap::new();
        loop {
            waits.clear();
            let mut reserved = BTreeSet::new();
            let mut started = false;
            let mut pending: Vec<(u64, BuildId)> = self
                .builds
                .values()
                .filter(|b| b.link.is_some() && b.stopping.is_none())
                .filter_map(|b| b.pending_step.map(|(_, seq)| (seq, b.id)))
                .collect();
            pending.sort_unstable();
            for (_, id) in pending {
                let Some(b) = self.builds.get(&id) else {
                    continue;
                };
                let Some((step, _)) = b.pending_step else {
                    continue;
                };
                let claims = &b.def.steps[step as usize].locks;
                let wants = self.locks.resolve(claims, &b.worker);
                match self.locks.try_acquire(
                    Holder::Step(id, step),
                    &[wants],
                    &mut reserved,
                    now_ms,
                ) {
                    Ok(_) => {
                        if let Some(b) = self.builds.get_mut(&id) {
                            b.pending_step = None;
                        }
                        self.start_step(id, step, now_ms);
                        started = true;
                    }
                    Err(blocked) => {
                        if let Some(blocked) = blocked {
                            waits.insert(LockWaiter::Step(id), blocked);
                        }
                    }
                }
            }
            if !self.is_draining() {
                let mut heads: Vec<(std::cmp::Reverse<i32>, u64, String)> = self
                    .builders
                    .iter()
                    .filter_map(|(name, b)| {
                        let r = *b.queue.front()?;
                        let priority = self.requests.get(&r).map_or(0, |q| q.priority);
                        Some((std::cmp::Reverse(priority), r, name.clone()))
                    })
                    .collect();
                heads.sort_unstable();
                for (_, request, builder) in heads {
                    // An earlier start of this pass may have taken this
                    // head away (a trigger step, a collapse): grant locks
                    // only to a request that is still at its queue's head,
                    // or they would be held for a build that never starts.
                    let still_head =
                        self.builders.get(&builder).and_then(|b| b.queue.front()) == Some(&request);
                    if !still_head || self.at_max_running(&builder) {
                        continue;
                    }
                    let candidates = self.candidates(&builder, request);
                    if candidates.is_empty() {
                        continue;
                    }
                    let Some(def) = self.builders.get(&builder).map(|b| Arc::clone(&b.def)) else {
                        continue;
                    };
                    let options: Vec<_> = candidates
                        .iter()
                        .map(|w| self.locks.resolve(&def.locks, w))
                        .collect();
                    match self.locks.try_acquire(
                        Holder::Build(self.next_build),
                        &options,
                        &mut reserved,
                        now_ms,
                    ) {
                        Ok(i) => {
                            self.start_build(&builder, &candidates[i], now_ms);
                            started = true;
                        }
                        Err(blocked) => {
                            if let Some(blocked) = blocked {
                                waits.insert(LockWaiter::Request(request), blocked);
                            }
                        }
                    }
                }
            }
            if !started {
                break;
            }
        }
        let old = std::mem::take(&mut self.lock_waits);
        self.lock_waits = waits
            .into_iter()
            .map(|(who, blocked)| {
                let since_ms = old.get(&who).map_or(now_ms, |w| w.since_ms);
                (
                    who,
                    LockWait {
                        lock: blocked.instance.0,
                        worker: blocked.instance.1,
                        held_by: blocked.held_by,
                        since_ms,
                    },
                )
            })
            .collect();
    }

    /// Whether a builder runs `max_running` builds already.
    fn at_max_running(&self, builder: &str) -> bool {
        let Some(max) = self.builders.get(builder).and_then(|b| b.def.max_running) else {
            return false;
        };
        self.builds
            .values()
            .filter(|b| b.builder == builder)
            .count()
            >= max as usize
    }

    /// Whether a worker may run builds of `def`: listed (if the builder
    /// lists workers) and carrying every one of its `worker_tags`.
    pub(super) fn eligible(def: &crate::config::BuilderDef, w: &WorkerState) -> bool {
        (def.workers.is_empty() || def.workers.contains(&w.def.name))
            && def.worker_tags.iter().all(|t| w.def.tags.contains(t))
    }

    /// The eligible free workers for the head request of `builder`, in the
    /// order its `worker_choice` prefers them: connected, not draining or
    /// paused, under `max_builds`. The list order is the builder's
    /// `workers`, or the config's worker order when it names only tags.
    /// `least_busy`: fewest running builds first, ties in list order;
    /// `in_order`: list order; `random`: list order rotated by a number
    /// drawn from the request id (the same request always draws the same).
    fn candidates(&self, builder: &str, request: RequestId) -> Vec<String> {
        let Some(def) = self.builders.get(builder).map(|b| &b.def) else {
            return Vec::new();
        };
        let order: Vec<&String> = if def.workers.is_empty() {
            self.config.workers.iter().map(|w| &w.name).collect()
        } else {
            def.workers.iter().collect()
        };
        let mut free: Vec<&WorkerState> = order
            .into_iter()
            .filter_map(|name| self.workers.get(name))
            .filter(|w| {
                w.link.is_some()
                    && w.draining.is_none()
                    && !w.paused
                    && !w.removed
                    && (w.running.len() as u32) < w.def.max_builds
                    && Self::eligible(def, w)
            })
            .collect();
        match def.worker_choice {
            WorkerChoice::LeastBusy => free.sort_by_key(|w| w.running.len()),
            WorkerChoice::InOrder => {}
            WorkerChoice::Random => {
                if !free.is_empty() {
                    let n = free.len();
                    free.rotate_left((super::locks::spread(request) % n as u64) as usize);
                }
            }
        }
        free.into_iter().map(|w| w.def.name.clone()).collect()
    }

    /// Start step `step` of a running build now if it claims no lock;
    /// otherwise it waits for its locks, which the next dispatch pass
    /// grants in turn (the caller runs one).
    pub(super) fn begin_step(&mut self, id: BuildId, step: StepIndex, now_ms: u64) {
        let seq = self.next_wait;
        let Some(build) = self.builds.get_mut(&id) else {
            return;
        };
        if build.def.steps[step as usize].locks.is_empty() {
            self.start_step(id, step, now_ms);
        } else {
            build.pending_step = Some((step, seq));
            self.next_wait += 1;
        }
    }

    /// Take back the locks of a build re-adopted at a master restart (its
    /// build locks and its current step's), whatever the capacities: they
    /// were granted before.
    pub(super) fn reclaim_locks(&mut self, id: BuildId, now_ms: u64) {
        let Some(b) = self.builds.get(&id) else {
            return;
        };
        let build = self.locks.resolve(&b.def.locks, &b.worker);
        let step = b
            .def
            .steps
            .get(b.step as usize)
            .map(|s| self.locks.resolve(&s.locks, &b.worker))
            .unwrap_or_default();
        let at = b.started_at_ms.min(now_ms);
        self.locks.take(Holder::Build(id), &build, at);
        self.locks.take(Holder::Step(id, b.step), &step, at);
    }

    /// Release every lock of a build that leaves the running set.
    pub(super) fn release_locks(&mut self, id: BuildId) {
        self.locks.release_build(id);
        self.lock_waits.remove(&LockWaiter::Step(id));
    }

    fn start_build(&mut self, builder: &str, worker_name: &str, now_ms: u64) {
        let Some(state) = self.builders.get_mut(builder) else {
            return;
        };
        let Some(request_id) = state.queue.pop_front() else {
            return;
        };
        let def = Arc::clone(&state.def);
        let id = self.next_build;
        self.next_build += 1;
        let worker = self
            .workers
            .get_mut(worker_name)
            .expect("candidates returned a known worker");
        let link = worker.link.expect("candidates returned a connected worker");
        worker.running.insert(id);
        if let Some(req) = self.requests.get_mut(&request_id) {
            req.build = Some(id);
        }
        self.builds.insert(
            id,
            RunningBuild {
                id,
                request: request_id,
                builder: builder.to_string(),
                worker: worker_name.to_string(),
                link: Some(link),
                orphaned_until: None,
                def: Arc::clone(&def),
                generation: self.generation,
                step: 0,
                stopping: None,
                started_at_ms: now_ms,
                step_started_at_ms: now_ms,
                pending_step: None,
            },
        );
        self.record(Record::BuildStarted {
            build: id,
            request: request_id,
            builder: builder.to_string(),
            worker: worker_name.to_string(),
            generation: self.generation,
            config_hash: self.config.hash.clone(),
            definition: def,
            at_ms: now_ms,
        });
        self.lock_waits.remove(&LockWaiter::Request(request_id));
        self.collapse_into(builder, request_id, id, now_ms);
        self.begin_step(id, 0, now_ms);
    }

    /// With `collapse = true`, queued requests of the builder with the same
    /// properties (and the same source stamp: a newer revision is never
    /// merged into an older one) as the one starting are merged into it:
    /// they end as `skipped`, pointing to the request and build that ran
    /// for them.
    fn collapse_into(&mut self, builder: &str, into: u64, build: BuildId, now_ms: u64) {
        let Some(state) = self.builders.get(builder) else {
            return;
        };
        if !state.def.collapse {
            return;
        }
        let Some((props, source)) = self
            .requests
            .get(&into)
            .map(|r| (r.properties.clone(), r.source.clone()))
        else {
            return;
        };
        let same: Vec<u64> = state
            .queue
            .iter()
            .copied()
            .filter(|r| {
                self.requests
                    .get(r)
                    .is_some_and(|q| q.properties == props && q.source == source)
            })
            .collect();
        if same.is_empty() {
            return;
        }
        if let Some(state) = self.builders.get_mut(builder) {
            state.queue.retain(|r| !same.contains(r));
        }
        for request in same {
            self.requests.remove(&request);
            self.record(Record::RequestCollapsed {
                request,
                into,
                build,
                at_ms: now_ms,
            });
            self.request_collapsed(request, into);
        }
    }

    /// Send step `step` of a running build to its worker.
    pub(super) fn start_step(&mut self, id: BuildId, step: StepIndex, now_ms: u64) {
        let Some(build) = self.builds.get_mut(&id) else {
            return;
        };
        build.step = step;
        build.step_started_at_ms = now_ms;
        let def = &build.def.steps[step as usize];
        let mut env: Vec<(String, String)> = build
            .def
            .env
            .iter()
            .chain(def.env.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("BB_BUILDER".into(), build.builder.clone()));
        env.push(("BB_BUILD_ID".into(), id.to_string()));
        env.push(("BB_REQUEST_ID".into(), build.request.to_string()));
        env.push(("BB_WORKER".into(), build.worker.clone()));
        env.push(("BB_STEP".into(), def.name.clone()));
        env.push(("BB_GENERATION".into(), build.generation.to_string()));
        if let Some(req) = self.requests.get(&build.request) {
            for (k, v) in &req.properties {
                env.push((format!("BB_PROP_{k}"), v.clone()));
            }
            if let Some(source) = &req.source {
                env.push(("BB_REPOSITORY".into(), source.repository.clone()));
                env.push(("BB_BRANCH".into(), source.branch.clone()));
                if let Some(rev) = &source.revision {
                    env.push(("BB_REVISION".into(), rev.clone()));
                }
                env.push(("BB_CHANGES".into(), source.changes_csv()));
            }
        }
        let start = StepStart {
            build: id,
            step,
            builder: build.builder.clone(),
            name: def.name.clone(),
            pass_env: build.def.pass_env.clone(),
            action: def.action.clone(),
            env,
            timeout: def.timeout,
            max_output: Some(self.config.master.max_log_size),
        };
        let (link, name) = (build.link, def.name.clone());
        self.record(Record::StepStarted {
            build: id,
            step,
            name,
            at_ms: now_ms,
        });
        if let StepAction::Trigger(spec) = &start.action {
            // Run by the master itself; the worker is not asked.
            let spec = spec.clone();
            self.start_trigger(id, step, &spec, now_ms);
            return;
        }
        // A step starts only after the previous one's end came in on the
        // build's link, so the link is there.
        if let Some(link) = link {
            self.effects.push(Effect::ToWorker {
                link,
                cmd: WorkerCmd::Start(Box::new(start)),
            });
        }
    }

    /// Close a draining worker's link once it runs nothing; forget a
    /// removed worker once it is idle and gone.
    pub(super) fn close_if_drained(&mut self, name: &str) {
        let Some(worker) = self.workers.get_mut(name) else {
            return;
        };
        if !worker.running.is_empty() {
            return;
        }
        let Some(reason) = worker.draining.clone() else {
            return;
        };
        match worker.link.take() {
            Some(link) => {
                self.links.remove(&link);
                self.effects.push(Effect::CloseLink { link, reason });
            }
            None => worker.draining = None,
        }
        if worker.removed {
            self.workers.remove(name);
        } else if let Some(w) = self.workers.get_mut(name) {
            w.draining = None;
        }
    }
}
