//! The invariants of `docs/architecture.md` ("The invariants"), checked
//! after every event: nothing lost, no step stuck or past a deadline,
//! queues in order, free workers used, worker slots counted right.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;

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
                    // A build in a waiting trigger step runs nothing on its
                    // worker (its wait is checked in `timers.rs`).
                    if !out.contains(&(*id, rb.step)) && !core.is_waiting(*id) {
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
