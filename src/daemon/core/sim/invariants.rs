//! The invariants of `docs/architecture.md` ("The invariants"), checked
//! after every event: nothing lost, no step stuck or past a deadline,
//! queues in order, free workers used, worker slots counted right.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::config::LockAccess;
use crate::daemon::core::locks::{Holder, Instance};

impl Sim {
    pub(super) fn check(&self) {
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
                    if let Some((next, _)) = rb.pending_step {
                        // Between steps, waiting for the next step's locks
                        // (invariant 3 says it cannot take them now).
                        if out.iter().any(|(b, _)| b == id) || next != rb.step + 1 && next != 0 {
                            self.fail(format!(
                                "build {id} waits for step {next} but a step is out"
                            ));
                        }
                    } else if !out.contains(&(*id, rb.step)) && !core.is_waiting(*id) {
                        // (A build in a waiting trigger step runs nothing on
                        // its worker; its wait is checked in `timers.rs`.)
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
        // 3. Dispatch is complete: one more pass would start nothing (no
        // step waiter's locks, no queued request with a free eligible
        // worker and its locks free under first in, first out). This is
        // "no waiter starves while what it waits for is free", and "a
        // queued request with a free eligible worker is dispatched" when
        // no lock or max_running holds it.
        let mut again = core.clone();
        again.effects.clear();
        again.dispatch(self.now);
        if let Some(e) = again.effects.iter().find(|e| {
            matches!(
                e,
                Effect::ToWorker {
                    cmd: WorkerCmd::Start(_),
                    ..
                } | Effect::Record(Record::BuildStarted { .. })
            )
        }) {
            self.fail(format!(
                "a dispatch pass would still start something: {e:?}"
            ));
        }
        self.check_locks();
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
        // 8. Changes: every important change a scheduler took is built by
        // it exactly once (checked as records arrive), or still waits in
        // it, or was listed as dropped by a reload; and no scheduler's
        // timer is overdue (the shell ticks at every deadline).
        let mut pending: BTreeMap<&str, BTreeSet<ChangeId>> = BTreeMap::new();
        for ((name, c), owed) in &self.owed {
            if !owed.important || owed.built.is_some() {
                continue;
            }
            let waiting = pending
                .entry(name.as_str())
                .or_insert_with(|| core.scheduler_pending(name).into_iter().collect());
            if !waiting.contains(c) {
                self.fail(format!(
                    "important change {c} was lost by scheduler {name}: not built, not pending, not dropped"
                ));
            }
        }
        if self.fault != Some(Fault::NoTicks)
            && let Some(due) = core.next_scheduler_deadline()
            && due <= self.now
        {
            self.fail(format!(
                "a scheduler's timer is overdue ({due} <= {})",
                self.now
            ));
        }
    }
}

impl Sim {
    /// The invariants of locks, tags and `max_running`, against the state
    /// before the event (`self.before`).
    fn check_locks(&self) {
        let core = &self.core;
        let holds: BTreeSet<(Instance, Holder)> = core
            .locks
            .held()
            .flat_map(|(i, hs)| hs.iter().map(move |h| (i.clone(), h.holder)))
            .collect();
        // No lock is held by a build that ended, and a step lock only
        // while its step runs.
        for (i, h) in &holds {
            let Some(b) = core.builds.get(&h.build()) else {
                self.fail(format!("lock {i:?} is held by {h:?}, which has ended"));
            };
            if let Holder::Step(_, s) = h
                && (b.step != *s || b.pending_step.is_some())
            {
                self.fail(format!(
                    "lock {i:?} is held by {h:?} but the build is at step {} ({:?})",
                    b.step, b.pending_step
                ));
            }
        }
        // Who waits is waiting: a queued request, or a build between steps.
        for who in core.lock_waits.keys() {
            let ok = match who {
                LockWaiter::Request(r) => core.requests.get(r).is_some_and(|q| q.build.is_none()),
                LockWaiter::Step(b) => core.builds.get(b).is_some_and(|b| b.pending_step.is_some()),
            };
            if !ok {
                self.fail(format!(
                    "{who:?} is listed as waiting for a lock but is not"
                ));
            }
        }
        let Some(before) = &self.before else {
            return;
        };
        // Reload (nor anything else) never takes a lock from its holder: a
        // hold goes only with its build, or a step hold with its step.
        for (i, h) in before.holds.difference(&holds) {
            let still = core.builds.get(&h.build()).is_some_and(|b| match h {
                Holder::Build(_) => true,
                Holder::Step(_, s) => b.step == *s && b.pending_step.is_none(),
            });
            if still {
                self.fail(format!("{h:?} lost its hold of {i:?} while it still runs"));
            }
        }
        // A hold granted by this event fits its lock's capacity with all
        // the holders: exclusive means alone, counting weights within max.
        for (i, _) in holds.difference(&before.holds) {
            let hs: Vec<_> = core.locks.holders(i).collect();
            let exclusive = hs.iter().any(|h| h.access == LockAccess::Exclusive);
            let used: u64 = hs.iter().map(|h| u64::from(h.weight)).sum();
            if (exclusive && hs.len() > 1) || used > u64::from(core.locks.capacity(i)) {
                self.fail(format!(
                    "lock {i:?} was granted beyond its capacity {}: {hs:?}",
                    core.locks.capacity(i)
                ));
            }
        }
        // Builds started by this event: on an eligible worker (list and
        // tags), within max_running, holding all their build locks.
        for (id, b) in &core.builds {
            if before.builds.contains(id) {
                continue;
            }
            let Some(state) = core.builders.get(&b.builder) else {
                continue;
            };
            let Some(w) = core.workers.get(&b.worker) else {
                self.fail(format!("build {id} started on unknown worker {}", b.worker));
            };
            if !Core::eligible(&state.def, w) {
                self.fail(format!(
                    "build {id} of {} started on {}, which is not eligible (tags {:?})",
                    b.builder, b.worker, w.def.tags
                ));
            }
            if let Some(max) = state.def.max_running {
                let n = core
                    .builds
                    .values()
                    .filter(|x| x.builder == b.builder)
                    .count();
                if n > max as usize {
                    self.fail(format!(
                        "builder {} runs {n} builds, max_running {max}",
                        b.builder
                    ));
                }
            }
            for want in core.locks.resolve(&b.def.locks, &b.worker) {
                if !holds.contains(&(want.instance.clone(), Holder::Build(*id))) {
                    self.fail(format!(
                        "build {id} started without its lock {:?}",
                        want.instance
                    ));
                }
            }
        }
    }

    /// The planted bug of [`Fault::LocksLeak`]: the holds of builds that
    /// ended in this event come back.
    pub(super) fn leak_locks(&mut self) {
        let Some(before) = &self.before else {
            return;
        };
        let leaked: Vec<(Instance, Holder)> = before
            .holds
            .iter()
            .filter(|(_, h)| !self.core.builds.contains_key(&h.build()))
            .cloned()
            .collect();
        for (instance, holder) in leaked {
            let want = crate::daemon::core::locks::Want {
                instance,
                access: LockAccess::Counting,
                weight: 1,
            };
            self.core.locks.take(holder, &[want], self.now);
        }
    }

    /// What the lock checks compare with: taken before each event.
    pub(super) fn snapshot(&self) -> Before {
        Before {
            holds: self
                .core
                .locks
                .held()
                .flat_map(|(i, hs)| hs.iter().map(move |h| (i.clone(), h.holder)))
                .collect(),
            builds: self.core.builds.keys().copied().collect(),
        }
    }
}

/// The state before an event, for the checks of what it changed.
#[derive(Debug, Clone, Default)]
pub(super) struct Before {
    holds: BTreeSet<(Instance, Holder)>,
    builds: BTreeSet<BuildId>,
}
