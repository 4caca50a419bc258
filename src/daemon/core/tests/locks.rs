//! Core tests of locks, worker tags, `worker_choice` and `max_running`
//! (`locks.rs` describes the algorithm), one behaviour per test.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{LockAccess, LockClaim, LockDef, LockScope, WorkerChoice};
use crate::protocol::BuildResult;

fn lock(name: &str, scope: LockScope, max: u32) -> LockDef {
    LockDef {
        name: name.into(),
        scope,
        max,
        worker_max: BTreeMap::new(),
    }
}

fn excl(name: &str) -> LockClaim {
    LockClaim {
        name: name.into(),
        access: LockAccess::Exclusive,
        weight: 0,
    }
}

fn counting(name: &str, weight: u32) -> LockClaim {
    LockClaim {
        name: name.into(),
        access: LockAccess::Counting,
        weight,
    }
}

/// `cfg` with `locks`, and builder claims as (builder, claims).
fn with_locks(cfg: &Config, locks: Vec<LockDef>, claims: &[(&str, Vec<LockClaim>)]) -> Arc<Config> {
    let mut cfg = cfg.clone();
    cfg.locks = locks;
    for (b, c) in claims {
        cfg.builders
            .iter_mut()
            .find(|x| x.name == *b)
            .unwrap()
            .locks = c.clone();
    }
    cfg.hash.push('L');
    Arc::new(cfg)
}

/// Builders `a` and `b` (one step each) share exclusive master lock `rig`;
/// workers `w1` and `w2` (one slot each) are connected on links 1 and 2.
fn rig_core() -> Core {
    let base = config(
        &[("w1", 1), ("w2", 1)],
        &[("a", &["w1", "w2"], 1), ("b", &["w1", "w2"], 1)],
    );
    let cfg = with_locks(
        &base,
        vec![lock("rig", LockScope::Master, 1)],
        &[("a", vec![excl("rig")]), ("b", vec![excl("rig")])],
    );
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    core.worker_connected("w2", 2, &[], 0).unwrap();
    core.take_effects();
    core
}

fn holders(core: &Core, lock: &str) -> Vec<u64> {
    core.lock_status(0)
        .into_iter()
        .filter(|l| l.name == lock)
        .flat_map(|l| l.holders.into_iter().map(|h| h.build))
        .collect()
}

#[test]
fn an_exclusive_lock_admits_one_build_and_the_waiter_holds_nothing() {
    let mut core = rig_core();
    force(&mut core, "a");
    force(&mut core, "b");
    let effects = core.take_effects();
    assert_eq!(started_steps(&effects), vec![(1, 1, 0)], "only a starts");
    assert_eq!(holders(&core, "rig"), vec![1]);
    // The waiter holds no worker slot: w2 stays free.
    assert_eq!(core.builds_on("w2"), 0);
    let waits = core.lock_waiters(5);
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].request, Some(2));
    assert_eq!(waits[0].waiting, "waiting for lock rig (held by build 1)");
    assert_eq!(waits[0].waited_ms, 5);
    core.step_ended(1, 1, 0, OK, 10).unwrap();
    let effects = core.take_effects();
    assert_eq!(started_steps(&effects).len(), 1, "b starts once a ends");
    assert_eq!(holders(&core, "rig"), vec![2]);
    assert!(core.lock_waiters(10).is_empty());
}

#[test]
fn a_waiting_exclusive_claim_is_not_overtaken_by_later_counting_claims() {
    let base = config(&[("w1", 4)], &[("c", &["w1"], 1), ("e", &["w1"], 1)]);
    let cfg = with_locks(
        &base,
        vec![lock("cpu", LockScope::Master, 3)],
        &[("c", vec![counting("cpu", 1)]), ("e", vec![excl("cpu")])],
    );
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    force(&mut core, "c"); // build 1 holds cpu:1
    force(&mut core, "e"); // waits for build 1
    force(&mut core, "c"); // would fit (2 of 3) but e waits first
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 0)]);
    assert_eq!(holders(&core, "cpu"), vec![1]);
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    assert_eq!(holders(&core, "cpu"), vec![2], "e goes first");
    let waits = core.lock_waiters(1);
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0].request, Some(3));
}

