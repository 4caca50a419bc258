//! Locks: shared resources with a capacity, taken by builds and steps
//! (`[[lock]]`, `locks = [...]`; `docs/locks.md`).
//!
//! # The algorithm
//!
//! A lock *instance* is a lock of the config (`scope = "master"`: one
//! instance) or a lock on one worker (`scope = "worker"`: one instance per
//! worker, capacity `max` or its `worker_max`). A *claim* takes an
//! instance exclusively (it must have no holder at all) or counting with a
//! weight (no exclusive holder, and the holders' weights plus this one at
//! most the capacity).
//!
//! - **Build locks are waited for before a build exists.** The dispatch
//!   pass (`dispatch.rs`) goes through the heads of the builders' queues in
//!   run order (priority, then age). For a head, it lists the eligible free
//!   workers in the builder's `worker_choice` order, resolves the builder's
//!   claims for each (master-scoped claims name the same instance whatever
//!   the worker; worker-scoped ones the instance on that worker), and the
//!   request starts on the first worker whose claims can *all* be taken
//!   now (all or nothing). Only then does the build exist, with its worker
//!   slot and its locks. A request that could start but for a lock waits
//!   in the queue: it holds no lock and no worker slot.
//! - **First in, first out.** Within one dispatch pass, a claim that could
//!   not be granted *reserves* every instance it asked for: no later claim
//!   of the pass (in run order) may take a reserved instance, even one that
//!   would fit beside the holders. So a waiting exclusive claim is never
//!   overtaken by later counting claims. A request reserves only while it
//!   has a free eligible worker: one that waits for a worker anyway does
//!   not keep a free lock from others (nor could it use it).
//! - **Step locks are taken around their step.** When a build's step is
//!   due, its claims are resolved on the build's worker and taken all or
//!   nothing; otherwise the build waits between steps (keeping its worker
//!   slot and its build locks) and the pass tries again, step waiters
//!   first, in the order they began to wait. A step's locks are released
//!   when the step ends. A lock is taken by builds or by steps, never both
//!   (validation refuses it), so a waiting step can only wait for steps
//!   that run and end on their own: no deadlock.
//! - **Release on every end.** A build's holds (its own and its step's)
//!   go when the build leaves the running set, whatever the way: success,
//!   failure, stop, cancel, timeout, worker lost for good, retry. A waiting
//!   request holds nothing, so cancelling it releases nothing.
//! - **Reload never preempts.** Holds are kept whatever the new config
//!   says. A lower `max` only blocks new claims until the holders fall
//!   under it. A lock removed from the config lives on while it has
//!   holders; a claim naming a lock the config no longer has (a running
//!   build's stored definition) is dropped: there is nothing left to wait
//!   for, so the build is not held back by it. Builds and requests that
//!   were waiting for a removed lock are listed in the reload report
//!   (`lock_waiters_released`) and start as soon as nothing else blocks
//!   them. A counting weight above a lowered capacity counts as the
//!   capacity, so such a claim still runs alone once the lock is free.
//! - **A master restart** re-takes the holds of every re-adopted build
//!   (its build locks and its current step's) before the first dispatch
//!   pass, whatever the capacities: they were granted before the crash.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{LockAccess, LockClaim, LockDef, LockScope};
use crate::protocol::{BuildId, StepIndex};

/// One lock instance: the lock's name and, for a worker-scoped lock, the worker.
pub(crate) type Instance = (String, Option<String>);

/// Who holds a lock: a whole build, or one step of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    /// A build lock, held from before the first step to the build's end.
    Build(BuildId),
    /// A step lock, held around that step.
    Step(BuildId, StepIndex),
}

impl Holder {
    /// The build behind the hold.
    pub(crate) fn build(self) -> BuildId {
        match self {
            Holder::Build(b) | Holder::Step(b, _) => b,
        }
    }
}

/// A claim resolved to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Want {
    /// Which instance.
    pub(crate) instance: Instance,
    /// How it is taken.
    pub(crate) access: LockAccess,
    /// Its weight (0 for exclusive claims).
    pub(crate) weight: u32,
}

/// One hold of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    /// Who holds it.
    pub(crate) holder: Holder,
    /// How.
    pub(crate) access: LockAccess,
    /// With which weight.
    pub(crate) weight: u32,
    /// Since when (ms).
    pub(crate) since_ms: u64,
}

/// Why a claim waits: the first instance that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// The instance.
    pub(crate) instance: Instance,
    /// The builds holding it (empty: free, but reserved by an earlier waiter).
    pub(crate) held_by: Vec<BuildId>,
}

/// The locks of the config in force and who holds which instance.
#[derive(Debug, Clone, Default)]
pub(crate) struct LockTable {
    defs: BTreeMap<String, LockDef>,
    held: BTreeMap<Instance, Vec<Hold>>,
}

