//! Configs whose waiting `trigger` steps can never end (`docs/locks.md`,
//! "Trigger steps that wait").
//!
//! A build in a `trigger` step with `wait = true` keeps its worker slot,
//! its build locks and the step's own locks until every build it
//! triggered has ended. Three shapes of config make that wait endless:
//!
//! - a **cycle** of waiting triggers: `A` waits for `B`, which (directly or
//!   through more waiting triggers) triggers `A` again: every build waits
//!   for one that waits for it;
//! - a **lock**: a triggered builder (or one it waits for in turn) needs a
//!   lock the waiting builds hold exclusively, or a counting lock without
//!   room for both;
//! - **worker slots**: the triggered builder can run only on workers whose
//!   slots the waiting builds fill.
//!
//! Each finding is `refused` when every build of the triggering builder
//! would wait forever whatever else runs (a cycle; a lock or slot on the
//! one worker both builders are pinned to, or a master-wide lock). It is a
//! warning when it depends on load or on where builds land: enough builds
//! of the triggering builder at once fill every slot its triggered builds
//! could use, or it ran on the one worker where they need the lock. Those
//! configs work as long as the load stays below that; refusing them would
//! refuse most configs with one shared worker. The warning says the limit.
//!
//! Pure: the model in, findings out. Validation turns them into problems
//! and warnings at the trigger step; the simulator uses them to make only
//! configs validation accepts.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    BuilderDef, LockAccess, LockClaim, LockDef, LockScope, SchedulerDef, SchedulerKind, StepAction,
    StepDef, WorkerDef,
};

/// A waiting trigger step that may never end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The triggering builder.
    pub builder: String,
    /// The index of its trigger step.
    pub step: usize,
    /// True: every such build waits forever (validation refuses the
    /// config); false: under enough load (a warning).
    pub refused: bool,
    /// What and why, in words, naming the builder, step and scheduler.
    pub message: String,
}

/// The findings of a whole config, at most one per trigger step and
/// kind of problem, in builder and step order.
pub fn trigger_deadlocks(
    builders: &[BuilderDef],
    schedulers: &[SchedulerDef],
    locks: &[LockDef],
    workers: &[WorkerDef],
) -> Vec<Finding> {
    let view = View {
        builders: builders.iter().map(|b| (b.name.as_str(), b)).collect(),
        triggerable: schedulers
            .iter()
            .filter(|s| matches!(s.kind, SchedulerKind::Triggerable))
            .map(|s| (s.name.as_str(), s.builders.as_slice()))
            .collect(),
        locks: locks.iter().map(|l| (l.name.as_str(), l)).collect(),
        workers,
    };
    let mut found = BTreeSet::new();
    for a in builders {
        for (i, step) in a.steps.iter().enumerate() {
            if view.waits(step).is_empty() {
                continue;
            }
            let at = (a.name.clone(), i);
            if let Some(cycle) = view.cycle(a, step) {
                found.insert(finding(&at, true, cycle));
                continue;
            }
            let mut walk = Walk {
                view: &view,
                root: a,
                root_step: step,
                said: BTreeSet::new(),
                out: Vec::new(),
            };
            walk.visit_targets(&mut vec![Holder { builder: a, step }]);
            for (refused, message) in walk.out {
                found.insert(finding(&at, refused, message));
            }
        }
    }
    found.into_iter().collect()
}

fn finding(at: &(String, usize), refused: bool, message: String) -> Finding {
    Finding {
        builder: at.0.clone(),
        step: at.1,
        refused,
        message,
    }
}

/// The config, indexed.
struct View<'a> {
    builders: BTreeMap<&'a str, &'a BuilderDef>,
    triggerable: BTreeMap<&'a str, &'a [String]>,
    locks: BTreeMap<&'a str, &'a LockDef>,
    workers: &'a [WorkerDef],
}

/// A build waiting in a trigger step: it holds its build locks and the
/// step's locks.
#[derive(Clone, Copy)]
struct Holder<'a> {
    builder: &'a BuilderDef,
    step: &'a StepDef,
}

