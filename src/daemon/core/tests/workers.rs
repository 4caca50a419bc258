//! Core tests: worker links: one per name, reports only on their own
//! steps, and a lost worker's builds resumed, retried or given up (also
//! under `retry = false`).

use std::sync::Arc;

use super::*;
use crate::protocol::BuildResult;

/// A core whose worker `w` ran build 1 (two steps) and lost its link.
fn orphaned_core() -> Core {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 2)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    core.take_effects();
    core.worker_lost(1, 1_000);
    assert!(
        core.take_effects().is_empty(),
        "a lost link ends nothing at once"
    );
    assert_eq!(core.running_build(1).unwrap().link, None);
    core
}

#[test]
fn a_worker_that_comes_back_in_time_resumes_its_build() {
    let mut core = orphaned_core();
    core.tick(30_000);
    assert!(core.running_build(1).is_some(), "within the 60 s grace");
    core.worker_connected("w", 2, &[held(1, 0)], 30_000)
        .unwrap();
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::ToWorker {
        link: 2,
        cmd: WorkerCmd::Resume { build: 1, step: 0 }
    }));
    assert!(finished(&effects).is_empty());
    // The step's end now comes on the new link and the build goes on.
    core.step_ended(2, 1, 0, OK, 30_001).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(2, 1, 1)]);
    assert!(
        core.step_ended(1, 1, 1, OK, 30_002).is_err(),
        "the old link is dead"
    );
}

#[test]
fn a_worker_that_stays_away_gets_its_builds_retried_then_given_up() {
    let mut core = orphaned_core();
    assert_eq!(core.next_deadline(), Some(61_000));
    core.tick(60_999);
    assert!(core.running_build(1).is_some());
    core.tick(61_000);
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(Record::BuildRetried { build: 1, request: 1, reason, .. })
            if reason.contains("did not come back within 1m")
    )));
    assert_eq!(core.queue_of("b"), vec![1], "queued again");
    assert_eq!(core.live_request(1).unwrap().retries, 1);
    // Three more losses: the default max_retries is 3, then exception.
    let mut now = 100_000;
    for round in 0..3 {
        core.worker_connected("w", 10 + round, &[], now).unwrap();
        let build = core
            .live_request(1)
            .unwrap()
            .build
            .expect("dispatched again");
        core.take_effects();
        core.worker_lost(10 + round, now);
        now += 61_000;
        core.tick(now);
        let effects = core.take_effects();
        if round < 2 {
            assert!(effects.iter().any(|e| matches!(e, Effect::Record(Record::BuildRetried { build: b, .. }) if *b == build)));
        } else {
            let f = finished(&effects);
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].1, BuildResult::Exception);
            assert!(
                f[0].2.as_ref().unwrap().contains("gave up after 3 retries"),
                "{f:?}"
            );
            assert!(core.live_request(1).is_none());
        }
    }
}

#[test]
fn a_worker_back_without_the_step_gets_the_build_retried() {
    let mut core = orphaned_core();
    core.worker_connected("w", 2, &[held(7, 0)], 2_000).unwrap();
    let effects = core.take_effects();
    assert!(
        effects.contains(&Effect::ToWorker {
            link: 2,
            cmd: WorkerCmd::Abandon { build: 7, step: 0 }
        }),
        "a step the master does not know is abandoned"
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Record(Record::BuildRetried { build: 1, .. })))
    );
    // The retried request runs again at once, on the same worker.
    assert_eq!(started_steps(&effects), vec![(2, 2, 0)]);
}

#[test]
fn stopping_a_build_whose_worker_is_away_ends_it_now() {
    let mut core = orphaned_core();
    core.stop_build(1, "stopped by test", 2_000).unwrap();
    let effects = core.take_effects();
    assert_eq!(finished(&effects)[0].1, BuildResult::Cancelled);
    core.worker_connected("w", 2, &[held(1, 0)], 3_000).unwrap();
    assert!(core.take_effects().contains(&Effect::ToWorker {
        link: 2,
        cmd: WorkerCmd::Abandon { build: 1, step: 0 }
    }));
}