impl LockTable {
    /// Take the config's lock definitions; holds stay (reload never preempts).
    pub(crate) fn set_defs(&mut self, defs: &[LockDef]) {
        self.defs = defs.iter().map(|d| (d.name.clone(), d.clone())).collect();
    }

    /// A lock of the config in force.
    pub(crate) fn def(&self, name: &str) -> Option<&LockDef> {
        self.defs.get(name)
    }

    /// The capacity of an instance (0 for a lock no longer configured).
    pub(crate) fn capacity(&self, instance: &Instance) -> u32 {
        self.defs
            .get(&instance.0)
            .map_or(0, |d| d.max_on(instance.1.as_deref()))
    }

    /// Claims as instances on `worker`; claims of locks the config no
    /// longer has are dropped, weights above the capacity count as it.
    pub(crate) fn resolve(&self, claims: &[LockClaim], worker: &str) -> Vec<Want> {
        claims
            .iter()
            .filter_map(|c| {
                let def = self.defs.get(&c.name)?;
                let instance = match def.scope {
                    LockScope::Master => (c.name.clone(), None),
                    LockScope::Worker => (c.name.clone(), Some(worker.to_string())),
                };
                let weight = match c.access {
                    LockAccess::Exclusive => 0,
                    LockAccess::Counting => c.weight.clamp(1, self.capacity(&instance).max(1)),
                };
                Some(Want {
                    instance,
                    access: c.access,
                    weight,
                })
            })
            .collect()
    }

    /// Whether one claim fits beside the holders of its instance.
    fn fits(&self, want: &Want) -> bool {
        let holds = self.held.get(&want.instance).map_or(&[][..], Vec::as_slice);
        match want.access {
            LockAccess::Exclusive => holds.is_empty(),
            LockAccess::Counting => {
                let used: u64 = holds.iter().map(|h| u64::from(h.weight)).sum();
                holds.iter().all(|h| h.access == LockAccess::Counting)
                    && used + u64::from(want.weight) <= u64::from(self.capacity(&want.instance))
            }
        }
    }

    /// The first of `wants` that cannot be taken now, with why.
    pub(crate) fn blocker(&self, wants: &[Want], reserved: &BTreeSet<Instance>) -> Option<Blocked> {
        wants
            .iter()
            .find(|w| reserved.contains(&w.instance) || !self.fits(w))
            .map(|w| Blocked {
                instance: w.instance.clone(),
                held_by: self
                    .holders(&w.instance)
                    .map(|h| h.holder.build())
                    .collect(),
            })
    }

    /// Try the options in order (one per candidate worker): take the first
    /// whose claims all fit and are not reserved, and say which. If none
    /// does, every instance of every option becomes reserved for the rest
    /// of the pass (first in, first out), and the first option's blocker
    /// is returned.
    pub(crate) fn try_acquire(
        &mut self,
        holder: Holder,
        options: &[Vec<Want>],
        reserved: &mut BTreeSet<Instance>,
        now_ms: u64,
    ) -> Result<usize, Option<Blocked>> {
        for (i, wants) in options.iter().enumerate() {
            if self.blocker(wants, reserved).is_none() {
                self.take(holder, wants, now_ms);
                return Ok(i);
            }
        }
        let first = options.first().and_then(|w| self.blocker(w, reserved));
        for wants in options {
            reserved.extend(wants.iter().map(|w| w.instance.clone()));
        }
        Err(first)
    }

    /// Hold `wants` without checking (a grant, or a restart's re-claim).
    pub(crate) fn take(&mut self, holder: Holder, wants: &[Want], now_ms: u64) {
        for w in wants {
            self.held.entry(w.instance.clone()).or_default().push(Hold {
                holder,
                access: w.access,
                weight: w.weight,
                since_ms: now_ms,
            });
        }
    }

    /// Release every hold of which `gone` says yes; instances of removed
    /// locks are forgotten once free.
    pub(crate) fn release(&mut self, gone: impl Fn(Holder) -> bool) {
        for holds in self.held.values_mut() {
            holds.retain(|h| !gone(h.holder));
        }
        self.held.retain(|_, holds| !holds.is_empty());
    }

    /// Release a build's holds, its steps' included.
    pub(crate) fn release_build(&mut self, build: BuildId) {
        self.release(|h| h.build() == build);
    }

    /// The holds of one instance.
    pub(crate) fn holders(&self, instance: &Instance) -> impl Iterator<Item = &Hold> {
        self.held.get(instance).into_iter().flatten()
    }

    /// Every held instance with its holds.
    pub(crate) fn held(&self) -> impl Iterator<Item = (&Instance, &Vec<Hold>)> {
        self.held.iter()
    }

    /// Every configured lock.
    pub(crate) fn defs(&self) -> impl Iterator<Item = &LockDef> {
        self.defs.values()
    }
}

/// A number from the request id, for `worker_choice = "random"`: the same
/// request always picks the same way (no random state in the core), and
/// consecutive requests spread (splitmix64).
pub(crate) fn spread(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
