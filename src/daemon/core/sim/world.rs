//! The simulated world, kept from the core's records alone: a new world,
//! the core's effects carried out the way the shell would (each checked),
//! the records turned into what the store would hold, and master restarts
//! on what the store kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::configs::random_config;
use super::*;

impl Sim {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let config = random_config(&mut rng, None);
        let core = Core::new(config, Restored::default(), 0);
        let mut sim = Sim {
            fault: None,
            rng,
            core,
            requests: BTreeMap::new(),
            running: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_link: 1,
            history: Vec::new(),
            once: BTreeSet::new(),
            now: 0,
            seen: Seen::default(),
            saved_schedulers: BTreeMap::new(),
            owed: BTreeMap::new(),
            before: None,
            firings: Default::default(),
        };
        sim.absorb();
        sim
    }

    pub(super) fn fail(&self, what: String) -> ! {
        panic!(
            "invariant broken: {what}\nafter event {} of history:\n  {}",
            self.history.len(),
            self.history.join("\n  ")
        );
    }

    /// Carry out the core's effects the way the shell would, checking each.
    pub(super) fn absorb(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Record(r) => self.record(r),
                Effect::ToWorker { link, cmd } => {
                    let Some(name) = self.worker_on(link) else {
                        self.fail(format!("message to link {link}, which is not current"));
                    };
                    let w = self.workers.get_mut(&name).expect("worker_on found it");
                    match cmd {
                        WorkerCmd::Start(a) => {
                            w.steps.insert((a.build, a.step));
                        }
                        WorkerCmd::Abandon { build, step } => {
                            let held = w.steps.remove(&(build, step));
                            if held {
                                w.abandoned.insert((build, step));
                            }
                        }
                        WorkerCmd::Resume { build, step, .. }
                            if !w.steps.contains(&(build, step)) =>
                        {
                            self.fail(format!(
                                "resume of build {build} step {step}, which {name} does not hold"
                            ));
                        }
                        _ => {}
                    }
                }
                Effect::CloseLink { link, .. } => {
                    let Some(name) = self.worker_on(link) else {
                        self.fail(format!("close of link {link}, which is not current"));
                    };
                    if !self.workers[&name].steps.is_empty() {
                        self.fail(format!("link {link} of {name} closed while it runs steps"));
                    }
                    self.workers.remove(&name);
                    // The shell then reports the link gone: a no-op now.
                    self.core.worker_lost(link, self.now);
                    if !self.core.take_effects().is_empty() {
                        self.fail("losing a closed link had effects".into());
                    }
                }
            }
        }
    }

    fn worker_on(&self, link: LinkId) -> Option<String> {
        self.workers
            .iter()
            .find(|(_, w)| w.link == Some(link))
            .map(|(n, _)| n.clone())
    }

    fn record(&mut self, r: Record) {
        match r {
            Record::RequestQueued {
                request,
                ref reason,
                ref source,
                at_ms,
                ..
            } => {
                if self.requests.insert(request, ReqState::Queued).is_some() {
                    self.fail(format!("request {request} queued twice"));
                }
                let scheduler = reason
                    .as_deref()
                    .and_then(|r| r.strip_prefix("scheduler "))
                    .and_then(|r| r.split_once(':'))
                    .map(|(name, _)| name.to_string());
                if let (Some(name), Some(source)) = (scheduler, source) {
                    self.firing(&name, at_ms, &source.changes);
                }
            }
            Record::RequestCancelled { request, .. } => {
                if self.requests.get(&request) != Some(&ReqState::Queued) {
                    self.fail(format!(
                        "request {request} cancelled from state {:?}",
                        self.requests.get(&request)
                    ));
                }
                self.requests.insert(request, ReqState::Cancelled);
                self.seen.cancelled += 1;
            }
            Record::BuildStarted {
                build,
                request,
                builder,
                worker,
                definition,
                ..
            } => {
                if self.requests.get(&request) != Some(&ReqState::Queued) {
                    self.fail(format!(
                        "build {build} started for request {request} in state {:?} (twice?)",
                        self.requests.get(&request)
                    ));
                }
                if self.core.is_draining() {
                    self.fail(format!("build {build} started while the master drains"));
                }
                let config = self.core.config();
                // Invariant 6: eligibility under the current generation:
                // listed (when the builder lists workers) and carrying
                // every one of the builder's worker_tags.
                let tags = config
                    .worker(&worker)
                    .map(|w| w.tags.clone())
                    .unwrap_or_default();
                let listed = config.builder(&builder).is_some_and(|b| {
                    (b.workers.is_empty() || b.workers.contains(&worker))
                        && b.worker_tags.iter().all(|t| tags.contains(t))
                });
                if !listed {
                    self.fail(format!(
                        "build {build} of {builder} started on ineligible worker {worker} (core builders {:?})",
                        self.core.builders.keys().collect::<Vec<_>>()
                    ));
                }
                // Invariant 5: the limit in force when the build starts.
                let max = config.worker(&worker).map(|w| w.max_builds).unwrap_or(0);
                let busy = self.running.values().filter(|r| r.0 == worker).count() as u32;
                if busy >= max {
                    let on: Vec<&BuildId> = self
                        .running
                        .iter()
                        .filter(|r| r.1.0 == worker)
                        .map(|r| r.0)
                        .collect();
                    self.fail(format!(
                        "{worker} got build {build} with {busy}/{max} busy (builds {on:?})"
                    ));
                }
                // (A build whose trigger step failed at once has ended by now.)
                let def = definition;
                // A request that ran under `retry = false` never runs twice.
                if self.once.contains(&request) {
                    self.fail(format!(
                        "request {request} of a retry = false builder started a second build {build}"
                    ));
                }
                if !def.retry {
                    self.once.insert(request);
                }
                self.running.insert(build, (worker, def, 0));
                self.requests.insert(request, ReqState::Running(build));
            }
            Record::StepStarted { build, step, .. } => {
                let Some(last) = self.running.get(&build).map(|e| e.2) else {
                    self.fail(format!("step of build {build}, which is not running"));
                };
                if step != 0 && step != last + 1 {
                    self.fail(format!("build {build} jumped from step {last} to {step}"));
                }
                if let Some(entry) = self.running.get_mut(&build) {
                    entry.2 = step;
                }
            }
            Record::RequestCollapsed { request, into, .. } => {
                if self.requests.get(&request) != Some(&ReqState::Queued)
                    || !matches!(self.requests.get(&into), Some(ReqState::Running(_)))
                {
                    self.fail(format!(
                        "request {request} collapsed from {:?} into {into} in {:?}",
                        self.requests.get(&request),
                        self.requests.get(&into)
                    ));
                }
                self.requests.insert(request, ReqState::Finished);
                self.seen.collapsed += 1;
            }
            Record::BuilderRenamed { .. } => self.seen.renames += 1,
            Record::GenerationApplied { .. } => self.seen.reloads_applied += 1,
            Record::ChangeAdded(change) => self.change_added(&change),
            Record::PollerCursor(_) => {}
            Record::SchedulerState { name, kind, state } => {
                let firing = self.note_scheduler_state(&name, state.as_deref());
                if firing && self.fault == Some(Fault::FiringNotStored) {
                    return;
                }
                match state {
                    Some(state) => {
                        self.saved_schedulers
                            .insert(name, super::super::SavedScheduler { kind, state });
                    }
                    None => {
                        self.saved_schedulers.remove(&name);
                    }
                }
            }
            Record::StepFinished { .. } => {}
            Record::BuildRetried { build, request, .. } => {
                if self.running.get(&build).is_some_and(|r| !r.1.retry) {
                    self.fail(format!(
                        "build {build} of a retry = false builder was retried"
                    ));
                }
                if self.requests.get(&request) != Some(&ReqState::Running(build)) {
                    self.fail(format!(
                        "build {build} retried for request {request} in state {:?}",
                        self.requests.get(&request)
                    ));
                }
                self.running.remove(&build);
                self.requests.insert(request, ReqState::Queued);
                self.seen.retries += 1;
            }
            Record::BuildFinished {
                build,
                request,
                ref reason,
                ..
            } => {
                if reason
                    .as_deref()
                    .is_some_and(|r| r.contains("retry = false"))
                {
                    self.seen.not_retried += 1;
                }
                if reason
                    .as_deref()
                    .is_some_and(|r| r.contains("so the master ended the build"))
                {
                    self.seen.overdue += 1;
                }
                if self.requests.get(&request) != Some(&ReqState::Running(build)) {
                    self.fail(format!(
                        "build {build} finished for request {request} in state {:?} (twice?)",
                        self.requests.get(&request)
                    ));
                }
                self.running.remove(&build);
                self.requests.insert(request, ReqState::Finished);
                self.seen.builds_finished += 1;
            }
        }
    }

    /// A change was stored: each scheduler whose filter takes it owes it
    /// a build if it is important.
    fn change_added(&mut self, change: &crate::protocol::Change) {
        use crate::config::SchedulerKind;
        use crate::daemon::core::schedulers::glob_match;
        self.seen.changes += 1;
        let c = &change.new;
        for s in &self.core.config().schedulers.clone() {
            let SchedulerKind::Branch(f) = &s.kind else {
                continue;
            };
            let takes = f.repository.as_deref().is_none_or(|r| r == c.repository)
                && (f.branches.is_empty() || f.branches.iter().any(|g| glob_match(g, &c.branch)));
            if !takes {
                continue;
            }
            let important = f.files.is_empty()
                || c.files.is_empty()
                || c.files
                    .iter()
                    .any(|file| f.files.iter().any(|g| glob_match(g, file)));
            self.owed.insert(
                (s.name.clone(), change.id),
                Owed {
                    important,
                    built: None,
                },
            );
        }
    }

    /// A scheduler fired for `changes` at `at_ms` (one request per
    /// builder: the same firing is seen once per request).
    fn firing(&mut self, scheduler: &str, at_ms: u64, changes: &[ChangeId]) {
        // Only `branch` schedulers take changes; a triggered or dependent
        // request carries the source stamp of the build it follows.
        let takes_changes = self
            .core
            .config()
            .scheduler(scheduler)
            .is_some_and(|s| matches!(s.kind, crate::config::SchedulerKind::Branch(_)));
        if !takes_changes {
            return;
        }
        let this = (at_ms, changes.to_vec());
        for c in changes {
            let Some(owed) = self.owed.get_mut(&(scheduler.to_string(), *c)) else {
                self.fail(format!(
                    "scheduler {scheduler} built change {c}, which it never took"
                ));
            };
            match &owed.built {
                Some(first) if *first != this => {
                    let first = first.clone();
                    self.fail(format!(
                        "scheduler {scheduler} built change {c} twice: at {} with {:?}, at {at_ms} with {changes:?}",
                        first.0, first.1
                    ));
                }
                Some(_) => {}
                None => {
                    if owed.important {
                        self.seen.changes_built += 1;
                    }
                    owed.built = Some(this.clone());
                }
            }
        }
    }

    /// A reload's report: renamed schedulers carry what they owe; removed
    /// ones and dropped changes owe nothing any more.
    pub(super) fn reloaded(&mut self, report: &crate::protocol::ReloadReport) {
        for (old, new) in &report.schedulers_renamed {
            self.seen.scheduler_renames += 1;
            let moved: Vec<((String, ChangeId), Owed)> = self
                .owed
                .iter()
                .filter(|((s, _), _)| s == old)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for ((_, c), owed) in moved {
                self.owed.remove(&(old.clone(), c));
                self.owed.insert((new.clone(), c), owed);
            }
        }
        for d in &report.changes_dropped {
            for c in &d.changes {
                self.seen.changes_dropped += 1;
                self.owed.remove(&(d.scheduler.clone(), *c));
            }
        }
        for name in &report.schedulers_removed {
            self.owed.retain(|(s, _), _| s != name);
        }
    }

    /// The master dies and comes back on what the store kept: queued
    /// requests, and running builds that wait for their workers. Worker
    /// processes live on with their steps; only the links are gone.
    pub(super) fn restart(&mut self) {
        self.history.push("master restart".into());
        self.seen.restarts += 1;
        let mut queued = Vec::new();
        let mut running = Vec::new();
        for (id, state) in &self.requests {
            let Some(req) = self.core.requests.get(id) else {
                continue;
            };
            match state {
                ReqState::Queued => queued.push(LiveRequest {
                    build: None,
                    ..req.clone()
                }),
                ReqState::Running(build) => {
                    let rb = &self.core.builds[build];
                    let (worker, def, step) = &self.running[build];
                    running.push(RestoredBuild {
                        id: *build,
                        request: req.clone(),
                        worker: worker.clone(),
                        def: Arc::clone(def),
                        generation: rb.generation,
                        step: *step,
                        started_at_ms: rb.started_at_ms,
                    });
                }
                _ => {}
            }
        }
        let restored = Restored {
            generation: self.core.generation(),
            config_hash: self.core.config().hash.clone(),
            queued,
            running,
            next_request: self.core.next_request,
            next_build: self.core.next_build,
            next_change: self.core.next_change,
            schedulers: if self.fault == Some(Fault::SchedulersForgotten) {
                BTreeMap::new()
            } else {
                self.saved_schedulers.clone()
            },
        };
        for w in self.workers.values_mut() {
            w.link = None;
        }
        self.core = Core::new(Arc::clone(self.core.config()), restored, self.now);
        // The restored core holds new Arcs of the same definitions.
        let changed = self.running.iter().find(|(id, entry)| {
            self.core
                .builds
                .get(id)
                .is_some_and(|rb| *rb.def != *entry.1)
        });
        if let Some((id, _)) = changed {
            self.fail(format!("build {id} came back with another definition"));
        }
        for (id, entry) in self.running.iter_mut() {
            if let Some(rb) = self.core.builds.get(id) {
                entry.1 = Arc::clone(&rb.def);
            }
        }
    }
}