#[test]
fn a_worker_may_only_report_its_own_steps() {
    let mut core = Core::new(
        config(&[("w", 1), ("v", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    core.worker_connected("v", 2, &[], 0).unwrap();
    force(&mut core, "b");
    core.take_effects();
    let err = core.step_ended(2, 1, 0, OK, 1).unwrap_err();
    assert!(matches!(err, CoreError::NotYourStep { link: 2, .. }));
    assert!(core.take_effects().is_empty(), "nothing changed");
    assert!(core.running_build(1).is_some());
    // A wrong step index is refused too.
    assert!(core.step_ended(1, 1, 5, OK, 1).is_err());
}

#[test]
fn a_second_connection_under_one_name_is_refused() {
    let mut core = Core::new(config(&[("w", 1)], &[]), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    assert_eq!(
        core.worker_connected("w", 2, &[], 0),
        Err(CoreError::WorkerAlreadyConnected("w".into()))
    );
    assert_eq!(
        core.worker_connected("nope", 3, &[], 0),
        Err(CoreError::UnknownWorker("nope".into()))
    );
}

/// [`orphaned_core`] with `retry = false` on builder `b`.
fn orphaned_once_core() -> Core {
    let mut cfg = (*config(&[("w", 1), ("v", 1)], &[("b", &["w", "v"], 2)])).clone();
    cfg.builders[0].retry = false;
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    core.take_effects();
    core.worker_lost(1, 1_000);
    assert!(core.take_effects().is_empty());
    core
}

fn retried(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(Record::BuildRetried { build, .. }) => Some(*build),
            _ => None,
        })
        .collect()
}

#[test]
fn retry_false_ends_a_build_whose_worker_stays_away_as_exception() {
    let mut core = orphaned_once_core();
    core.tick(60_999);
    assert!(core.running_build(1).is_some(), "it still waits for w");
    core.tick(61_000);
    let effects = core.take_effects();
    assert!(retried(&effects).is_empty(), "retried: {effects:?}");
    let f = finished(&effects);
    assert_eq!(f.len(), 1, "{effects:?}");
    assert_eq!(f[0].0, 1);
    assert_eq!(f[0].1, BuildResult::Exception);
    let reason = f[0].2.as_deref().unwrap();
    assert!(reason.contains("did not come back within 1m"), "{reason}");
    assert!(reason.contains("not run again (retry = false)"), "{reason}");
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(Record::StepFinished {
            build: 1,
            step: 0,
            result: BuildResult::Exception,
            ..
        })
    )));
    assert!(core.live_request(1).is_none(), "the request ended with it");
    assert!(core.queue_of("b").is_empty());
    // Another worker free: nothing starts, the request is not run again.
    core.worker_connected("v", 2, &[], 62_000).unwrap();
    assert!(started_steps(&core.take_effects()).is_empty());
    // The first worker comes back still running the step: it must kill it.
    core.worker_connected("w", 3, &[held(1, 0)], 63_000)
        .unwrap();
    let effects = core.take_effects();
    assert!(
        effects.contains(&Effect::ToWorker {
            link: 3,
            cmd: WorkerCmd::Abandon { build: 1, step: 0 }
        }),
        "{effects:?}"
    );
    assert!(started_steps(&effects).is_empty());
}

#[test]
fn retry_false_ends_a_build_whose_worker_comes_back_without_it() {
    let mut core = orphaned_once_core();
    core.worker_connected("w", 2, &[], 2_000).unwrap();
    let effects = core.take_effects();
    assert!(retried(&effects).is_empty(), "retried: {effects:?}");
    let f = finished(&effects);
    assert_eq!(f.len(), 1, "{effects:?}");
    assert_eq!(f[0].1, BuildResult::Exception);
    assert!(
        f[0].2.as_deref().unwrap().contains("retry = false"),
        "{f:?}"
    );
    assert!(started_steps(&effects).is_empty(), "never run again");
    assert!(core.live_request(1).is_none());
}

#[test]
fn retry_false_ends_a_build_whose_worker_is_removed_while_away() {
    let mut core = orphaned_once_core();
    let mut cfg = (*config(&[("v", 1)], &[("b", &["v"], 2)])).clone();
    cfg.builders[0].retry = false;
    core.reload(Arc::new(cfg), 2_000, false);
    let f = finished(&core.take_effects());
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1, BuildResult::Exception);
    assert!(
        f[0].2.as_deref().unwrap().contains("retry = false"),
        "{f:?}"
    );
}

#[test]
fn a_worker_back_with_a_step_retried_elsewhere_is_told_to_abandon_it() {
    // Default retry = true: the build is retried on `v` after the grace
    // period; `w` then comes back still running the old step.
    let mut core = Core::new(
        config(&[("w", 1), ("v", 1)], &[("b", &["w", "v"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    core.take_effects();
    core.worker_lost(1, 1_000);
    core.worker_connected("v", 2, &[], 1_000).unwrap();
    core.tick(61_000);
    let effects = core.take_effects();
    assert_eq!(retried(&effects), vec![1]);
    assert_eq!(started_steps(&effects), vec![(2, 2, 0)], "build 2 on v");
    core.worker_connected("w", 3, &[held(1, 0)], 62_000)
        .unwrap();
    let effects = core.take_effects();
    assert_eq!(
        effects,
        vec![Effect::ToWorker {
            link: 3,
            cmd: WorkerCmd::Abandon { build: 1, step: 0 }
        }],
        "only the abandon: build 2 runs on"
    );
    assert!(core.running_build(2).is_some());
}

#[test]
fn retry_is_true_unless_the_builder_says_false() {
    assert!(BuilderDef::default().retry);
    let stored = r#"{"name":"b","previous_names":[],"workers":["w"],"env":{},"steps":[]}"#;
    let def: BuilderDef = serde_json::from_str(stored).unwrap();
    assert!(def.retry, "a definition stored before the key is retried");
}