#[test]
fn a_waiter_does_not_keep_a_free_worker_from_other_builders() {
    let base = config(
        &[("w1", 1), ("w2", 1)],
        &[
            ("a", &["w1", "w2"], 1),
            ("b", &["w1", "w2"], 1),
            ("n", &["w1", "w2"], 1),
        ],
    );
    let cfg = with_locks(
        &base,
        vec![lock("rig", LockScope::Master, 1)],
        &[("a", vec![excl("rig")]), ("b", vec![excl("rig")])],
    );
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    core.worker_connected("w2", 2, &[], 0).unwrap();
    force(&mut core, "a");
    force(&mut core, "b");
    force(&mut core, "n");
    let started: Vec<u64> = started_steps(&core.take_effects())
        .iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(started, vec![1, 2], "a and n run, b waits for the lock");
    assert_eq!(core.running_build(2).unwrap().builder, "n");
}

#[test]
fn cancelling_a_waiter_releases_nothing_it_did_not_hold() {
    let mut core = rig_core();
    force(&mut core, "a");
    let waiter = force(&mut core, "b");
    core.cancel_request(waiter, "no", 1).unwrap();
    assert_eq!(holders(&core, "rig"), vec![1]);
    assert!(core.lock_waiters(1).is_empty());
    force(&mut core, "b");
    assert_eq!(
        holders(&core, "rig"),
        vec![1],
        "the holder still holds it alone"
    );
}

#[test]
fn every_end_releases_the_locks() {
    // Failure.
    let mut core = rig_core();
    force(&mut core, "a");
    force(&mut core, "b");
    core.step_ended(1, 1, 0, StepEnd::Exited { code: 1 }, 1)
        .unwrap();
    assert_eq!(holders(&core, "rig"), vec![2]);
    // Stop (the worker reports the stopped step).
    core.stop_build(2, "stop", 2).unwrap();
    force(&mut core, "a");
    assert_eq!(holders(&core, "rig"), vec![2]);
    let link = core.running_build(2).unwrap().link.unwrap();
    core.step_ended(link, 2, 0, StepEnd::Stopped, 3).unwrap();
    assert_eq!(holders(&core, "rig"), vec![3]);
    // Worker lost for good: retry after the grace.
    let link = core.running_build(3).unwrap().link.unwrap();
    core.worker_lost(link, 4);
    assert_eq!(
        holders(&core, "rig"),
        vec![3],
        "held while the worker may come back"
    );
    core.tick(4 + 60_000);
    let finished_or_retried = core.running_build(3).is_none();
    assert!(finished_or_retried);
    assert!(
        holders(&core, "rig").iter().all(|b| *b != 3),
        "the retried build let go"
    );
}

