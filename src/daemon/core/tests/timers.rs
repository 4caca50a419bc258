//! Core tests of the `periodic`, `cron`, `triggerable` (with the `trigger`
//! step) and `dependent` schedulers, on a simulated clock, with master
//! restarts rebuilt from the records alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{
    CatchUp, CronSpec, SchedulerDef, SchedulerKind, TimedDef, Timing, TriggerSpec,
};
use crate::protocol::BuildId;
use crate::protocol::{BuildResult, ChangeBatch, NewChange};

const HOUR: u64 = 3_600_000;

fn timed(every_h: u64, catch_up: CatchUp, only_if_changed: bool) -> SchedulerKind {
    SchedulerKind::Periodic(TimedDef {
        timing: Timing::Every(Duration::from_secs(every_h * 3600)),
        only_if_changed,
        catch_up,
    })
}

fn sched(name: &str, builders: &[&str], kind: SchedulerKind) -> SchedulerDef {
    SchedulerDef {
        name: name.into(),
        previous_names: vec![],
        builders: builders.iter().map(|b| b.to_string()).collect(),
        kind,
    }
}

/// Worker `w` (4 slots), builders `b` and `c` (one step each), and the
/// given schedulers.
fn cfg_with(schedulers: Vec<SchedulerDef>) -> Arc<Config> {
    let base = config(&[("w", 4)], &[("b", &["w"], 1), ("c", &["w"], 1)]);
    let mut cfg = (*base).clone();
    cfg.schedulers = schedulers;
    cfg.hash = format!("{}{:?}", cfg.hash, cfg.schedulers);
    Arc::new(cfg)
}

/// What the store would hold of scheduler states and requests, kept from
/// the records, for a restart.
#[derive(Default)]
struct Store {
    schedulers: BTreeMap<String, SavedScheduler>,
    queued: BTreeMap<RequestId, LiveRequest>,
    reasons: Vec<(RequestId, String, Option<String>)>,
}

impl Store {
    fn take(&mut self, core: &mut Core) -> Vec<Effect> {
        let effects = core.take_effects();
        for e in &effects {
            match e {
                Effect::Record(Record::SchedulerState { name, kind, state }) => match state {
                    Some(s) => {
                        self.schedulers.insert(
                            name.clone(),
                            SavedScheduler {
                                kind: kind.clone(),
                                state: s.clone(),
                            },
                        );
                    }
                    None => {
                        self.schedulers.remove(name);
                    }
                },
                Effect::Record(Record::RequestQueued {
                    request,
                    builder,
                    reason,
                    ..
                }) => {
                    self.reasons
                        .push((*request, builder.clone(), reason.clone()));
                    if let Some(r) = core.live_request(*request) {
                        self.queued.insert(*request, r.clone());
                    }
                }
                Effect::Record(Record::BuildStarted { request, .. })
                | Effect::Record(Record::RequestCancelled { request, .. }) => {
                    self.queued.remove(request);
                }
                _ => {}
            }
        }
        effects
    }

    /// A restart on what was stored: queued requests and scheduler states.
    fn restart(&self, core: &Core, now_ms: u64) -> Core {
        Core::new(
            Arc::clone(core.config()),
            Restored {
                generation: core.generation(),
                config_hash: core.config().hash.clone(),
                queued: self.queued.values().cloned().collect(),
                next_request: core.next_request,
                next_build: core.next_build,
                next_change: core.next_change,
                schedulers: self.schedulers.clone(),
                ..Restored::default()
            },
            now_ms,
        )
    }

    fn fired_by(&self, scheduler: &str) -> Vec<RequestId> {
        let prefix = format!("scheduler {scheduler}:");
        self.reasons
            .iter()
            .filter(|(_, _, r)| r.as_deref().is_some_and(|r| r.starts_with(&prefix)))
            .map(|(id, _, _)| *id)
            .collect()
    }
}

#[test]
fn a_periodic_scheduler_fires_every_interval_for_each_builder() {
    let cfg = cfg_with(vec![sched(
        "six",
        &["b", "c"],
        timed(6, CatchUp::One, false),
    )]);
    let mut store = Store::default();
    let mut core = Core::new(cfg, Restored::default(), 0);
    store.take(&mut core);
    assert!(store.schedulers.contains_key("six"), "its start is durable");
    assert_eq!(core.next_deadline(), Some(6 * HOUR));
    core.tick(6 * HOUR - 1);
    store.take(&mut core);
    assert!(store.fired_by("six").is_empty());
    core.tick(6 * HOUR);
    store.take(&mut core);
    assert_eq!(store.fired_by("six").len(), 2, "one request per builder");
    core.tick(6 * HOUR + 5);
    store.take(&mut core);
    assert_eq!(store.fired_by("six").len(), 2, "not twice");
    assert_eq!(core.next_deadline(), Some(12 * HOUR));
}