impl<'a> View<'a> {
    /// What a step waits for: `(scheduler, builder)` pairs; empty unless
    /// it is a trigger step with `wait = true`.
    fn waits(&self, step: &'a StepDef) -> Vec<(&'a str, &'a BuilderDef)> {
        let StepAction::Trigger(spec) = &step.action else {
            return Vec::new();
        };
        if !spec.wait {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in &spec.schedulers {
            let Some((name, targets)) = self.triggerable.get_key_value(s.as_str()) else {
                continue;
            };
            for b in targets.iter() {
                if let Some(def) = self.builders.get(b.as_str()) {
                    out.push((*name, *def));
                }
            }
        }
        out
    }

    /// The builder's waiting trigger steps and what each waits for.
    fn waiting_steps(
        &self,
        b: &'a BuilderDef,
    ) -> impl Iterator<Item = (&'a StepDef, Vec<(&'a str, &'a BuilderDef)>)> + '_ {
        b.steps
            .iter()
            .map(|s| (s, self.waits(s)))
            .filter(|(_, w)| !w.is_empty())
    }

    /// A cycle of waiting triggers through `a`'s step `step`, in words.
    fn cycle(&self, a: &'a BuilderDef, step: &'a StepDef) -> Option<String> {
        // Breadth first from what the step waits for, back to `a`; each
        // builder is entered once, with the hop that reached it.
        let mut came: BTreeMap<&str, (&str, &str, &str)> = BTreeMap::new();
        let mut frontier: Vec<&BuilderDef> = Vec::new();
        for (s, b) in self.waits(step) {
            if !came.contains_key(b.name.as_str()) {
                came.insert(&b.name, (&a.name, &step.name, s));
                frontier.push(b);
            }
        }
        while !frontier.is_empty() {
            if came.contains_key(a.name.as_str()) {
                break;
            }
            let mut next = Vec::new();
            for b in frontier {
                for (u, targets) in self.waiting_steps(b) {
                    for (s, c) in targets {
                        if !came.contains_key(c.name.as_str()) {
                            came.insert(&c.name, (&b.name, &u.name, s));
                            next.push(c);
                        }
                    }
                }
            }
            frontier = next;
        }
        // Walk the hops back from `a` to `a`.
        let mut hops = Vec::new();
        let mut at = came.get(a.name.as_str()).copied()?;
        loop {
            let (from, via_step, via_scheduler) = at;
            hops.push((from, via_step, via_scheduler));
            if from == a.name && via_step == step.name {
                break;
            }
            at = *came.get(from)?;
            if hops.len() > self.builders.len() + 1 {
                return None;
            }
        }
        hops.reverse();
        let mut chain = Vec::new();
        for (i, (from, via_step, via_scheduler)) in hops.iter().enumerate() {
            let to = hops.get(i + 1).map_or(a.name.as_str(), |h| h.0);
            chain.push(format!(
                "`{from}` (step `{via_step}`) waits for `{to}` through scheduler `{via_scheduler}`"
            ));
        }
        Some(format!(
            "builder `{}`, step `{}`: waiting triggers form a cycle: {}; every build would wait \
             for one that waits for it, forever. Set `wait = false` on one of these steps",
            a.name,
            step.name,
            chain.join(", ")
        ))
    }

    /// The workers that may run builds of `b`.
    fn eligible(&self, b: &BuilderDef) -> Vec<&'a WorkerDef> {
        self.workers
            .iter()
            .filter(|w| {
                (b.workers.is_empty() || b.workers.contains(&w.name))
                    && b.worker_tags.iter().all(|t| w.tags.contains(t))
            })
            .collect()
    }
}

/// A walk from one trigger step through the builds it waits for.
struct Walk<'v, 'a> {
    view: &'v View<'a>,
    root: &'a BuilderDef,
    root_step: &'a StepDef,
    said: BTreeSet<String>,
    out: Vec<(bool, String)>,
}

impl<'a> Walk<'_, 'a> {
    fn say(&mut self, refused: bool, message: String) {
        if self.said.insert(message.clone()) {
            self.out.push((refused, message));
        }
    }

    /// Check every build the last holder waits for, then go on through
    /// their own waiting trigger steps.
    fn visit_targets(&mut self, chain: &mut Vec<Holder<'a>>) {
        let last = *chain.last().expect("a chain has its root");
        for (scheduler, b) in self.view.waits(last.step) {
            if chain.iter().any(|h| h.builder.name == b.name) {
                continue; // a cycle: reported as one
            }
            self.locks(chain, scheduler, b);
            self.slots(chain, scheduler, b);
            let steps: Vec<_> = self.view.waiting_steps(b).map(|(s, _)| s).collect();
            for step in steps {
                chain.push(Holder { builder: b, step });
                self.visit_targets(chain);
                chain.pop();
            }
        }
    }