#[test]
fn a_reload_lowering_max_keeps_the_holders_and_blocks_new_claims() {
    let base = config(&[("w1", 4)], &[("c", &["w1"], 1)]);
    let cfg = with_locks(
        &base,
        vec![lock("cpu", LockScope::Master, 2)],
        &[("c", vec![counting("cpu", 1)])],
    );
    let mut core = Core::new(Arc::clone(&cfg), Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    force(&mut core, "c");
    force(&mut core, "c");
    assert_eq!(holders(&core, "cpu"), vec![1, 2]);
    let lower = with_locks(&cfg, vec![lock("cpu", LockScope::Master, 1)], &[]);
    core.reload(lower, 1, false);
    assert_eq!(holders(&core, "cpu"), vec![1, 2], "reload never preempts");
    force(&mut core, "c");
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert_eq!(holders(&core, "cpu"), vec![2], "still one holder: at max");
    core.step_ended(1, 2, 0, OK, 3).unwrap();
    assert_eq!(holders(&core, "cpu"), vec![3]);
}

#[test]
fn a_removed_lock_lives_until_released_and_its_waiters_are_told() {
    let mut core = rig_core();
    force(&mut core, "a");
    let waiter = force(&mut core, "b");
    let mut cfg = (**core.config()).clone();
    cfg.locks.clear();
    for b in &mut cfg.builders {
        b.locks.clear();
    }
    cfg.hash.push('-');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(
        report.lock_waiters_released,
        vec![format!("request r{waiter} (lock rig)")]
    );
    assert!(core.running_build(2).is_some(), "the waiter starts");
    let rig = core
        .lock_status(1)
        .into_iter()
        .find(|l| l.name == "rig")
        .unwrap();
    assert!(!rig.configured);
    assert_eq!(rig.holders.len(), 1, "its holder keeps it");
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert!(core.lock_status(2).is_empty(), "forgotten once released");
}

#[test]
fn builds_readopted_at_a_restart_reclaim_their_locks_first() {
    let base = rig_core();
    let cfg = Arc::clone(base.config());
    let def = Arc::new(cfg.builders[0].clone());
    let restored = Restored {
        generation: 1,
        config_hash: cfg.hash.clone(),
        queued: vec![LiveRequest {
            id: 8,
            builder: "b".into(),
            ..LiveRequest::default()
        }],
        running: vec![RestoredBuild {
            id: 4,
            request: LiveRequest {
                id: 7,
                builder: "a".into(),
                build: Some(4),
                ..LiveRequest::default()
            },
            worker: "w1".into(),
            def,
            generation: 1,
            step: 0,
            started_at_ms: 100,
        }],
        next_request: 9,
        next_build: 5,
        ..Restored::default()
    };
    let mut core = Core::new(cfg, restored, 500);
    assert_eq!(holders(&core, "rig"), vec![4]);
    // A free worker comes first: the queued request must still wait.
    core.worker_connected("w2", 2, &[], 600).unwrap();
    assert!(started_steps(&core.take_effects()).is_empty());
    assert_eq!(core.lock_waiters(600)[0].request, Some(8));
    core.worker_connected("w1", 1, &[held(4, 0)], 700).unwrap();
    core.step_ended(1, 4, 0, OK, 800).unwrap();
    assert_eq!(holders(&core, "rig"), vec![5]);
}

#[test]
fn step_locks_are_taken_around_their_step() {
    let base = config(&[("w1", 1), ("w2", 1)], &[("d", &["w1", "w2"], 2)]);
    let mut cfg = (*with_locks(&base, vec![lock("deploy", LockScope::Master, 1)], &[])).clone();
    cfg.builders[0].steps[1].locks = vec![excl("deploy")];
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    core.worker_connected("w2", 2, &[], 0).unwrap();
    force(&mut core, "d");
    force(&mut core, "d");
    core.take_effects();
    assert!(holders(&core, "deploy").is_empty(), "step 0 takes no lock");
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 1)]);
    assert_eq!(holders(&core, "deploy"), vec![1]);
    core.step_ended(2, 2, 0, OK, 2).unwrap();
    assert!(
        started_steps(&core.take_effects()).is_empty(),
        "build 2 waits between steps"
    );
    let running = core.running_status();
    let waiting = running.iter().find(|r| r.build == 2).unwrap();
    assert_eq!(
        waiting.waiting_for_lock.as_deref(),
        Some("waiting for lock deploy (held by build 1)")
    );
    // A waiting build has no step out: no master deadline can end it, and
    // a second report of its last step is refused.
    assert_eq!(core.next_deadline(), None);
    assert!(core.step_ended(2, 2, 0, OK, 2).is_err());
    core.step_ended(1, 1, 1, OK, 3).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(2, 2, 1)]);
    assert_eq!(holders(&core, "deploy"), vec![2]);
    // Stopping a build that waits for a step lock ends it at once.
    force(&mut core, "d");
    core.step_ended(1, 3, 0, OK, 4).unwrap();
    core.stop_build(3, "enough", 5).unwrap();
    assert!(core.running_build(3).is_none());
    assert_eq!(holders(&core, "deploy"), vec![2]);
}

#[test]
fn worker_scoped_locks_count_per_worker_with_overrides() {
    let base = config(&[("w1", 4), ("w2", 4)], &[("c", &["w1", "w2"], 1)]);
    let mut l = lock("cpu", LockScope::Worker, 1);
    l.worker_max.insert("w2".into(), 2);
    let cfg = with_locks(&base, vec![l], &[("c", vec![counting("cpu", 1)])]);
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    core.worker_connected("w2", 2, &[], 0).unwrap();
    for _ in 0..4 {
        force(&mut core, "c");
    }
    assert_eq!(core.builds_on("w1"), 1);
    assert_eq!(core.builds_on("w2"), 2);
    assert_eq!(core.queue_of("c"), vec![4]);
}

