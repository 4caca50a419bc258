//! Unit tests of the core: no I/O, no clock, no runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{Secret, StepAction, StepDef};
use crate::protocol::{BuildResult, DrainMode, RunningStep, StepEnd};

/// Build a config: workers as (name, max_builds), builders as (name,
/// workers, number of steps).
pub(super) fn config(workers: &[(&str, u32)], builders: &[(&str, &[&str], usize)]) -> Arc<Config> {
    Arc::new(Config {
        master: Default::default(),
        workers: workers
            .iter()
            .map(|(name, max)| WorkerDef {
                name: name.to_string(),
                local: false,
                max_builds: *max,
                secret: Some(Secret("s".into())),
                user: None,
            })
            .collect(),
        builders: builders
            .iter()
            .map(|(name, workers, steps)| BuilderDef {
                name: name.to_string(),
                previous_names: vec![],
                workers: workers.iter().map(|w| w.to_string()).collect(),
                env: BTreeMap::new(),
                pass_env: Vec::new(),
                steps: (0..*steps)
                    .map(|i| StepDef {
                        name: format!("s{i}"),
                        action: StepAction::Shell(format!("step {i}")),
                        timeout: None,
                        env: BTreeMap::new(),
                    })
                    .collect(),
                collapse: false,
                retry: true,
            })
            .collect(),
        origin: "test".into(),
        warnings: vec![],
        hash: format!("{workers:?}{builders:?}"),
    })
}

fn started_steps(effects: &[Effect]) -> Vec<(LinkId, u64, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToWorker {
                link,
                cmd: WorkerCmd::Start(a),
            } => Some((*link, a.build, a.step)),
            _ => None,
        })
        .collect()
}

fn finished(effects: &[Effect]) -> Vec<(u64, BuildResult, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(Record::BuildFinished {
                build,
                result,
                reason,
                ..
            }) => Some((*build, *result, reason.clone())),
            _ => None,
        })
        .collect()
}

fn force(core: &mut Core, builder: &str) -> RequestId {
    core.force_build(builder, None, BTreeMap::new(), 0).unwrap()
}

const OK: StepEnd = StepEnd::Exited { code: 0 };

#[test]
fn requests_queue_in_order_and_wait_for_a_worker() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.take_effects();
    let ids: Vec<_> = (0..3).map(|_| force(&mut core, "b")).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(core.queue_of("b"), vec![1, 2, 3]);
    let effects = core.take_effects();
    assert!(started_steps(&effects).is_empty(), "no worker yet");
    core.worker_connected("w", 7, &[], 0).unwrap();
    let effects = core.take_effects();
    assert_eq!(started_steps(&effects), vec![(7, 1, 0)]);
    assert_eq!(
        core.queue_of("b"),
        vec![2, 3],
        "max_builds = 1 holds the rest"
    );
    core.step_ended(7, 1, 0, OK, 1).unwrap();
    let effects = core.take_effects();
    assert_eq!(finished(&effects), vec![(1, BuildResult::Success, None)]);
    assert_eq!(
        started_steps(&effects),
        vec![(7, 2, 0)],
        "the next request in order"
    );
}

#[test]
fn steps_run_in_order_and_a_failure_ends_the_build() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 3)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 0)]);
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 1)]);
    core.step_ended(1, 1, 1, StepEnd::Exited { code: 3 }, 2)
        .unwrap();
    let effects = core.take_effects();
    assert!(started_steps(&effects).is_empty(), "step 2 never starts");
    assert_eq!(
        finished(&effects),
        vec![(
            1,
            BuildResult::Failure,
            Some("step `s1` exited with code 3".into())
        )]
    );
}

