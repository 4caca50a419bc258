//! Read-only views of the core for `status` and for the invariant checks.

use crate::config::{LockAccess, LockScope};
use crate::protocol::{
    BuilderStatus, LockHolderView, LockView, LockWaiterView, QueuedStatus, RunningStatus,
    WorkerStatus,
};

use super::{Core, LockWait, LockWaiter};

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
                waiting_for_lock: self
                    .lock_waits
                    .get(&LockWaiter::Step(b.id))
                    .filter(|_| b.pending_step.is_some())
                    .map(LockWait::describe),
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

    /// Every request and build waiting for a lock, longest wait first,
    /// as of `now_ms` (for `waited_ms`).
    pub fn lock_waiters(&self, now_ms: u64) -> Vec<LockWaiterView> {
        let mut out: Vec<LockWaiterView> = self
            .lock_waits
            .iter()
            .filter_map(|(who, w)| {
                let (request, build, builder) = match who {
                    LockWaiter::Request(r) => {
                        let q = self.requests.get(r).filter(|q| q.build.is_none())?;
                        (Some(*r), None, q.builder.clone())
                    }
                    LockWaiter::Step(b) => {
                        let b = self.builds.get(b).filter(|b| b.pending_step.is_some())?;
                        (None, Some(b.id), b.builder.clone())
                    }
                };
                Some(LockWaiterView {
                    lock: w.lock.clone(),
                    worker: w.worker.clone(),
                    request,
                    build,
                    builder,
                    held_by: w.held_by.clone(),
                    since_ms: w.since_ms,
                    waited_ms: now_ms.saturating_sub(w.since_ms),
                    waiting: w.describe(),
                })
            })
            .collect();
        out.sort_by_key(|w| (w.since_ms, w.request, w.build));
        out
    }

    /// Every lock instance that is configured (master-wide), held or
    /// waited for, with holders and waiters, for `bbctl locks`.
    pub fn lock_status(&self, now_ms: u64) -> Vec<LockView> {
        let mut instances: std::collections::BTreeSet<(String, Option<String>)> = self
            .locks
            .defs()
            .filter(|d| d.scope == LockScope::Master)
            .map(|d| (d.name.clone(), None))
            .collect();
        instances.extend(self.locks.held().map(|(i, _)| i.clone()));
        instances.extend(
            self.lock_waits
                .values()
                .map(|w| (w.lock.clone(), w.worker.clone())),
        );
        let waiters = self.lock_waiters(now_ms);
        instances
            .into_iter()
            .map(|instance| {
                let def = self.locks.def(&instance.0);
                let holders = self
                    .locks
                    .holders(&instance)
                    .filter_map(|h| {
                        let b = self.builds.get(&h.holder.build())?;
                        let step = match h.holder {
                            super::locks::Holder::Step(_, s) => {
                                b.def.steps.get(s as usize).map(|s| s.name.clone())
                            }
                            super::locks::Holder::Build(_) => None,
                        };
                        Some(LockHolderView {
                            build: b.id,
                            builder: b.builder.clone(),
                            step,
                            access: match h.access {
                                LockAccess::Exclusive => "exclusive".into(),
                                LockAccess::Counting => "counting".into(),
                            },
                            weight: h.weight,
                            since_ms: h.since_ms,
                        })
                    })
                    .collect();
                LockView {
                    scope: if instance.1.is_some() {
                        "worker".into()
                    } else {
                        "master".into()
                    },
                    max: self.locks.capacity(&instance),
                    configured: def.is_some(),
                    holders,
                    waiters: waiters
                        .iter()
                        .filter(|w| w.lock == instance.0 && w.worker == instance.1)
                        .cloned()
                        .collect(),
                    name: instance.0,
                    worker: instance.1,
                }
            })
            .collect()
    }
}
