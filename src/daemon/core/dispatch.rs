//! Matching queued requests with free workers, and starting steps.

use std::sync::Arc;

use crate::config::StepAction;

use crate::protocol::{BuildId, StepIndex};

use super::{Core, Effect, Record, RunningBuild, StepStart, WorkerCmd};

impl Core {
    /// Start every queued request that has a free eligible worker, oldest
    /// request first across all builders, so no builder starves another.
    pub(super) fn dispatch(&mut self, now_ms: u64) {
        if self.is_draining() {
            return;
        }
        loop {
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
            let mut started = false;
            for (_, _, builder) in heads {
                if let Some(worker) = self.pick_worker(&builder) {
                    self.start_build(&builder, &worker, now_ms);
                    started = true;
                }
            }
            if !started {
                return;
            }
        }
    }

    /// The eligible worker with the most free room: listed by the builder's
    /// current definition, connected, not draining, under `max_builds`.
    fn pick_worker(&self, builder: &str) -> Option<String> {
        let def = &self.builders.get(builder)?.def;
        def.workers
            .iter()
            .filter_map(|name| self.workers.get(name))
            .filter(|w| {
                w.link.is_some()
                    && w.draining.is_none()
                    && !w.paused
                    && !w.removed
                    && (w.running.len() as u32) < w.def.max_builds
            })
            .min_by_key(|w| w.running.len())
            .map(|w| w.def.name.clone())
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
            .expect("pick_worker returned a known worker");
        let link = worker
            .link
            .expect("pick_worker returned a connected worker");
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
        self.collapse_into(builder, request_id, id, now_ms);
        self.start_step(id, 0, now_ms);
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