#[test]
fn builds_spread_over_workers_within_their_limits() {
    let mut core = Core::new(
        config(&[("a", 2), ("b", 1)], &[("x", &["a", "b"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("a", 1, &[], 0).unwrap();
    core.worker_connected("b", 2, &[], 0).unwrap();
    for _ in 0..5 {
        force(&mut core, "x");
    }
    let mut links: Vec<LinkId> = started_steps(&core.take_effects())
        .iter()
        .map(|s| s.0)
        .collect();
    links.sort();
    assert_eq!(links, vec![1, 1, 2], "3 slots in all");
    assert_eq!(core.queue_of("x").len(), 2);
}

#[test]
fn stop_cancels_a_build() {
    let mut core = Core::new(
        config(&[("w", 2)], &[("b", &["w"], 2)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    core.take_effects();
    core.stop_build(1, "stopped by test", 1).unwrap();
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::ToWorker {
        link: 1,
        cmd: WorkerCmd::Stop { build: 1, step: 0 }
    }));
    core.step_ended(1, 1, 0, StepEnd::Stopped, 1).unwrap();
    let effects = core.take_effects();
    assert_eq!(finished(&effects)[0].1, BuildResult::Cancelled);
}

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

fn held(build: u64, step: u32) -> RunningStep {
    RunningStep { build, step }
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
fn builds_running_at_a_restart_wait_for_their_worker() {
    let cfg = config(&[("w", 1)], &[("b", &["w"], 2)]);
    let def = Arc::new(cfg.builders[0].clone());
    let restored = Restored {
        generation: 1,
        config_hash: cfg.hash.clone(),
        running: vec![RestoredBuild {
            id: 4,
            request: LiveRequest {
                id: 9,
                builder: "b".into(),
                reason: None,
                properties: BTreeMap::new(),
                build: Some(4),
                retries: 0,
                ..LiveRequest::default()
            },
            worker: "w".into(),
            def,
            generation: 1,
            step: 1,
            started_at_ms: 100,
        }],
        next_request: 10,
        next_build: 5,
        ..Restored::default()
    };
    let mut core = Core::new(cfg, restored, 500);
    assert_eq!(core.running_build(4).unwrap().orphaned_until, Some(60_500));
    core.take_effects();
    core.worker_connected("w", 1, &[held(4, 1)], 600).unwrap();
    assert!(core.take_effects().iter().any(|e| matches!(
        e,
        Effect::ToWorker {
            cmd: WorkerCmd::Resume {
                build: 4,
                step: 1,
                ..
            },
            ..
        }
    )));
    core.step_ended(1, 4, 1, OK, 700).unwrap();
    let effects = core.take_effects();
    assert_eq!(finished(&effects), vec![(4, BuildResult::Success, None)]);
}

#[test]
fn draining_for_shutdown_refuses_requests_and_starts_nothing() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    force(&mut core, "b");
    core.set_drain(DrainMode::Shutdown, true, 0);
    assert_eq!(core.drain_mode(), Some(DrainMode::Shutdown));
    assert!(core.is_draining());
    assert_eq!(
        core.force_build("b", None, BTreeMap::new(), 0),
        Err(CoreError::Draining)
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    assert!(started_steps(&core.take_effects()).is_empty());
    core.set_drain(DrainMode::Shutdown, false, 1);
    assert_eq!(core.drain_mode(), None);
    assert!(!core.is_draining());
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 0)]);
}

#[test]
fn draining_for_maintenance_queues_requests_but_starts_nothing() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.set_drain(DrainMode::Maintenance, true, 0);
    assert_eq!(core.drain_mode(), Some(DrainMode::Maintenance));
    assert!(core.is_draining());
    assert_eq!(
        force(&mut core, "b"),
        1,
        "a maintenance drain takes requests"
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    assert!(started_steps(&core.take_effects()).is_empty());
    assert_eq!(core.queue_of("b"), vec![1]);
    // A shutdown drain on top, then cancelled: maintenance stays in force.
    core.set_drain(DrainMode::Shutdown, true, 1);
    assert_eq!(core.drain_mode(), Some(DrainMode::Shutdown));
    core.set_drain(DrainMode::Shutdown, false, 2);
    assert_eq!(core.drain_mode(), Some(DrainMode::Maintenance));
    assert!(started_steps(&core.take_effects()).is_empty());
    core.set_drain(DrainMode::Maintenance, false, 3);
    assert_eq!(core.drain_mode(), None);
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 1, 0)]);
}

#[test]
fn a_stopped_build_does_not_start_its_next_step() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 2)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    force(&mut core, "b");
    core.stop_build(1, "stopped", 1).unwrap();
    core.take_effects();
    // The step happened to finish fine before the stop reached it.
    core.step_ended(1, 1, 0, OK, 1).unwrap();
    let effects = core.take_effects();
    assert!(started_steps(&effects).is_empty());
    assert_eq!(finished(&effects)[0].1, BuildResult::Cancelled);
}

#[test]
fn cancel_removes_a_queued_request() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    force(&mut core, "b");
    force(&mut core, "b");
    core.cancel_request(1, "no longer wanted", 1).unwrap();
    assert_eq!(core.queue_of("b"), vec![2]);
    assert_eq!(
        core.cancel_request(1, "again", 1),
        Err(CoreError::RequestNotLive(1))
    );
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

#[test]
fn unknown_builders_and_bad_properties_are_refused() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.take_effects();
    assert_eq!(
        core.force_build("x", None, BTreeMap::new(), 0),
        Err(CoreError::UnknownBuilder("x".into()))
    );
    let props = BTreeMap::from([("A B".to_string(), "v".to_string())]);
    assert!(matches!(
        core.force_build("b", None, props, 0),
        Err(CoreError::BadPropertyName(_))
    ));
    assert!(core.take_effects().is_empty());
}

