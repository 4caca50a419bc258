//! The seeded simulator: random histories of forces, cancels, stops, worker
//! connects and losses, step ends, reloads with random config edits, dry
//! runs, crafted reports and master restarts, with the invariants of
//! `docs/architecture.md` ("The invariants") checked after every event.
//!
//! - `cargo test --lib sim` runs `SIM_SEEDS` seeds (default 2,000) of
//!   `SIM_EVENTS` events (default 200) each.
//! - `SIM_SEED=N cargo test --lib sim -- --nocapture` replays one seed and
//!   prints its history. A failure prints this command, the event number
//!   where an invariant broke, and the history up to it (the shortest
//!   history that fails for that seed: `SIM_EVENTS=<event>` replays it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::config::{Secret, StepAction, StepDef};
use crate::protocol::{DrainMode, RunningStep, StepEnd};

/// A small, fast, seedable PRNG (splitmix64): reproducible on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }
}

const WORKERS: [&str; 4] = ["w0", "w1", "w2", "w3"];
const BUILDERS: [&str; 6] = ["b0", "b1", "b2", "b3", "b4", "b5"];

/// What the store would hold, rebuilt from records alone.
#[derive(Debug, Clone, PartialEq)]
enum ReqState {
    Queued,
    Running(BuildId),
    Finished,
    Cancelled,
}

/// A simulated worker process.
#[derive(Debug, Default)]
struct SimWorker {
    link: Option<LinkId>,
    steps: BTreeSet<(BuildId, StepIndex)>,
    /// Steps the master abandoned; a hostile worker may go on reporting them.
    abandoned: BTreeSet<(BuildId, StepIndex)>,
}

/// A bug planted on purpose, to show the simulator catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Every applied reload loses the queues.
    ReloadDropsQueue,
    /// The shell never ticks the core: no deadline is enforced.
    NoTicks,
}

struct Sim {
    fault: Option<Fault>,
    rng: Rng,
    core: Core,
    requests: BTreeMap<RequestId, ReqState>,
    /// Running builds as the records say: worker, the definition they
    /// started with, and the last step started.
    running: BTreeMap<BuildId, (String, Arc<BuilderDef>, StepIndex)>,
    /// Each simulated worker process: its link (if connected) and the steps
    /// it holds, which it keeps across lost links, as bbworker does.
    workers: BTreeMap<String, SimWorker>,
    next_link: LinkId,
    history: Vec<String>,
    /// Requests that started a build under `retry = false`: they must
    /// never start another.
    once: BTreeSet<RequestId>,
    now: u64,
    /// How often the interesting things happened, so that a run that
    /// exercised nothing cannot pass quietly.
    seen: Seen,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    builds_finished: u64,
    cancelled: u64,
    renames: u64,
    restarts: u64,
    reloads_applied: u64,
    retries: u64,
    resumed: u64,
    collapsed: u64,
    /// Builds of `retry = false` builders ended by a lost worker.
    not_retried: u64,
    /// Builds the master ended itself because the worker let a deadline pass.
    overdue: u64,
}

fn random_config(rng: &mut Rng, current: Option<&Config>) -> Arc<Config> {
    let mut workers: Vec<WorkerDef> = Vec::new();
    for name in WORKERS {
        if rng.chance(80) {
            workers.push(WorkerDef {
                name: name.to_string(),
                local: false,
                max_builds: 1 + rng.below(3) as u32,
                secret: Some(Secret(
                    if rng.chance(10) {
                        "new-0123456789abcdef"
                    } else {
                        "s-0123456789abcdef"
                    }
                    .into(),
                )),
                user: None,
            });
        }
    }
    if workers.is_empty() {
        workers.push(WorkerDef {
            name: "w0".into(),
            local: false,
            max_builds: 1,
            secret: Some(Secret("s-0123456789abcdef".into())),
            user: None,
        });
    }
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    let mut builders: Vec<BuilderDef> = Vec::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for name in BUILDERS {
        if !rng.chance(70) || taken.contains(name) {
            continue;
        }
        let mut listed: Vec<String> = names.iter().filter(|_| rng.chance(60)).cloned().collect();
        if listed.is_empty() {
            listed.push(names[rng.below(names.len())].clone());
        }
        // Sometimes a rename: this builder was one of the current ones.
        let mut previous_names = Vec::new();
        if let Some(cur) = current
            && rng.chance(15)
            && let Some(old) = rng.pick(&cur.builders)
            && old.name != name
            && !taken.contains(&old.name)
            && !BUILDERS
                .iter()
                .any(|b| *b == old.name && builders.iter().any(|x| x.name == *b))
        {
            previous_names.push(old.name.clone());
            taken.insert(old.name.clone());
        }
        taken.insert(name.to_string());
        builders.push(BuilderDef {
            name: name.to_string(),
            previous_names,
            workers: listed,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            steps: (0..1 + rng.below(3))
                .map(|i| StepDef {
                    name: format!("s{i}"),
                    action: StepAction::Shell(format!("v{}", rng.below(2))),
                    timeout: rng
                        .chance(30)
                        .then(|| std::time::Duration::from_millis(1000 + rng.below(60_000) as u64)),
                    env: BTreeMap::new(),
                })
                .collect(),
            collapse: rng.chance(25),
            retry: !rng.chance(25),
        });
    }
    // A builder's previous name must not be another builder's current name.
    let current_names: BTreeSet<String> = builders.iter().map(|b| b.name.clone()).collect();
    for b in &mut builders {
        b.previous_names.retain(|p| !current_names.contains(p));
    }
    let hash = format!("{:x}", rng.next());
    Arc::new(Config {
        master: Default::default(),
        workers,
        builders,
        origin: "sim".into(),
        hash,
        warnings: vec![],
    })
}