#[test]
fn a_restart_catches_up_once_or_not_as_catch_up_says() {
    for (catch_up, want) in [(CatchUp::One, 1), (CatchUp::None, 0)] {
        let cfg = cfg_with(vec![sched("hourly", &["b"], timed(1, catch_up, false))]);
        let mut store = Store::default();
        let mut core = Core::new(cfg, Restored::default(), 0);
        core.tick(HOUR);
        store.take(&mut core);
        assert_eq!(store.fired_by("hourly").len(), 1);
        // Down from 1h30 to 5h30: four due times missed.
        let mut back = store.restart(&core, 5 * HOUR + 30 * 60_000);
        back.tick(5 * HOUR + 30 * 60_000);
        store.take(&mut back);
        assert_eq!(store.fired_by("hourly").len(), 1 + want, "{catch_up:?}");
        // A second restart right after does not fire again.
        let mut again = store.restart(&back, 5 * HOUR + 31 * 60_000);
        again.tick(5 * HOUR + 31 * 60_000);
        store.take(&mut again);
        assert_eq!(store.fired_by("hourly").len(), 1 + want, "{catch_up:?}");
    }
}

#[test]
fn a_crash_before_the_batch_is_stored_fires_once_after_the_restart() {
    let cfg = cfg_with(vec![sched("hourly", &["b"], timed(1, CatchUp::One, false))]);
    let mut store = Store::default();
    let mut core = Core::new(cfg, Restored::default(), 0);
    store.take(&mut core);
    core.tick(HOUR);
    // The batch with the firing is lost with the master.
    core.take_effects();
    let mut back = store.restart(&core, HOUR + 10);
    back.tick(HOUR + 10);
    store.take(&mut back);
    assert_eq!(store.fired_by("hourly").len(), 1);
}

