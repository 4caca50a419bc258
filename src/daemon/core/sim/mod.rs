//! The seeded simulator: random histories of forces, changes (through
//! branch schedulers with tree-stable timers), cancels, stops, worker
//! connects and losses, step ends, reloads with random config edits
//! (schedulers added, changed, renamed, removed), dry runs, crafted
//! reports and master restarts, with the invariants of
//! `docs/architecture.md` ("The invariants") checked after every event;
//! among them: every important change is built exactly once by each
//! scheduler that takes it (or listed as dropped by the reload that made
//! the scheduler let it go), across reloads and restarts.
//!
//! - `cargo test --lib sim` runs `SIM_SEEDS` seeds (default 2,000) of
//!   `SIM_EVENTS` events (default 200) each.
//! - `SIM_SEED=N cargo test --lib sim -- --nocapture` replays one seed and
//!   prints its history. A failure prints this command, the event number
//!   where an invariant broke, and the history up to it (the shortest
//!   history that fails for that seed: `SIM_EVENTS=<event>` replays it).
//!
//! This file is the driver: the simulated world's types, the seeds and the
//! one-command reproduction. The rest by job: `world.rs` (the world kept
//! from records alone: effects absorbed, master restarts), `configs.rs`
//! (random configs and their TOML), `events.rs` (one random event per
//! step), `invariants.rs` (the checks after every event).

mod configs;
mod events;
mod invariants;
mod timers;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::protocol::ChangeId;

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
const SCHEDULERS: [&str; 3] = ["s0", "s1", "s2"];

/// What a scheduler owes a change it took, as the records say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owed {
    /// Important: it must be built (or listed as dropped by a reload).
    important: bool,
    /// The firing that built it: (when, the source's changes).
    built: Option<(u64, Vec<ChangeId>)>,
}

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
    /// A restart forgets the schedulers' saved state.
    SchedulersForgotten,
    /// Builds that end keep their locks.
    LocksLeak,
    /// A scheduler's firing is not stored with its new state (not in the
    /// same batch): a restart fires it again.
    FiringNotStored,
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
    /// The schedulers' state as the store would keep it.
    saved_schedulers: BTreeMap<String, super::SavedScheduler>,
    /// Per (scheduler, change): what the scheduler owes the change.
    owed: BTreeMap<(String, ChangeId), Owed>,
    /// The state before the current event (`None` after a restart, whose
    /// re-claims are not grants).
    before: Option<invariants::Before>,
    /// Scheduler firings as the records tell them.
    firings: timers::Firings,
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
    /// Changes stored.
    changes: u64,
    /// (scheduler, important change) pairs built.
    changes_built: u64,
    /// Pending changes a reload listed as dropped.
    changes_dropped: u64,
    /// Scheduler renames applied by reloads.
    scheduler_renames: u64,
    /// Events after which a request waited for a build lock.
    lock_waits: u64,
    /// Events after which a build waited between steps for a step lock.
    step_waits: u64,
    /// Scheduler firings, as the records tell them.
    firings: u64,
    /// Trigger steps seen waiting (summed over events).
    waits: u64,
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
        sim.seen.firings = sim.firings.count;
        sim.seen.waits = sim.firings.waits;
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
        total.changes += seen.changes;
        total.changes_built += seen.changes_built;
        total.changes_dropped += seen.changes_dropped;
        total.scheduler_renames += seen.scheduler_renames;
        total.lock_waits += seen.lock_waits;
        total.step_waits += seen.step_waits;
        total.firings += seen.firings;
        total.waits += seen.waits;
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
        assert!(total.changes > seeds * 5, "{total:?}");
        assert!(total.changes_built > seeds * 3, "{total:?}");
        assert!(total.changes_dropped > seeds / 20, "{total:?}");
        assert!(total.scheduler_renames > seeds / 20, "{total:?}");
        assert!(total.lock_waits > seeds, "{total:?}");
        assert!(total.step_waits > seeds / 5, "{total:?}");
        assert!(total.firings > seeds, "{total:?}");
        assert!(total.waits > seeds, "{total:?}");
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
fn the_simulator_catches_a_restart_that_forgets_pending_changes() {
    let caught = (0..50).any(|seed| {
        let r = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            sim.fault = Some(Fault::SchedulersForgotten);
            for _ in 0..200 {
                sim.step();
            }
        });
        r.is_err_and(|p| {
            p.downcast_ref::<String>()
                .is_some_and(|m| m.contains("was lost by scheduler"))
        })
    });
    assert!(
        caught,
        "a restart that loses pending changes went unnoticed"
    );
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

#[test]
fn the_simulator_catches_locks_kept_by_ended_builds() {
    let caught = (0..50).any(|seed| {
        let r = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            sim.fault = Some(Fault::LocksLeak);
            for _ in 0..200 {
                sim.step();
            }
        });
        r.is_err_and(|p| {
            p.downcast_ref::<String>()
                .is_some_and(|m| m.contains("which has ended"))
        })
    });
    assert!(caught, "locks kept by ended builds went unnoticed");
}

#[test]
fn the_simulator_catches_a_firing_stored_apart_from_its_state() {
    let caught = (0..200).any(|seed| {
        let r = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed);
            sim.fault = Some(Fault::FiringNotStored);
            for _ in 0..200 {
                sim.step();
            }
        });
        r.is_err_and(|p| {
            p.downcast_ref::<String>()
                .is_some_and(|m| m.contains("doubled"))
        })
    });
    assert!(
        caught,
        "a firing fired again after a restart went unnoticed"
    );
}
