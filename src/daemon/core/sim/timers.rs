//! The simulator's time-driven and triggered schedulers: random
//! `periodic`, `triggerable` and `dependent` schedulers (and `trigger`
//! steps) in the random configs, their TOML, the firings kept from the
//! records alone, and the invariants: no firing lost (after a tick nothing
//! is due), none doubled (two firings of a periodic scheduler are at least
//! its `every` apart, across reloads and restarts), and a trigger's wait
//! always ends (a build in a waiting trigger step waits for live requests
//! only, so it ends when they do).

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::config::{
    CatchUp, SchedulerDef, SchedulerKind, StepAction, StepDef, TimedDef, Timing, TriggerSpec,
};

/// The firings kept from the records: the last one per scheduler.
#[derive(Debug, Default)]
pub(super) struct Firings {
    /// Last firing per scheduler name, as its saved state says.
    last: BTreeMap<String, Option<u64>>,
    /// How many firings were seen (so a run that fired nothing fails).
    pub(super) count: u64,
    /// How many trigger steps were seen waiting.
    pub(super) waits: u64,
}

/// Random schedulers for `builders`, and sometimes a trigger step in one
/// of them. `current` gives renames something to rename.
pub(super) fn random_schedulers(
    rng: &mut Rng,
    builders: &mut [BuilderDef],
    current: Option<&Config>,
) -> Vec<SchedulerDef> {
    if builders.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = builders.iter().map(|b| b.name.clone()).collect();
    let pick = |rng: &mut Rng, n: usize| -> Vec<String> {
        let mut out: Vec<String> = names.iter().filter(|_| rng.chance(40)).cloned().collect();
        out.truncate(n);
        if out.is_empty() {
            out.push(names[rng.below(names.len())].clone());
        }
        out
    };
    let mut out = Vec::new();
    if rng.chance(70) {
        // Renamed from p0 to p1 now and then: the state must follow.
        let had = |n: &str| current.is_some_and(|c| c.scheduler(n).is_some());
        let (name, previous) = if had("p0") && rng.chance(15) {
            ("p1", vec!["p0".to_string()])
        } else if had("p1") && rng.chance(15) {
            ("p0", vec!["p1".to_string()])
        } else if had("p1") {
            ("p1", vec![])
        } else {
            ("p0", vec![])
        };
        let every = [5_000, 20_000, 60_000][rng.below(3)];
        out.push(SchedulerDef {
            name: name.into(),
            previous_names: previous,
            builders: pick(rng, 2),
            kind: SchedulerKind::Periodic(TimedDef {
                timing: Timing::Every(Duration::from_millis(every)),
                only_if_changed: false,
                catch_up: if rng.chance(50) {
                    CatchUp::One
                } else {
                    CatchUp::None
                },
            }),
        });
        if rng.chance(40) {
            out.push(SchedulerDef {
                name: "d0".into(),
                previous_names: vec![],
                builders: pick(rng, 1),
                kind: SchedulerKind::Dependent {
                    upstream: name.into(),
                },
            });
        }
    }
    if builders.len() >= 2 && rng.chance(60) {
        // `t0` builds the last builder; the first one triggers it (no loop).
        let target = names[names.len() - 1].clone();
        out.push(SchedulerDef {
            name: "t0".into(),
            previous_names: vec![],
            builders: vec![target],
            kind: SchedulerKind::Triggerable,
        });
        let wait = rng.chance(70);
        builders[0].steps.insert(
            0,
            StepDef {
                name: "fan".into(),
                action: StepAction::Trigger(TriggerSpec {
                    schedulers: vec!["t0".into()],
                    wait,
                    properties: BTreeMap::new(),
                }),
                timeout: None,
                env: BTreeMap::new(),
                locks: Vec::new(),
            },
        );
    }
    out
}