#[test]
fn a_reload_keeps_the_last_firing_and_a_rename_carries_it() {
    let cfg = cfg_with(vec![sched(
        "nightly",
        &["b"],
        timed(6, CatchUp::One, false),
    )]);
    let mut store = Store::default();
    let mut core = Core::new(Arc::clone(&cfg), Restored::default(), 0);
    core.tick(6 * HOUR);
    store.take(&mut core);
    // Another builder list: same timing, same deadline.
    let mut renamed = (*cfg_with(vec![sched(
        "nightly",
        &["c"],
        timed(6, CatchUp::One, false),
    )]))
    .clone();
    core.reload(Arc::new(renamed.clone()), 7 * HOUR, false);
    store.take(&mut core);
    assert_eq!(core.next_deadline(), Some(12 * HOUR));
    // Renamed: the state moves, the old name's state is forgotten.
    renamed.schedulers[0].name = "every-six".into();
    renamed.schedulers[0].previous_names = vec!["nightly".into()];
    renamed.hash.push('!');
    core.reload(Arc::new(renamed), 8 * HOUR, false);
    store.take(&mut core);
    assert_eq!(core.next_deadline(), Some(12 * HOUR));
    assert!(!store.schedulers.contains_key("nightly"));
    assert!(store.schedulers.contains_key("every-six"));
    // Removed: forgotten.
    core.reload(cfg_with(vec![]), 9 * HOUR, false);
    store.take(&mut core);
    assert!(store.schedulers.is_empty());
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn only_if_changed_builds_the_changes_with_their_stamp() {
    let cfg = cfg_with(vec![sched("six", &["b"], timed(6, CatchUp::One, true))]);
    let mut store = Store::default();
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.tick(6 * HOUR);
    store.take(&mut core);
    assert!(store.fired_by("six").is_empty(), "no change, no build");
    let change = |rev: &str| NewChange {
        repository: "repo".into(),
        branch: "main".into(),
        revision: rev.into(),
        ..NewChange::default()
    };
    let ids = core
        .add_changes(
            ChangeBatch {
                changes: vec![change("a1"), change("a2")],
                cursor: None,
            },
            7 * HOUR,
        )
        .unwrap();
    store.take(&mut core);
    // The changes survive a restart with the scheduler's state.
    let mut core = store.restart(&core, 8 * HOUR);
    core.tick(12 * HOUR);
    store.take(&mut core);
    let fired = store.fired_by("six");
    assert_eq!(fired.len(), 1);
    let source = core.live_request(fired[0]).unwrap().source.clone().unwrap();
    assert_eq!(source.revision.as_deref(), Some("a2"));
    assert_eq!(source.changes, ids);
}

#[test]
fn a_cron_scheduler_fires_at_its_wall_clock_time() {
    let spec = CronSpec::parse("0 3 * * *", "UTC").unwrap();
    let kind = SchedulerKind::Cron(TimedDef {
        timing: Timing::Cron(Box::new(spec)),
        only_if_changed: false,
        catch_up: CatchUp::One,
    });
    let mut store = Store::default();
    let mut core = Core::new(
        cfg_with(vec![sched("nightly", &["b"], kind)]),
        Restored::default(),
        0,
    );
    assert_eq!(core.next_deadline(), Some(3 * HOUR));
    core.tick(3 * HOUR);
    store.take(&mut core);
    let reason = &store.reasons[0].2;
    assert_eq!(
        reason.as_deref(),
        Some("scheduler nightly: at \"0 3 * * *\" (UTC)")
    );
    assert_eq!(core.next_deadline(), Some(27 * HOUR));
}

/// Builder `t` with steps [trigger `tests` (wait), echo], builders `b`, `c`
/// triggered.
fn trigger_cfg(wait: bool) -> Arc<Config> {
    let mut cfg = (*cfg_with(vec![sched(
        "tests",
        &["b", "c"],
        SchedulerKind::Triggerable,
    )]))
    .clone();
    let mut t = cfg.builders[0].clone();
    t.name = "t".into();
    t.steps = vec![
        StepDef {
            name: "fan-out".into(),
            action: StepAction::Trigger(TriggerSpec {
                schedulers: vec!["tests".into()],
                wait,
                properties: BTreeMap::from([("suite".into(), "all".into())]),
            }),
            timeout: None,
            env: BTreeMap::new(),
            locks: Vec::new(),
        },
        t.steps[0].clone(),
    ];
    cfg.builders.push(t);
    cfg.hash.push_str("+t");
    Arc::new(cfg)
}

#[test]
fn a_trigger_step_waits_for_the_triggered_builds_and_takes_the_worst() {
    let mut core = Core::new(trigger_cfg(true), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    let mut store = Store::default();
    core.force_build("t", None, BTreeMap::new(), 0).unwrap();
    let effects = store.take(&mut core);
    // Build 1 (t) triggered b and c: builds 2 and 3 run on the worker; the
    // trigger step itself was never sent.
    let started = started_steps(&effects);
    assert!(
        !started.contains(&(1, 1, 0)),
        "a trigger step is not a worker's"
    );
    assert_eq!(store.fired_by("tests").len(), 2);
    let r = core.live_request(store.fired_by("tests")[0]).unwrap();
    assert_eq!(r.properties["suite"], "all");
    assert!(store.schedulers.contains_key("trigger:1"));
    core.step_ended(1, 2, 0, OK, 10).unwrap();
    let effects = store.take(&mut core);
    assert!(
        started_steps(&effects).is_empty(),
        "still waiting for build 3"
    );
    core.step_ended(1, 3, 0, StepEnd::Exited { code: 2 }, 20)
        .unwrap();
    let effects = store.take(&mut core);
    let done = finished(&effects);
    assert_eq!(done[0].0, 3);
    assert_eq!(done[1].0, 1, "the triggering build ends with them");
    assert_eq!(done[1].1, BuildResult::Failure);
    assert!(
        done[1].2.as_deref().unwrap().contains("r3 failure"),
        "{done:?}"
    );
    assert!(
        !store.schedulers.contains_key("trigger:1"),
        "the wait is over"
    );
}

#[test]
fn a_successful_wait_goes_on_with_the_next_step() {
    let mut core = Core::new(trigger_cfg(true), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    core.force_build("t", None, BTreeMap::new(), 0).unwrap();
    core.take_effects();
    core.step_ended(1, 2, 0, OK, 10).unwrap();
    core.step_ended(1, 3, 0, OK, 20).unwrap();
    let effects = core.take_effects();
    assert!(
        started_steps(&effects).contains(&(1, 1, 1)),
        "step 2 of build 1"
    );
}

#[test]
fn without_wait_the_step_succeeds_once_queued() {
    let mut core = Core::new(trigger_cfg(false), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    core.force_build("t", None, BTreeMap::new(), 0).unwrap();
    let effects = core.take_effects();
    assert!(started_steps(&effects).contains(&(1, 1, 1)));
}

#[test]
fn a_wait_survives_a_restart_and_is_never_triggered_twice() {
    let cfg = trigger_cfg(true);
    let mut core = Core::new(Arc::clone(&cfg), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    let mut store = Store::default();
    core.force_build("t", None, BTreeMap::new(), 0).unwrap();
    store.take(&mut core);
    core.step_ended(1, 2, 0, OK, 10).unwrap();
    store.take(&mut core);
    // The master dies: build 1 waits (step 0), build 3 runs its step.
    let running = |core: &Core, id: BuildId| {
        let b = core.running_build(id).unwrap();
        RestoredBuild {
            id,
            request: core.live_request(b.request).unwrap().clone(),
            worker: "w".into(),
            def: Arc::clone(&b.def),
            generation: b.generation,
            step: b.step,
            started_at_ms: b.started_at_ms,
        }
    };
    let restored = Restored {
        generation: core.generation(),
        config_hash: cfg.hash.clone(),
        running: vec![running(&core, 1), running(&core, 3)],
        next_request: core.next_request,
        next_build: core.next_build,
        next_change: core.next_change,
        schedulers: store.schedulers.clone(),
        ..Restored::default()
    };
    let mut core = Core::new(Arc::clone(&cfg), restored, 100);
    let effects = store.take(&mut core);
    assert!(
        store.fired_by("tests").len() == 2,
        "nothing triggered again"
    );
    assert!(finished(&effects).is_empty());
    // The worker comes back with build 3's step only: build 1 is re-attached.
    core.worker_connected("w", 2, &[held(3, 0)], 200).unwrap();
    let effects = store.take(&mut core);
    assert!(finished(&effects).is_empty(), "{effects:?}");
    core.step_ended(2, 3, 0, OK, 300).unwrap();
    let effects = store.take(&mut core);
    assert!(started_steps(&effects).contains(&(2, 1, 1)), "{effects:?}");
}

#[test]
fn stopping_a_waiting_build_ends_its_wait() {
    let mut core = Core::new(trigger_cfg(true), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    let mut store = Store::default();
    core.force_build("t", None, BTreeMap::new(), 0).unwrap();
    store.take(&mut core);
    core.stop_build(1, "stopped by test", 5).unwrap();
    let effects = store.take(&mut core);
    assert_eq!(finished(&effects)[0].0, 1);
    assert_eq!(finished(&effects)[0].1, BuildResult::Cancelled);
    assert!(!store.schedulers.contains_key("trigger:1"));
    // The triggered builds go on; their end touches nothing.
    core.step_ended(1, 2, 0, OK, 10).unwrap();
    assert_eq!(
        finished(&core.take_effects()),
        vec![(2, BuildResult::Success, None)]
    );
}

#[test]
fn a_dependent_fires_when_the_upstream_builds_all_succeed() {
    let cfg = cfg_with(vec![
        sched("hourly", &["b", "c"], timed(1, CatchUp::One, false)),
        sched(
            "after",
            &["c"],
            SchedulerKind::Dependent {
                upstream: "hourly".into(),
            },
        ),
    ]);
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    let mut store = Store::default();
    core.tick(HOUR);
    store.take(&mut core);
    assert_eq!(store.fired_by("hourly"), vec![1, 2]);
    core.step_ended(1, 1, 0, OK, HOUR + 1).unwrap();
    store.take(&mut core);
    assert!(store.fired_by("after").is_empty());
    // A restart between the two results keeps what is left to succeed.
    core.step_ended(1, 2, 0, OK, HOUR + 2).unwrap();
    store.take(&mut core);
    assert_eq!(store.fired_by("after").len(), 1);
    // The next firing fails: the dependent does not fire.
    core.tick(2 * HOUR + 2);
    store.take(&mut core);
    let next = store.fired_by("hourly");
    assert_eq!(next.len(), 4);
    let builds: Vec<BuildId> = next[2..]
        .iter()
        .filter_map(|r| core.live_request(*r).and_then(|q| q.build))
        .collect();
    core.step_ended(1, builds[0], 0, StepEnd::Exited { code: 1 }, 2 * HOUR + 3)
        .unwrap();
    core.step_ended(1, builds[1], 0, OK, 2 * HOUR + 4).unwrap();
    store.take(&mut core);
    assert_eq!(store.fired_by("after").len(), 1);
}
