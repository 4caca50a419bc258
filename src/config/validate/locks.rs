//! Checks of `[[lock]]` entries, of the `locks` that builders and steps
//! claim, and of how builders pick workers (`worker_tags`,
//! `worker_choice`, `max_running`).

use std::collections::BTreeMap;

use toml::Spanned;

use super::super::model::{LockAccess, LockClaim, LockDef, LockScope, WorkerChoice};
use super::super::raw::{RawBuilder, RawLock, RawLockClaim, RawWorker};
use super::Checker;

/// Highest allowed `max` of a lock (and `weight` of a claim).
const MAX_LOCK_LIMIT: i64 = 10_000;

impl Checker<'_> {
    /// All `[[lock]]` entries, then duplicate names.
    pub(super) fn locks(&mut self, raw: &[RawLock], workers: &[RawWorker]) -> Vec<LockDef> {
        let known: Vec<&str> = workers.iter().map(|w| w.name.get_ref().as_str()).collect();
        let locks = raw.iter().map(|l| self.lock(l, &known)).collect();
        self.duplicates(raw.iter().map(|l| &l.name), |n| {
            format!("duplicate lock name `{n}`")
        });
        locks
    }

    /// A capacity between 1 and [`MAX_LOCK_LIMIT`].
    fn capacity(&mut self, owner: &str, key: &str, raw: &Spanned<i64>) -> u32 {
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (1..=MAX_LOCK_LIMIT).contains(&i64::from(n)) => n,
            _ => {
                self.report(
                    &raw.span(),
                    format!(
                        "{owner}: `{key}` must be between 1 and {MAX_LOCK_LIMIT}, not {}",
                        raw.get_ref()
                    ),
                );
                1
            }
        }
    }

    /// One lock: name, scope, capacities.
    fn lock(&mut self, raw: &RawLock, known: &[&str]) -> LockDef {
        self.name("lock", &raw.name);
        let name = raw.name.get_ref();
        let owner = format!("lock `{name}`");
        let scope = match &raw.scope {
            None => LockScope::Master,
            Some(s) => match s.get_ref().as_str() {
                "master" => LockScope::Master,
                "worker" => LockScope::Worker,
                other => {
                    self.report(
                        &s.span(),
                        format!("{owner}: `scope` must be \"master\" or \"worker\", not {other:?}"),
                    );
                    LockScope::Master
                }
            },
        };
        let max = raw
            .max
            .as_ref()
            .map_or(1, |m| self.capacity(&owner, "max", m));
        let mut worker_max = BTreeMap::new();
        for (worker, value) in &raw.worker_max {
            let w = worker.get_ref();
            if scope != LockScope::Worker {
                self.report(
                    &worker.span(),
                    format!(
                        "{owner}: `worker_max` applies to locks with scope = \"worker\" only \
                         (this one is one lock for the whole master)"
                    ),
                );
                break;
            }
            if !known.contains(&w.as_str()) {
                let hint = crate::suggest::did_you_mean(w, known.iter().copied());
                self.report(
                    &worker.span(),
                    format!("{owner}: `worker_max` names unknown worker `{w}`{hint}"),
                );
                continue;
            }
            let n = self.capacity(&owner, &format!("worker_max.{w}"), value);
            worker_max.insert(w.clone(), n);
        }
        LockDef {
            name: name.clone(),
            scope,
            max,
            worker_max,
        }
    }

    /// The `locks` of a builder or a step: known locks, a valid access, a
    /// weight that fits, each lock once.
    pub(super) fn claims(
        &mut self,
        owner: &str,
        raw: &[Spanned<RawLockClaim>],
        locks: &[LockDef],
    ) -> Vec<LockClaim> {
        let mut out: Vec<LockClaim> = Vec::new();
        for entry in raw {
            let claim = entry.get_ref();
            let Some(name) = &claim.name else {
                continue;
            };
            if self.placeholders.contains(&name.span().start) {
                // A missing name, reported by the schema walk.
                continue;
            }
            let lock_name = name.get_ref();
            let def = locks.iter().find(|l| l.name == *lock_name);
            if def.is_none() {
                let hint =
                    crate::suggest::did_you_mean(lock_name, locks.iter().map(|l| l.name.as_str()));
                let known = if !hint.is_empty() {
                    hint
                } else if locks.is_empty() {
                    " (no [[lock]] is defined)".to_owned()
                } else {
                    let names: Vec<&str> = locks.iter().map(|l| l.name.as_str()).collect();
                    format!(" (known locks: {})", names.join(", "))
                };
                self.report(
                    &name.span(),
                    format!("{owner}: unknown lock `{lock_name}`{known}"),
                );
            }
            if out.iter().any(|c| c.name == *lock_name) {
                self.report(
                    &name.span(),
                    format!("{owner}: lock `{lock_name}` is claimed twice"),
                );
                continue;
            }
            let access = match &claim.access {
                None => {
                    self.report(
                        &entry.span(),
                        format!(
                            "{owner}: lock `{lock_name}` needs `access = \"exclusive\"` or \
                             `access = \"counting\"`"
                        ),
                    );
                    LockAccess::Exclusive
                }
                Some(a) => match a.get_ref().as_str() {
                    "exclusive" => LockAccess::Exclusive,
                    "counting" => LockAccess::Counting,
                    other => {
                        self.report(
                            &a.span(),
                            format!(
                                "{owner}: lock `{lock_name}`: `access` must be \"exclusive\" \
                                 or \"counting\", not {other:?}"
                            ),
                        );
                        LockAccess::Exclusive
                    }
                },
            };
            let weight = match (access, &claim.weight) {
                (LockAccess::Exclusive, None) => 0,
                (LockAccess::Exclusive, Some(w)) => {
                    self.report(
                        &w.span(),
                        format!(
                            "{owner}: lock `{lock_name}`: an exclusive claim takes the whole \
                             lock, so it has no `weight` (use access = \"counting\")"
                        ),
                    );
                    0
                }
                (LockAccess::Counting, None) => 1,
                (LockAccess::Counting, Some(w)) => {
                    let n = match u32::try_from(*w.get_ref()) {
                        Ok(n) if (1..=MAX_LOCK_LIMIT).contains(&i64::from(n)) => n,
                        _ => {
                            self.report(
                                &w.span(),
                                format!(
                                    "{owner}: lock `{lock_name}`: `weight` must be between 1 \
                                     and {MAX_LOCK_LIMIT}, not {}",
                                    w.get_ref()
                                ),
                            );
                            1
                        }
                    };
                    if let Some(def) = def {
                        let smallest = def
                            .worker_max
                            .values()
                            .copied()
                            .chain([def.max])
                            .min()
                            .unwrap_or(def.max);
                        if n > smallest {
                            self.report(
                                &w.span(),
                                format!(
                                    "{owner}: lock `{lock_name}`: weight {n} is more than its \
                                     max {smallest}, so the claim could never be granted"
                                ),
                            );
                        }
                    }
                    n
                }
            };
            out.push(LockClaim {
                name: lock_name.clone(),
                access,
                weight,
            });
        }
        out
    }

    /// A builder's `worker_choice`.
    pub(super) fn worker_choice(&mut self, builder: &str, raw: &RawBuilder) -> WorkerChoice {
        let Some(choice) = &raw.worker_choice else {
            return WorkerChoice::LeastBusy;
        };
        match choice.get_ref().as_str() {
            "least_busy" => WorkerChoice::LeastBusy,
            "random" => WorkerChoice::Random,
            "in_order" => WorkerChoice::InOrder,
            other => {
                self.report(
                    &choice.span(),
                    format!(
                        "builder `{builder}`: `worker_choice` must be \"least_busy\", \"random\" \
                         or \"in_order\", not {other:?}"
                    ),
                );
                WorkerChoice::LeastBusy
            }
        }
    }

    /// A builder's `max_running`.
    pub(super) fn max_running(&mut self, builder: &str, raw: &RawBuilder) -> Option<u32> {
        let m = raw.max_running.as_ref()?;
        Some(self.capacity(&format!("builder `{builder}`"), "max_running", m))
    }

    /// A builder's `worker_tags`: no repeats, and at least one worker
    /// (listed in `workers`, if it has them) carries them all.
    pub(super) fn worker_tags(
        &mut self,
        raw: &RawBuilder,
        raw_workers: &[RawWorker],
    ) -> Vec<String> {
        let name = raw.name.get_ref();
        let Some(tags) = &raw.worker_tags else {
            return Vec::new();
        };
        self.duplicates(tags.get_ref().iter(), |t| {
            format!("builder `{name}` lists tag `{t}` twice in worker_tags")
        });
        let wanted: Vec<&str> = tags
            .get_ref()
            .iter()
            .map(|t| t.get_ref().as_str())
            .collect();
        let listed: Option<Vec<&str>> = raw
            .workers
            .as_ref()
            .map(|l| l.get_ref().iter().map(|w| w.get_ref().as_str()).collect());
        let eligible = raw_workers.iter().any(|w| {
            listed
                .as_ref()
                .is_none_or(|l| l.contains(&w.name.get_ref().as_str()))
                && wanted
                    .iter()
                    .all(|t| w.tags.iter().any(|have| have.get_ref() == t))
        });
        if !eligible && !wanted.is_empty() {
            let among = if listed.is_some() {
                "of the workers it lists "
            } else {
                ""
            };
            self.report(
                &tags.span(),
                format!(
                    "builder `{name}`: no worker {among}carries all of worker_tags [{}], so \
                     it could never run",
                    wanted.join(", ")
                ),
            );
        }
        wanted.into_iter().map(str::to_owned).collect()
    }

    /// A lock is taken by builds or by steps, never both: a build holding
    /// it while waiting for it as a step lock (or the other way round
    /// across builds) could wait forever.
    pub(super) fn build_and_step_locks(&mut self, raw: &[RawBuilder]) {
        let mut by_builds: BTreeMap<&str, &str> = BTreeMap::new();
        for b in raw {
            for c in &b.locks {
                if let Some(n) = &c.get_ref().name {
                    by_builds.entry(n.get_ref()).or_insert(b.name.get_ref());
                }
            }
        }
        for b in raw {
            let Some(steps) = &b.step else { continue };
            for s in steps.get_ref() {
                for c in &s.locks {
                    let Some(n) = &c.get_ref().name else { continue };
                    if let Some(holder) = by_builds.get(n.get_ref().as_str()) {
                        self.report(
                            &n.span(),
                            format!(
                                "builder `{}`, step `{}`: lock `{}` is a build lock of builder \
                                 `{holder}`; a lock is taken by whole builds or by steps, not \
                                 both (a build holding it could wait for it forever)",
                                b.name.get_ref(),
                                s.name.get_ref(),
                                n.get_ref()
                            ),
                        );
                    }
                }
            }
        }
    }
}
