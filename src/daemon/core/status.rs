//! Read-only views of the core for `status` and for the invariant checks.

use crate::protocol::{BuilderStatus, QueuedStatus, RunningStatus, WorkerStatus};

use super::Core;

impl Core {
    /// Every builder with its queue and running builds. Builders removed by
    /// a reload that still run builds are listed too, with state `removed`.
    pub fn builder_status(&self) -> Vec<BuilderStatus> {
        let mut out: Vec<BuilderStatus> = self
            .builders
            .iter()
            .map(|(name, b)| {
                let running: Vec<u64> = self
                    .builds
                    .values()
                    .filter(|r| r.builder == *name)
                    .map(|r| r.id)
                    .collect();
                let state = if !running.is_empty() {
                    "building"
                } else if !b.queue.is_empty() {
                    "waiting"
                } else {
                    "idle"
                };
                BuilderStatus {
                    name: name.clone(),
                    state: state.into(),
                    queued: b.queue.len() as u32,
                    running: running.len() as u32,
                    running_builds: running,
                    workers: b.def.workers.clone(),
                }
            })
            .collect();
        for build in self.builds.values() {
            if self.builders.contains_key(&build.builder) {
                continue;
            }
            match out.iter_mut().find(|b| b.name == build.builder) {
                Some(b) => {
                    b.running += 1;
                    b.running_builds.push(build.id);
                }
                None => out.push(BuilderStatus {
                    name: build.builder.clone(),
                    state: "removed".into(),
                    queued: 0,
                    running: 1,
                    running_builds: vec![build.id],
                    workers: vec![],
                }),
            }
        }
        out
    }

    /// Every worker with the builders it serves and what it runs.
    pub fn worker_status(&self) -> Vec<WorkerStatus> {
        self.workers
            .values()
            .map(|w| WorkerStatus {
                name: w.def.name.clone(),
                connected: w.link.is_some(),
                local: w.def.local,
                draining: w.draining.is_some() || w.paused,
                max_builds: w.def.max_builds,
                builders: self
                    .builders
                    .values()
                    .filter(|b| b.def.workers.contains(&w.def.name))
                    .map(|b| b.def.name.clone())
                    .collect(),
                running_builds: w.running.iter().copied().collect(),
                last_error: None,
            })
            .collect()
    }

    /// Every running build with its current step, for `status` and `watch`.
    pub fn running_status(&self) -> Vec<RunningStatus> {
        self.builds
            .values()
            .map(|b| RunningStatus {
                build: b.id,
                request: b.request,
                builder: b.builder.clone(),
                worker: b.worker.clone(),
                step: b.step,
                step_name: b.def.steps[b.step as usize].name.clone(),
                steps: b.def.steps.len() as u32,
                started_at_ms: b.started_at_ms,
                step_started_at_ms: b.step_started_at_ms,
                generation: b.generation,
                waiting_for_worker: b.link.is_none(),
            })
            .collect()
    }

    /// Queued requests, in the order they will run, for `bbctl queue`.
    pub fn queue_status(&self, builder: Option<&str>) -> Vec<QueuedStatus> {
        self.builders
            .iter()
            .filter(|(name, _)| builder.is_none_or(|b| b == name.as_str()))
            .flat_map(|(name, b)| {
                b.queue.iter().enumerate().filter_map(move |(i, id)| {
                    let r = self.requests.get(id)?;
                    Some(QueuedStatus {
                        request: *id,
                        builder: name.clone(),
                        position: i as u32 + 1,
                        priority: r.priority,
                        submitted_at_ms: r.submitted_at_ms,
                        reason: r.reason.clone(),
                        properties: r.properties.clone(),
                        retries: r.retries,
                    })
                })
            })
            .collect()
    }

    /// Whether a builder exists in the current config.
    pub fn has_builder(&self, name: &str) -> bool {
        self.builders.contains_key(name)
    }

    /// Queued request ids of a builder, in order.
    pub fn queue_of(&self, builder: &str) -> Vec<u64> {
        self.builders
            .get(builder)
            .map(|b| b.queue.iter().copied().collect())
            .unwrap_or_default()
    }
}
