//! A reference model of locks, plain and obviously correct, and a
//! property test that the core's lock table (`locks.rs`, which dispatch
//! drives) grants exactly what the model grants over random sequences of
//! claims, releases, cancels of waiters and reloads.
//!
//! The model keeps no per-lock counters: it keeps the list of grants and
//! recomputes every lock's use from it, and it serves waiters in arrival
//! order with the rule of `docs/locks.md` said directly: a waiter takes
//! its locks if each one is free enough *and* no earlier waiter still
//! waits for it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::locks::{Holder, LockTable};
use crate::config::{LockAccess, LockClaim, LockDef, LockScope};

const LOCKS: [&str; 3] = ["l0", "l1", "l2"];

/// One claim: (lock index, exclusive, weight).
type Claim = (usize, bool, u32);

#[derive(Debug, Clone)]
enum Op {
    /// A new waiter with these claims.
    Claim(Vec<Claim>),
    /// The n-th current holder (mod their number) ends.
    Release(usize),
    /// The n-th current waiter (mod their number) is cancelled.
    Cancel(usize),
    /// New capacities; `None` removes the lock.
    Reload(Vec<Option<u32>>),
}

#[derive(Default)]
struct Model {
    max: BTreeMap<&'static str, u32>,
    /// (holder, lock, exclusive, weight)
    grants: Vec<(u64, &'static str, bool, u32)>,
    /// (waiter, claims), arrival order.
    waiting: Vec<(u64, Vec<Claim>)>,
}

impl Model {
    fn fits(&self, lock: &str, exclusive: bool, weight: u32) -> bool {
        let max = self.max[lock];
        let holds: Vec<_> = self.grants.iter().filter(|g| g.1 == lock).collect();
        if exclusive {
            holds.is_empty()
        } else {
            let used: u32 = holds.iter().map(|g| g.3).sum();
            holds.iter().all(|g| !g.2) && used + weight.min(max) <= max
        }
    }

    /// Serve the waiters in order; returns nothing, changes `grants`.
    fn pass(&mut self) {
        let mut taken_by_earlier: BTreeSet<&str> = BTreeSet::new();
        let mut still = Vec::new();
        for (id, claims) in std::mem::take(&mut self.waiting) {
            let live: Vec<Claim> = claims
                .iter()
                .copied()
                .filter(|c| self.max.contains_key(LOCKS[c.0]))
                .collect();
            let ok = live
                .iter()
                .all(|c| !taken_by_earlier.contains(LOCKS[c.0]) && self.fits(LOCKS[c.0], c.1, c.2));
            if ok {
                for c in live {
                    let max = self.max[LOCKS[c.0]];
                    let w = if c.1 { 0 } else { c.2.min(max) };
                    self.grants.push((id, LOCKS[c.0], c.1, w));
                }
            } else {
                taken_by_earlier.extend(live.iter().map(|c| LOCKS[c.0]));
                still.push((id, claims));
            }
        }
        self.waiting = still;
    }
}

fn defs(max: &[Option<u32>]) -> Vec<LockDef> {
    max.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some(LockDef {
                name: LOCKS[i].into(),
                scope: LockScope::Master,
                max: (*m)?,
                worker_max: BTreeMap::new(),
            })
        })
        .collect()
}

fn claims(c: &[Claim]) -> Vec<LockClaim> {
    c.iter()
        .map(|(i, excl, w)| LockClaim {
            name: LOCKS[*i].into(),
            access: if *excl {
                LockAccess::Exclusive
            } else {
                LockAccess::Counting
            },
            weight: if *excl { 0 } else { *w },
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::btree_map(0..3usize, (any::<bool>(), 1..4u32), 1..3)
            .prop_map(|m| Op::Claim(m.into_iter().map(|(l, (e, w))| (l, e, w)).collect())),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => prop::collection::vec(prop::option::weighted(0.85, 1..4u32), 3).prop_map(Op::Reload),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn the_lock_table_grants_what_the_model_grants(ops in prop::collection::vec(op(), 1..60)) {
        let initial = vec![Some(2), Some(1), Some(3)];
        let mut model = Model::default();
        for d in defs(&initial) {
            model.max.insert(LOCKS.iter().find(|l| **l == d.name).unwrap(), d.max);
        }
        let mut table = LockTable::default();
        table.set_defs(&defs(&initial));
        // The table's side of the waiters, in arrival order.
        let mut waiting: Vec<(u64, Vec<Claim>)> = Vec::new();
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Claim(c) => {
                    model.waiting.push((next, c.clone()));
                    waiting.push((next, c));
                    next += 1;
                }
                Op::Release(n) => {
                    let holders: BTreeSet<u64> = model.grants.iter().map(|g| g.0).collect();
                    if let Some(h) = holders.iter().nth(n % holders.len().max(1)).copied() {
                        model.grants.retain(|g| g.0 != h);
                        table.release_build(h);
                    }
                }
                Op::Cancel(n) => {
                    if !waiting.is_empty() {
                        let i = n % waiting.len();
                        waiting.remove(i);
                        model.waiting.remove(i);
                    }
                }
                Op::Reload(max) => {
                    model.max = defs(&max)
                        .iter()
                        .map(|d| (*LOCKS.iter().find(|l| **l == d.name).unwrap(), d.max))
                        .collect();
                    table.set_defs(&defs(&max));
                }
            }
            model.pass();
            // The table, driven the way dispatch drives it.
            let mut reserved = BTreeSet::new();
            let mut still = Vec::new();
            for (id, c) in std::mem::take(&mut waiting) {
                let wants = table.resolve(&claims(&c), "w");
                if table.try_acquire(Holder::Build(id), &[wants], &mut reserved, 0).is_err() {
                    still.push((id, c));
                }
            }
            waiting = still;
            let waiting_ids: Vec<u64> = waiting.iter().map(|w| w.0).collect();
            let model_ids: Vec<u64> = model.waiting.iter().map(|w| w.0).collect();
            prop_assert_eq!(&waiting_ids, &model_ids);
            let mut from_table: Vec<(u64, String, u32)> = table
                .held()
                .flat_map(|(i, holds)| holds.iter().map(move |h| (h.holder.build(), i.0.clone(), h.weight)))
                .collect();
            from_table.sort();
            let mut from_model: Vec<(u64, String, u32)> = model
                .grants
                .iter()
                .map(|g| (g.0, g.1.to_string(), g.3))
                .collect();
            from_model.sort();
            prop_assert_eq!(from_table, from_model);
        }
    }
}