/// The `[[scheduler]]` tables of `config`.
pub(super) fn schedulers_toml(config: &Config) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for s in &config.schedulers {
        if matches!(s.kind, SchedulerKind::Branch(_)) {
            continue;
        }
        out.push_str(&format!(
            "[[scheduler]]\nname = {:?}\nkind = {:?}\nbuilders = [{}]\n",
            s.name,
            s.kind.name(),
            list(&s.builders)
        ));
        if !s.previous_names.is_empty() {
            out.push_str(&format!("previous_names = [{}]\n", list(&s.previous_names)));
        }
        match &s.kind {
            SchedulerKind::Periodic(t) => {
                let Timing::Every(every) = t.timing else {
                    unreachable!("the simulator makes periodic schedulers only")
                };
                let catch_up = match t.catch_up {
                    CatchUp::One => "one",
                    CatchUp::None => "none",
                };
                out.push_str(&format!(
                    "every = \"{}ms\"\ncatch_up = \"{catch_up}\"\n",
                    every.as_millis()
                ));
            }
            SchedulerKind::Dependent { upstream } => {
                out.push_str(&format!("upstream = {upstream:?}\n"));
            }
            _ => {}
        }
        out.push('\n');
    }
    out
}

/// A trigger step's action as TOML.
pub(super) fn trigger_toml(t: &TriggerSpec) -> String {
    let names: Vec<String> = t.schedulers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "  trigger = {{ schedulers = [{}], wait = {} }}\n",
        names.join(", "),
        t.wait
    )
}

impl Sim {
    /// A scheduler's state was recorded: a firing if its last firing moved
    /// to now (then `true`); check it came no sooner than its `every` allows.
    pub(super) fn note_scheduler_state(&mut self, name: &str, state: Option<&str>) -> bool {
        let last = state
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| v["last_fired_ms"].as_u64());
        let before = self.firings.last.get(name).copied().flatten();
        let firing = last.is_some_and(|at| Some(at) != before && at == self.now);
        if let Some(at) = last
            && firing
        {
            self.firings.count += 1;
            let every = self
                .core
                .config()
                .scheduler(name)
                .and_then(|s| s.kind.timed())
                .and_then(|t| match t.timing {
                    Timing::Every(e) => Some(e.as_millis() as u64),
                    Timing::Cron(_) => None,
                });
            if let (Some(prev), Some(every)) = (before, every)
                && prev + every > at
            {
                self.fail(format!(
                    "scheduler {name} fired at {at}, only {} ms after its firing at {prev} (every {every} ms): doubled",
                    at - prev
                ));
            }
        }
        match state {
            Some(_) => {
                self.firings.last.insert(name.to_string(), last);
            }
            None => {
                self.firings.last.remove(name);
            }
        }
        firing
    }

    /// Right after a tick: nothing is due that did not fire.
    pub(super) fn check_timers_after_tick(&self) {
        if self.fault == Some(Fault::NoTicks) {
            return;
        }
        if let Some(at) = self.core.next_scheduler_deadline()
            && at <= self.now
        {
            self.fail(format!(
                "a scheduler was due at {at} but did not fire at the tick of {}: lost",
                self.now
            ));
        }
    }

    /// A build in a waiting trigger step waits for live requests only,
    /// and every such build has its wait.
    pub(super) fn check_waits(&mut self) {
        let core = &self.core;
        for (id, w) in &core.timers.waits {
            let Some(rb) = core.builds.get(id) else {
                self.fail(format!("a wait of build {id}, which does not run"));
            };
            if rb.step != w.step {
                self.fail(format!(
                    "build {id} waits in step {} but is at {}",
                    w.step, rb.step
                ));
            }
            for (r, result) in &w.requests {
                if result.is_none() && !core.requests.contains_key(r) {
                    self.fail(format!(
                        "build {id} waits for request {r}, which ended: the wait never ends"
                    ));
                }
            }
        }
        for (id, rb) in &core.builds {
            if let StepAction::Trigger(t) = &rb.def.steps[rb.step as usize].action
                && t.wait
                && rb.pending_step.is_none()
                && !core.timers.waits.contains_key(id)
            {
                self.fail(format!(
                    "build {id} is in a waiting trigger step with no wait"
                ));
            }
        }
        self.firings.waits += core.timers.waits.len() as u64;
    }
}