    /// Does `b` need a lock the waiting chain holds, without room left?
    fn locks(&mut self, chain: &[Holder<'a>], scheduler: &str, b: &'a BuilderDef) {
        let needs = b
            .locks
            .iter()
            .map(|c| (c, "for the whole build".to_string()))
            .chain(b.steps.iter().flat_map(|s| {
                s.locks
                    .iter()
                    .map(move |c| (c, format!("in step `{}`", s.name)))
            }));
        for (need, where_) in needs {
            let Some(lock) = self.view.locks.get(need.name.as_str()).copied() else {
                continue;
            };
            let holds: Vec<(&BuilderDef, &LockClaim)> = chain
                .iter()
                .flat_map(|h| {
                    h.builder
                        .locks
                        .iter()
                        .chain(h.step.locks.iter())
                        .filter(|c| c.name == need.name)
                        .map(move |c| (h.builder, c))
                })
                .collect();
            if holds.is_empty() {
                continue;
            }
            // A worker-scoped lock is one per worker: the builds collide
            // only when `b` can run on one worker alone, where they are.
            let (capacity, holds, pinned, on) = match lock.scope {
                LockScope::Master => (lock.max, holds, true, String::new()),
                LockScope::Worker => {
                    let only = self.view.eligible(b);
                    let [w] = only.as_slice() else { continue };
                    let here: Vec<_> = holds
                        .into_iter()
                        .filter(|(h, _)| self.view.eligible(h).iter().any(|x| x.name == w.name))
                        .collect();
                    let pinned = here.iter().all(|(h, _)| self.view.eligible(h).len() == 1);
                    let on = format!(" on worker `{}`", w.name);
                    (lock.max_on(Some(&w.name)), here, pinned, on)
                }
            };
            let held: u64 = holds.iter().map(|(_, c)| u64::from(c.weight)).sum();
            let exclusive = need.access == LockAccess::Exclusive
                || holds.iter().any(|(_, c)| c.access == LockAccess::Exclusive);
            if holds.is_empty()
                || !(exclusive || held + u64::from(need.weight) > u64::from(capacity))
            {
                continue;
            }
            let holders: Vec<String> = holds
                .iter()
                .map(|(h, c)| format!("`{}` ({})", h.name, access(c, capacity)))
                .collect();
            let when = if pinned {
                String::new()
            } else {
                format!(" when they run{on}")
            };
            let message = format!(
                "builder `{root}`, step `{step}`: while it waits for the builds it triggers, \
                 {holders} hold{s} lock `{lock}`{on}; builder `{b}` (scheduler `{scheduler}`) \
                 needs it ({need}, {where_}) and can never get it{when}, so neither build ends. \
                 Set `wait = false`, or claim `{lock}` in the steps that need it instead of for \
                 the whole build{raise}",
                root = self.root.name,
                step = self.root_step.name,
                holders = holders.join(" and "),
                s = if holders.len() == 1 { "s" } else { "" },
                lock = lock.name,
                b = b.name,
                need = access(need, capacity),
                raise = if exclusive {
                    String::new()
                } else {
                    format!(", or raise its `max` to {}", held + u64::from(need.weight))
                },
            );
            self.say(pinned, message);
        }
    }

    /// Can `b` get a worker slot while the chain's builds wait?
    fn slots(&mut self, chain: &[Holder<'a>], scheduler: &str, b: &'a BuilderDef) {
        let only = self.view.eligible(b);
        if only.is_empty() {
            return;
        }
        // Refused: the waiting builds and `b` all run on one worker, and
        // the waiting builds alone fill it.
        if let [w] = only.as_slice()
            && chain.iter().all(|h| {
                let e = self.view.eligible(h.builder);
                e.len() == 1 && e[0].name == w.name
            })
            && w.max_builds as usize <= chain.len()
        {
            let message = format!(
                "builder `{root}`, step `{step}`: builder `{b}` (scheduler `{scheduler}`) can run \
                 only on worker `{w}` (max_builds {m}), where the waiting build{s} of {waiting} \
                 already take{t} every slot: the triggered build never starts. Raise `{w}`'s \
                 max_builds above {m}, give `{b}` another worker, or set `wait = false`",
                root = self.root.name,
                step = self.root_step.name,
                b = b.name,
                w = w.name,
                m = w.max_builds,
                s = if chain.len() == 1 { "" } else { "s" },
                t = if chain.len() == 1 { "s" } else { "" },
                waiting = chain
                    .iter()
                    .map(|h| format!("`{}`", h.builder.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            self.say(true, message);
            return;
        }
        // A warning: builds of the root can fill every slot `b` could use.
        if chain.len() != 1 {
            return;
        }
        let root_workers = self.view.eligible(self.root);
        if !only
            .iter()
            .all(|w| root_workers.iter().any(|r| r.name == w.name))
        {
            return;
        }
        let slots: u64 = only.iter().map(|w| u64::from(w.max_builds)).sum();
        if self.root.max_running.is_some_and(|m| u64::from(m) < slots) {
            return;
        }
        let names: Vec<String> = only
            .iter()
            .map(|w| format!("`{}` (max_builds {})", w.name, w.max_builds))
            .collect();
        let message = format!(
            "builder `{root}`, step `{step}`: builder `{b}` (scheduler `{scheduler}`) runs only \
             on workers that `{root}` runs on too ({names}); {slots} builds of `{root}` waiting \
             at once fill every slot and none of them ends. Set `max_running` on `{root}` below \
             {slots}, or give `{b}` a worker of its own",
            root = self.root.name,
            step = self.root_step.name,
            b = b.name,
            names = names.join(", "),
        );
        self.say(false, message);
    }
}

/// A claim in words: `exclusive`, or `weight 2 of max 3`.
fn access(c: &LockClaim, capacity: u32) -> String {
    match c.access {
        LockAccess::Exclusive => "exclusive".into(),
        LockAccess::Counting => format!("weight {} of max {capacity}", c.weight),
    }
}

#[cfg(test)]
mod tests;