#[test]
fn properties_and_builder_env_reach_the_step() {
    let mut cfg = (*config(&[("w", 1)], &[("b", &["w"], 1)])).clone();
    cfg.builders[0].env.insert("GREETING".into(), "hi".into());
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    core.worker_connected("w", 1, &[], 0).unwrap();
    let props = BTreeMap::from([("NAME".to_string(), "x; rm -rf /".to_string())]);
    core.force_build("b", None, props, 0).unwrap();
    let start = core
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::ToWorker {
                cmd: WorkerCmd::Start(a),
                ..
            } => Some(a),
            _ => None,
        })
        .unwrap();
    let env: BTreeMap<_, _> = start.env.into_iter().collect();
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["BB_PROP_NAME"], "x; rm -rf /");
    assert_eq!(env["BB_BUILDER"], "b");
    assert_eq!(env["BB_BUILD_ID"], "1");
}

#[test]
fn restored_requests_keep_their_order_and_ids_continue() {
    let restored = Restored {
        generation: 4,
        config_hash: "an older file".into(),
        running: vec![],
        queued: vec![
            LiveRequest {
                id: 3,
                builder: "b".into(),
                reason: None,
                properties: BTreeMap::new(),
                build: None,
                retries: 0,
                ..LiveRequest::default()
            },
            LiveRequest {
                id: 9,
                builder: "b".into(),
                reason: None,
                properties: BTreeMap::new(),
                build: None,
                retries: 0,
                ..LiveRequest::default()
            },
        ],
        next_request: 10,
        next_build: 5,
    };
    let mut core = Core::new(config(&[("w", 1)], &[("b", &["w"], 1)]), restored, 0);
    assert_eq!(core.generation(), 5, "a different file is a new generation");
    assert_eq!(core.queue_of("b"), vec![3, 9]);
    assert_eq!(force(&mut core, "b"), 10);
    core.worker_connected("w", 1, &[], 0).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 5, 0)]);
}

#[test]
fn restored_requests_of_a_vanished_builder_are_cancelled() {
    let restored = Restored {
        generation: 1,
        config_hash: String::new(),
        running: vec![],
        queued: vec![LiveRequest {
            id: 1,
            builder: "gone".into(),
            reason: None,
            properties: BTreeMap::new(),
            build: None,
            retries: 0,
            ..LiveRequest::default()
        }],
        next_request: 2,
        next_build: 1,
    };
    let mut core = Core::new(config(&[("w", 1)], &[("b", &["w"], 1)]), restored, 0);
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(Record::RequestCancelled { request: 1, reason, .. }) if reason.contains("removed by reload")
    )));
    assert!(core.live_request(1).is_none());
}

#[test]
fn a_restart_on_the_same_file_keeps_the_generation() {
    let cfg = config(&[("w", 1)], &[("b", &["w"], 1)]);
    let restored = Restored {
        generation: 7,
        config_hash: cfg.hash.clone(),
        ..Restored::default()
    };
    let mut core = Core::new(cfg, restored, 0);
    assert_eq!(core.generation(), 7);
    assert!(core.take_effects().is_empty(), "no new generation recorded");
}

#[test]
fn a_full_queue_and_bad_property_values_are_refused() {
    let mut cfg = (*config(&[("w", 1)], &[("b", &["w"], 1)])).clone();
    cfg.master.max_queued = 2;
    let mut core = Core::new(Arc::new(cfg), Restored::default(), 0);
    force(&mut core, "b");
    force(&mut core, "b");
    assert_eq!(
        core.force_build("b", None, BTreeMap::new(), 0),
        Err(CoreError::QueueFull {
            builder: "b".into(),
            max: 2
        })
    );
    let nul = BTreeMap::from([("A".to_string(), "x\0y".to_string())]);
    core.cancel_request(1, "room", 0).unwrap();
    assert!(matches!(
        core.force_build("b", None, nul, 0),
        Err(CoreError::BadPropertyValue { .. })
    ));
    let long = BTreeMap::from([("A".to_string(), "x".repeat(MAX_PROPERTY_VALUE + 1))]);
    assert!(matches!(
        core.force_build("b", None, long, 0),
        Err(CoreError::BadPropertyValue { .. })
    ));
    let many: BTreeMap<String, String> = (0..=MAX_PROPERTIES)
        .map(|i| (format!("P{i}"), "v".to_string()))
        .collect();
    assert_eq!(
        core.force_build("b", None, many, 0),
        Err(CoreError::TooManyProperties(MAX_PROPERTIES + 1))
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