#[test]
fn worker_tags_and_lists_both_restrict_eligibility() {
    let mut cfg = (*config(
        &[("w1", 1), ("w2", 1), ("w3", 1)],
        &[("t", &[], 1), ("both", &["w1", "w2"], 1)],
    ))
    .clone();
    cfg.workers[1].tags = vec!["arm".into()];
    cfg.workers[2].tags = vec!["arm".into(), "big".into()];
    cfg.builders[0].worker_tags = vec!["arm".into(), "big".into()];
    cfg.builders[1].worker_tags = vec!["arm".into()];
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    for (i, w) in ["w1", "w2", "w3"].iter().enumerate() {
        core.worker_connected(w, i as u64 + 1, &[], 0).unwrap();
    }
    force(&mut core, "t");
    force(&mut core, "both");
    assert_eq!(core.running_build(1).unwrap().worker, "w3");
    assert_eq!(core.running_build(2).unwrap().worker, "w2");
}

#[test]
fn worker_choice_in_order_least_busy_and_random() {
    let mk = |choice| {
        let mut cfg = (*config(
            &[("w1", 3), ("w2", 3), ("w3", 3)],
            &[("b", &["w1", "w2", "w3"], 1)],
        ))
        .clone();
        cfg.builders[0].worker_choice = choice;
        let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
        for (i, w) in ["w1", "w2", "w3"].iter().enumerate() {
            core.worker_connected(w, i as u64 + 1, &[], 0).unwrap();
        }
        for _ in 0..3 {
            force(&mut core, "b");
        }
        (1..=3)
            .map(|b| core.running_build(b).unwrap().worker.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(mk(WorkerChoice::InOrder), vec!["w1", "w1", "w1"]);
    assert_eq!(mk(WorkerChoice::LeastBusy), vec!["w1", "w2", "w3"]);
    let random = mk(WorkerChoice::Random);
    assert_eq!(random, mk(WorkerChoice::Random), "deterministic");
    assert_ne!(random, vec!["w1", "w1", "w1"], "spread, not in order");
}

#[test]
fn max_running_caps_a_builder() {
    let mut cfg = (*config(&[("w1", 4)], &[("b", &["w1"], 1), ("o", &["w1"], 1)])).clone();
    cfg.builders[0].max_running = Some(1);
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    force(&mut core, "b");
    force(&mut core, "b");
    force(&mut core, "o");
    assert_eq!(core.builds_on("w1"), 2, "b once, o once");
    assert_eq!(core.queue_of("b"), vec![2]);
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    assert_eq!(core.running_build(3).unwrap().builder, "b");
    let _ = BuildResult::Success;
}

#[test]
fn a_build_waiting_between_steps_whose_worker_is_lost_records_no_step_end_twice() {
    let base = config(&[("w1", 1), ("w2", 1)], &[("d", &["w1", "w2"], 2)]);
    let mut cfg = (*with_locks(&base, vec![lock("deploy", LockScope::Master, 1)], &[])).clone();
    cfg.builders[0].steps[1].locks = vec![excl("deploy")];
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    core.worker_connected("w2", 2, &[], 0).unwrap();
    force(&mut core, "d");
    force(&mut core, "d");
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    core.step_ended(2, 2, 0, OK, 2).unwrap();
    core.take_effects();
    assert!(core.running_build(2).unwrap().pending_step.is_some());
    core.worker_lost(2, 3);
    core.tick(3 + 60_000);
    let effects = core.take_effects();
    assert!(core.running_build(2).is_none(), "retried after the grace");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Record(Record::StepFinished { build: 2, .. }))),
        "step 0 of build 2 ended already: {effects:?}"
    );
    assert_eq!(holders(&core, "deploy"), vec![1]);
}

#[test]
fn cancelling_a_waiter_lets_the_claims_it_held_back_start_at_once() {
    let base = config(&[("w1", 4)], &[("c", &["w1"], 1), ("e", &["w1"], 1)]);
    let cfg = with_locks(
        &base,
        vec![lock("cpu", LockScope::Master, 3)],
        &[("c", vec![counting("cpu", 1)]), ("e", vec![excl("cpu")])],
    );
    let mut core = Core::new(cfg, Restored::default(), 0);
    core.worker_connected("w1", 1, &[], 0).unwrap();
    force(&mut core, "c"); // build 1 holds cpu:1
    let e = force(&mut core, "e"); // waits for build 1
    force(&mut core, "c"); // fits, but e comes first
    assert_eq!(holders(&core, "cpu"), vec![1]);
    core.cancel_request(e, "not needed", 1).unwrap();
    assert_eq!(
        holders(&core, "cpu"),
        vec![1, 2],
        "r3 starts in the same event"
    );
}
