//! Locks: their definitions, scopes and the claims builders make on them.

use std::collections::BTreeMap;

/// A `[[lock]]`: a shared resource with a capacity (`docs/locks.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDef {
    /// Unique lock name, matched across reloads.
    pub name: String,
    /// One lock for the whole master, or one per worker.
    pub scope: LockScope,
    /// Capacity: the sum of counting weights it admits at once (an
    /// exclusive claim takes it whole); per worker for `scope = "worker"`.
    pub max: u32,
    /// `worker_max = { box-2 = 2 }`: per-worker capacities of a
    /// worker-scoped lock, over `max`.
    pub worker_max: BTreeMap<String, u32>,
}

impl LockDef {
    /// The capacity of this lock's instance on `worker` (`None`: the
    /// master-wide instance).
    pub fn max_on(&self, worker: Option<&str>) -> u32 {
        worker
            .and_then(|w| self.worker_max.get(w).copied())
            .unwrap_or(self.max)
    }
}

/// Where a lock's capacity applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockScope {
    /// One lock shared by all workers.
    #[default]
    Master,
    /// One lock per worker, each with capacity `max`.
    Worker,
}

/// How a claim takes a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockAccess {
    /// Alone: no other holder at all.
    Exclusive,
    /// Shared, `weight` of the lock's `max`.
    Counting,
}

/// `locks = [{ name = "rig", access = "exclusive" }]` on a builder or a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockClaim {
    /// The lock's name.
    pub name: String,
    /// Exclusive or counting.
    pub access: LockAccess,
    /// How much of `max` a counting claim takes (1 unless set; 0 for
    /// exclusive claims, which take the whole lock).
    pub weight: u32,
}
