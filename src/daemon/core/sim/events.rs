//! One step of a simulated history: time passes, the core is ticked, and
//! one random event happens (force, connect, lose, step end, stop, cancel,
//! reload through the real parser, dry run, hostile or crafted reports,
//! pauses, drains, master restart); then the invariants are checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::configs::{corrupt, describe, random_config, to_toml};
use super::*;
use crate::protocol::{DrainMode, RunningStep, StepEnd};

impl Sim {
    pub(super) fn step(&mut self) {
        // Time passes; the shell's timer ticks the core at every deadline.
        let span = if self.rng.chance(5) { 90_000 } else { 1000 };
        self.now += 1 + self.rng.below(span) as u64;
        let now = self.now;
        if self.fault != Some(Fault::NoTicks) {
            self.core.tick(now);
        }
        self.absorb();
        self.check_timers_after_tick();
        // What the event changes is checked against this (a tick's own
        // starts are checked at their records, in `world.rs`).
        self.before = Some(self.snapshot());
        let roll = self.rng.below(100);
        match roll {
            14..20 => {
                let n = 1 + self.rng.below(3);
                let changes: Vec<crate::protocol::NewChange> = (0..n)
                    .map(|_| crate::protocol::NewChange {
                        repository: if self.rng.chance(80) { "repo" } else { "other" }.into(),
                        branch: ["main", "dev", "rel/1"][self.rng.below(3)].into(),
                        revision: format!("{:x}", self.rng.next()),
                        files: match self.rng.below(3) {
                            0 => vec!["src/a.rs".into()],
                            1 => vec!["docs/x.md".into()],
                            _ => vec![],
                        },
                        ..Default::default()
                    })
                    .collect();
                let what: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{}:{}:{:?}", c.repository, c.branch, c.files))
                    .collect();
                let r = self.core.add_changes(
                    crate::protocol::ChangeBatch {
                        changes,
                        cursor: None,
                    },
                    now,
                );
                self.history.push(format!("changes {what:?} -> {r:?}"));
                if let Err(e) = r {
                    self.fail(format!("valid changes were refused: {e}"));
                }
            }
            0..14 => {
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
                // Sorted: a HashMap's order differs between runs, and a seed
                // must replay the same history.
                let mut ids: Vec<RequestId> = self.core.requests.keys().copied().collect();
                ids.sort_unstable();
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
                        if parsed.builders != config.builders
                            || parsed.workers != config.workers
                            || parsed.schedulers != config.schedulers
                            || parsed.locks != config.locks
                        {
                            self.fail(format!("the parser changed the config:\n{text}"));
                        }
                        self.history.push(format!("reload {}", describe(&config)));
                        let report = self.core.reload(Arc::new(parsed), now, false);
                        self.reloaded(&report);
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
            _ => {
                self.restart();
                self.before = None;
            }
        }
        self.absorb();
        if self.fault == Some(Fault::LocksLeak) {
            self.leak_locks();
        }
        self.check();
        if self
            .core
            .lock_waits
            .keys()
            .any(|w| matches!(w, LockWaiter::Request(_)))
        {
            self.seen.lock_waits += 1;
        }
        if self
            .core
            .lock_waits
            .keys()
            .any(|w| matches!(w, LockWaiter::Step(_)))
        {
            self.seen.step_waits += 1;
        }
        self.check_waits();
    }
}