impl Sim {
    fn new(seed: u64) -> Self {
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
        };
        sim.absorb();
        sim
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "invariant broken: {what}\nafter event {} of history:\n  {}",
            self.history.len(),
            self.history.join("\n  ")
        );
    }

    /// Carry out the core's effects the way the shell would, checking each.
    fn absorb(&mut self) {
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
            Record::RequestQueued { request, .. } => {
                if self.requests.insert(request, ReqState::Queued).is_some() {
                    self.fail(format!("request {request} queued twice"));
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
                // Invariant 6: eligibility under the current generation.
                let listed = config
                    .builder(&builder)
                    .is_some_and(|b| b.workers.contains(&worker));
                if !listed {
                    self.fail(format!("build {build} started on unlisted worker {worker}"));
                }
                // Invariant 5: the limit in force when the build starts.
                let max = config.worker(&worker).map(|w| w.max_builds).unwrap_or(0);
                let busy = self.running.values().filter(|r| r.0 == worker).count() as u32;
                if busy >= max {
                    self.fail(format!("{worker} got build {build} with {busy}/{max} busy"));
                }
                let rb = self.core.running_build(build).expect("started build runs");
                let def = Arc::clone(&rb.def);
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

    fn check(&self) {
        let core = &self.core;
        // 1. Nothing lost: the records and the core agree on every request.
        let queued: Vec<RequestId> = core
            .builders
            .values()
            .flat_map(|b| b.queue.iter().copied())
            .collect();
        let unique: BTreeSet<_> = queued.iter().collect();
        if unique.len() != queued.len() {
            self.fail(format!("a request is queued twice: {queued:?}"));
        }
        for (id, state) in &self.requests {
            let ok = match state {
                ReqState::Queued => {
                    unique.contains(id) && core.requests.get(id).is_some_and(|r| r.build.is_none())
                }
                ReqState::Running(b) => {
                    !unique.contains(id)
                        && core.builds.get(b).is_some_and(|rb| rb.request == *id)
                        && core.requests.get(id).is_some_and(|r| r.build == Some(*b))
                }
                ReqState::Finished | ReqState::Cancelled => {
                    !unique.contains(id) && !core.requests.contains_key(id)
                }
            };
            if !ok {
                self.fail(format!(
                    "request {id} is {state:?} in the records but not in the core"
                ));
            }
        }
        if core.requests.len()
            != self
                .requests
                .values()
                .filter(|s| matches!(s, ReqState::Queued | ReqState::Running(_)))
                .count()
        {
            self.fail("the core holds a request the records do not know".into());
        }
        // 3 and 4. Every running build has exactly its current step out on
        // its worker's current link, or waits for its worker with a
        // deadline that has not passed; it keeps the worker and definition
        // it started with. Every step out on a link belongs to a running
        // build on that link.
        let mut out: BTreeSet<(BuildId, StepIndex)> = BTreeSet::new();
        for w in self.workers.values() {
            let Some(link) = w.link else { continue };
            for s in &w.steps {
                let Some(rb) = core.builds.get(&s.0) else {
                    self.fail(format!("step {s:?} is out but its build is not running"));
                };
                if rb.link != Some(link) || rb.step != s.1 {
                    self.fail(format!(
                        "step {s:?} is out on link {link}, build is on {:?}",
                        rb.link
                    ));
                }
                out.insert(*s);
            }
        }
        for (id, rb) in &core.builds {
            // The master's own deadlines: a step out on a link never runs
            // past its timeout or a stop plus the grace.
            if let Some((at, _)) = core.master_deadline(rb)
                && at <= self.now
            {
                self.fail(format!(
                    "build {id} step {} runs past the master's deadline ({at} <= {})",
                    rb.step, self.now
                ));
            }
            match (rb.link, rb.orphaned_until) {
                (Some(_), None) => {
                    if !out.contains(&(*id, rb.step)) {
                        self.fail(format!(
                            "build {id} step {} is not out on any worker: stuck",
                            rb.step
                        ));
                    }
                }
                (None, Some(deadline)) => {
                    if deadline <= self.now {
                        self.fail(format!("build {id} waits past its deadline: stuck"));
                    }
                }
                other => self.fail(format!("build {id} has link/deadline {other:?}")),
            }
            let Some((worker, def, _)) = self.running.get(id) else {
                self.fail(format!("build {id} runs but was never recorded started"));
            };
            if *worker != rb.worker || !Arc::ptr_eq(def, &rb.def) {
                self.fail(format!(
                    "build {id} changed worker or definition while running"
                ));
            }
        }
        // Queues run by priority, then oldest first.
        for (name, b) in &core.builders {
            let keys: Vec<(std::cmp::Reverse<i32>, u64)> = b
                .queue
                .iter()
                .map(|r| (std::cmp::Reverse(core.requests[r].priority), *r))
                .collect();
            if keys.windows(2).any(|w| w[0] > w[1]) {
                self.fail(format!("builder {name}'s queue is out of order: {keys:?}"));
            }
        }
        // 3. A queued request with a free eligible worker is dispatched,
        // unless the master drains; then nothing starts.
        for (name, b) in &core.builders {
            if b.queue.is_empty() || core.is_draining() {
                continue;
            }
            for w in &b.def.workers {
                if let Some(ws) = core.workers.get(w)
                    && ws.link.is_some()
                    && ws.draining.is_none()
                    && !ws.paused
                    && !ws.removed
                    && (ws.running.len() as u32) < ws.def.max_builds
                {
                    self.fail(format!("builder {name} has a queue while {w} is free"));
                }
            }
        }
        // 5. Worker slots: the core's count matches the running builds.
        for (name, ws) in &core.workers {
            let n = core.builds.values().filter(|b| b.worker == *name).count();
            if n != ws.running.len() {
                self.fail(format!(
                    "worker {name} counts {} builds, runs {n}",
                    ws.running.len()
                ));
            }
        }
    }

    fn step(&mut self) {
        // Time passes; the shell's timer ticks the core at every deadline.
        let span = if self.rng.chance(5) { 90_000 } else { 1000 };
        self.now += 1 + self.rng.below(span) as u64;
        let now = self.now;
        if self.fault != Some(Fault::NoTicks) {
            self.core.tick(now);
        }
        self.absorb();
        let roll = self.rng.below(100);
        match roll {
            0..20 => {
                let builder = BUILDERS[self.rng.below(BUILDERS.len())];
                let priority = if self.rng.chance(20) {
                    self.rng.below(3) as i32 - 1
                } else {
                    0
                };
                let props = if self.rng.chance(50) {
                    BTreeMap::new()
                } else {
                    BTreeMap::from([("V".to_string(), self.rng.below(2).to_string())])
                };
                let r = self
                    .core
                    .force_build_with_priority(builder, None, props, priority, now);
                self.history
                    .push(format!("force {builder} priority {priority} -> {r:?}"));
            }
            20..30 => {
                let name = WORKERS[self.rng.below(WORKERS.len())];
                if self.workers.get(name).is_some_and(|w| w.link.is_some()) {
                    return self.step();
                }
                let link = self.next_link;
                self.next_link += 1;
                let held: Vec<RunningStep> = self
                    .workers
                    .get(name)
                    .map(|w| {
                        w.steps
                            .iter()
                            .map(|(build, step)| RunningStep {
                                build: *build,
                                step: *step,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let r = self.core.worker_connected(name, link, &held, now);
                self.history.push(format!(
                    "connect {name} as link {link} holding {:?} -> {r:?}",
                    held.iter().map(|h| (h.build, h.step)).collect::<Vec<_>>()
                ));
                if r.is_ok() {
                    let w = self.workers.entry(name.to_string()).or_default();
                    w.link = Some(link);
                    self.seen.resumed += self
                        .core
                        .effects
                        .iter()
                        .filter(|e| {
                            matches!(
                                e,
                                Effect::ToWorker {
                                    cmd: WorkerCmd::Resume { .. },
                                    ..
                                }
                            )
                        })
                        .count() as u64;
                }
            }
            30..34 => {
                // The link breaks; the worker process keeps its steps.
                let names: Vec<String> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.link.is_some())
                    .map(|(n, _)| n.clone())
                    .collect();
                let Some(name) = self.rng.pick(&names).cloned() else {
                    return self.step();
                };
                let w = self.workers.get_mut(&name).expect("picked");
                let link = w.link.take().expect("connected");
                // Sometimes the worker process died too: its steps are gone.
                let crashed = self.rng.chance(30);
                if crashed {
                    w.steps.clear();
                }
                self.history.push(format!(
                    "lose {name} (link {link}){}",
                    if crashed { ", worker process died" } else { "" }
                ));
                self.core.worker_lost(link, now);
            }
            34..70 => {
                let out: Vec<(String, LinkId, BuildId, StepIndex)> = self
                    .workers
                    .iter()
                    .filter_map(|(n, w)| w.link.map(|l| (n, l, w)))
                    .flat_map(|(n, l, w)| w.steps.iter().map(move |(b, i)| (n.clone(), l, *b, *i)))
                    .collect();
                let Some((name, link, build, step)) = self.rng.pick(&out).cloned() else {
                    return self.step();
                };
                let end = match self.rng.below(10) {
                    0 => StepEnd::Exited { code: 1 },
                    1 => StepEnd::TimedOut { after_ms: 5 },
                    2 => StepEnd::SpawnFailed { error: "e".into() },
                    3 => StepEnd::Stopped,
                    4 => StepEnd::TransferFailed {
                        error: "sha-256 mismatch".into(),
                    },
                    _ => StepEnd::Exited { code: 0 },
                };
                self.workers
                    .get_mut(&name)
                    .expect("picked")
                    .steps
                    .remove(&(build, step));
                self.history
                    .push(format!("{name} ends build {build} step {step}: {end:?}"));
                if let Err(e) = self.core.step_ended(link, build, step, end, now) {
                    self.fail(format!("a true report was refused: {e}"));
                }
            }
            70..74 => {
                let ids: Vec<BuildId> = self.core.builds.keys().copied().collect();
                let Some(id) = self.rng.pick(&ids).copied() else {
                    return self.step();
                };
                self.history.push(format!("stop build {id}"));
                if let Err(e) = self.core.stop_build(id, "sim", now) {
                    self.fail(format!("stop of a running build failed: {e}"));
                }
            }
            74..78 => {
                let ids: Vec<RequestId> = self.core.requests.keys().copied().collect();
                let Some(id) = self.rng.pick(&ids).copied() else {
                    return self.step();
                };
                self.history.push(format!("cancel request {id}"));
                if let Err(e) = self.core.cancel_request(id, "sim", now) {
                    self.fail(format!("cancel of a live request failed: {e}"));
                }
            }
            78..88 => {
                // Through the real parser, as the shell does: an invalid
                // file must be refused with a position and change nothing.
                let config = random_config(&mut self.rng, Some(self.core.config()));
                let mut text = to_toml(&config);
                let broken = self.rng.chance(20);
                if broken {
                    text = corrupt(&mut self.rng, &text);
                }
                match crate::config::parse_str(&text, "sim.toml", std::path::Path::new("/")) {
                    Ok(parsed) => {
                        if broken {
                            self.fail(format!("a corrupted config was accepted:\n{text}"));
                        }
                        if parsed.builders != config.builders || parsed.workers != config.workers {
                            self.fail(format!("the parser changed the config:\n{text}"));
                        }
                        self.history.push(format!("reload {}", describe(&config)));
                        self.core.reload(Arc::new(parsed), now, false);
                        if self.fault == Some(Fault::ReloadDropsQueue) {
                            for b in self.core.builders.values_mut() {
                                b.queue.clear();
                            }
                        }
                    }
                    Err(e) => {
                        let first = &e.problems[0];
                        if !broken || first.position.is_none() {
                            self.fail(format!("config refused: {e}\n{text}"));
                        }
                        self.history.push(format!("reload refused: {first}"));
                    }
                }
            }
            88..92 => {
                let config = random_config(&mut self.rng, Some(self.core.config()));
                self.history
                    .push(format!("reload --dry-run {}", describe(&config)));
                let before = format!(
                    "{:?}",
                    (
                        self.core.builder_status(),
                        self.core.worker_status(),
                        self.core.generation()
                    )
                );
                self.core.reload(config, now, true);
                let after = format!(
                    "{:?}",
                    (
                        self.core.builder_status(),
                        self.core.worker_status(),
                        self.core.generation()
                    )
                );
                if before != after || !self.core.take_effects().is_empty() {
                    self.fail("a dry run changed the state".into());
                }
            }
            92..94 => {
                // A hostile worker goes on reporting a step the master
                // abandoned: refused, and nothing changes.
                let Some((name, link, (build, step))) = self
                    .workers
                    .iter()
                    .find_map(|(n, w)| Some((n.clone(), w.link?, *w.abandoned.iter().next()?)))
                else {
                    return self.step();
                };
                self.history.push(format!(
                    "{name} reports abandoned build {build} step {step}"
                ));
                if self
                    .core
                    .step_ended(link, build, step, StepEnd::Exited { code: 0 }, now)
                    .is_ok()
                {
                    self.fail("a report on an abandoned step was accepted".into());
                }
                if !self.core.take_effects().is_empty() {
                    self.fail("a report on an abandoned step had effects".into());
                }
            }
            94..96 => {
                // A crafted report: a step this link was not given.
                let Some((name, link)) = self
                    .workers
                    .iter()
                    .find_map(|(n, w)| w.link.map(|l| (n.clone(), l)))
                else {
                    return self.step();
                };
                let build = self.rng.below(50) as u64;
                let given = self.workers[&name].steps.iter().any(|(b, _)| *b == build);
                if given {
                    return self.step();
                }
                self.history
                    .push(format!("{name} reports build {build} it was not given"));
                if self
                    .core
                    .step_ended(link, build, 0, StepEnd::Exited { code: 0 }, now)
                    .is_ok()
                {
                    self.fail("a report on someone else's step was accepted".into());
                }
                if !self.core.take_effects().is_empty() {
                    self.fail("a refused report had effects".into());
                }
            }
            96..98 => {
                let name = WORKERS[self.rng.below(WORKERS.len())];
                let paused = self.rng.chance(50);
                let r = self.core.set_worker_paused(name, paused, now);
                self.history.push(format!(
                    "{} {name} -> {r:?}",
                    if paused { "drain" } else { "undrain" }
                ));
            }
            98 => {
                let mode = if self.rng.chance(50) {
                    DrainMode::Maintenance
                } else {
                    DrainMode::Shutdown
                };
                let on = self.rng.chance(50);
                self.history.push(format!("drain {mode:?} {on}"));
                self.core.set_drain(mode, on, now);
            }
            _ => self.restart(),
        }
        self.absorb();
        self.check();
    }

    /// The master dies and comes back on what the store kept: queued
    /// requests, and running builds that wait for their workers. Worker
    /// processes live on with their steps; only the links are gone.
    fn restart(&mut self) {
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

/// The config as a `master.toml` would say it.
fn to_toml(config: &Config) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for w in &config.workers {
        let secret = w.secret.as_ref().map(|s| s.0.as_str()).unwrap_or("s");
        out.push_str(&format!(
            "[[worker]]\nname = {:?}\nmax_builds = {}\nsecret = {secret:?}\n\n",
            w.name, w.max_builds
        ));
    }
    for b in &config.builders {
        out.push_str(&format!("[[builder]]\nname = {:?}\n", b.name));
        if !b.previous_names.is_empty() {
            out.push_str(&format!("previous_names = [{}]\n", list(&b.previous_names)));
        }
        out.push_str(&format!("workers = [{}]\n", list(&b.workers)));
        if b.collapse {
            out.push_str("collapse = true\n");
        }
        if !b.retry {
            out.push_str("retry = false\n");
        }
        for step in &b.steps {
            let StepAction::Shell(line) = &step.action else {
                unreachable!("the simulator only makes shell steps")
            };
            out.push_str(&format!(
                "  [[builder.step]]\n  name = {:?}\n  shell = {line:?}\n",
                step.name
            ));
            if let Some(t) = step.timeout {
                out.push_str(&format!("  timeout = \"{}ms\"\n", t.as_millis()));
            }
        }
        out.push('\n');
    }
    out
}

/// Break a config in one of the ways people do.
fn corrupt(rng: &mut Rng, text: &str) -> String {
    match rng.below(4) {
        0 => format!(
            "{text}[[builder]]\nname = \"x\"\nworkers = [\"nobody\"]\n  [[builder.step]]\n  name = \"s\"\n  shell = \"true\"\n"
        ),
        1 => format!("{text}[[worker]]\nname = \"w9\"\nmax_builds = 0\nsecret = \"s\"\n"),
        2 => format!("{text}[[worker]]\nnmae = \"typo\"\n"),
        _ => format!("{text}[[builder]\nname = \"unclosed\n"),
    }
}

fn describe(config: &Config) -> String {
    let workers: Vec<String> = config
        .workers
        .iter()
        .map(|w| format!("{}:{}", w.name, w.max_builds))
        .collect();
    let builders: Vec<String> = config
        .builders
        .iter()
        .map(|b| {
            let renamed = if b.previous_names.is_empty() {
                String::new()
            } else {
                format!("(was {})", b.previous_names.join(","))
            };
            format!(
                "{}{renamed}[{}]x{}",
                b.name,
                b.workers.join(","),
                b.steps.len()
            )
        })
        .collect();
    format!(
        "workers {} builders {}",
        workers.join(" "),
        builders.join(" ")
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seed(seed: u64, events: usize) -> Seen {
    let result = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed);
        for _ in 0..events {
            sim.step();
        }
        sim.seen
    });
    match result {
        Ok(seen) => seen,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "simulator seed {seed} failed.\nreproduce with: SIM_SEED={seed} cargo test --lib sim -- --nocapture\n{msg}"
            );
        }
    }
}

#[test]
fn simulated_histories_keep_the_invariants() {
    let events = env_u64("SIM_EVENTS").unwrap_or(200) as usize;
    if let Some(seed) = env_u64("SIM_SEED") {
        let mut sim = Sim::new(seed);
        for _ in 0..events {
            sim.step();
        }
        println!(
            "seed {seed}: {} events, all invariants held:",
            sim.history.len()
        );
        for line in &sim.history {
            println!("  {line}");
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS").unwrap_or(2000);
    let mut total = Seen::default();
    for seed in 0..seeds {
        let seen = run_seed(seed, events);
        total.builds_finished += seen.builds_finished;
        total.cancelled += seen.cancelled;
        total.renames += seen.renames;
        total.restarts += seen.restarts;
        total.reloads_applied += seen.reloads_applied;
        total.retries += seen.retries;
        total.resumed += seen.resumed;
        total.collapsed += seen.collapsed;
        total.not_retried += seen.not_retried;
        total.overdue += seen.overdue;
    }
    println!("{seeds} seeds x {events} events: {total:?}");
    // The histories must have exercised what the invariants are about.
    if seeds >= 100 && events >= 200 {
        assert!(total.builds_finished > seeds * 10, "{total:?}");
        assert!(total.cancelled > seeds, "{total:?}");
        assert!(total.renames > seeds / 10, "{total:?}");
        assert!(total.restarts > seeds, "{total:?}");
        assert!(total.reloads_applied > seeds * 5, "{total:?}");
        assert!(total.retries > seeds / 5, "{total:?}");
        assert!(total.resumed > seeds / 5, "{total:?}");
        assert!(total.not_retried > seeds / 20, "{total:?}");
        assert!(total.overdue > seeds / 5, "{total:?}");
    }
}

#[test]
fn the_simulator_catches_a_reload_that_drops_the_queue() {
    // A check that cannot fail proves nothing: plant a bug and see it caught.
    let caught = (0..50).any(|seed| {
        std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            sim.fault = Some(Fault::ReloadDropsQueue);
            for _ in 0..200 {
                sim.step();
            }
        })
        .is_err()
    });
    assert!(caught, "a reload that drops queued requests went unnoticed");
}

#[test]
fn the_simulator_catches_a_master_that_never_enforces_its_deadlines() {
    let caught = (0..50).any(|seed| {
        let r = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            sim.fault = Some(Fault::NoTicks);
            for _ in 0..200 {
                sim.step();
            }
        });
        r.is_err_and(|p| {
            p.downcast_ref::<String>()
                .is_some_and(|m| m.contains("past the master's deadline"))
        })
    });
    assert!(caught, "a master that ignores its deadlines went unnoticed");
}
