//! Unit tests of the core: no I/O, no clock, no runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::{Secret, StepAction, StepDef};
use crate::protocol::{BuildResult, MasterToWorker, StepEnd};

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
            })
            .collect(),
        builders: builders
            .iter()
            .map(|(name, workers, steps)| BuilderDef {
                name: name.to_string(),
                previous_names: vec![],
                workers: workers.iter().map(|w| w.to_string()).collect(),
                env: BTreeMap::new(),
                steps: (0..*steps)
                    .map(|i| StepDef {
                        name: format!("s{i}"),
                        action: StepAction::Shell(format!("step {i}")),
                        timeout: None,
                        env: BTreeMap::new(),
                    })
                    .collect(),
            })
            .collect(),
        origin: "test".into(),
        hash: format!("{workers:?}{builders:?}"),
    })
}

fn started_steps(effects: &[Effect]) -> Vec<(LinkId, u64, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ToWorker {
                link,
                msg: MasterToWorker::StartStep(a),
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
    core.worker_connected("w", 7, 0).unwrap();
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
    core.worker_connected("w", 1, 0).unwrap();
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
    core.worker_connected("a", 1, 0).unwrap();
    core.worker_connected("b", 2, 0).unwrap();
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
fn stop_cancels_and_worker_loss_is_an_exception() {
    let mut core = Core::new(
        config(&[("w", 2)], &[("b", &["w"], 2)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, 0).unwrap();
    force(&mut core, "b");
    force(&mut core, "b");
    core.take_effects();
    core.stop_build(1, "stopped by test").unwrap();
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::ToWorker {
        link: 1,
        msg: MasterToWorker::StopStep { build: 1, step: 0 }
    }));
    core.step_ended(1, 1, 0, StepEnd::Stopped, 1).unwrap();
    let effects = core.take_effects();
    assert_eq!(finished(&effects)[0].1, BuildResult::Cancelled);
    core.worker_lost(1, 2);
    let effects = core.take_effects();
    assert_eq!(
        finished(&effects),
        vec![(
            2,
            BuildResult::Exception,
            Some("worker `w` was lost".into())
        )]
    );
    assert!(core.running_build(2).is_none());
}

#[test]
fn a_stopped_build_does_not_start_its_next_step() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 2)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, 0).unwrap();
    force(&mut core, "b");
    core.stop_build(1, "stopped").unwrap();
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
    core.worker_connected("w", 1, 0).unwrap();
    core.worker_connected("v", 2, 0).unwrap();
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
    core.worker_connected("w", 1, 0).unwrap();
    assert_eq!(
        core.worker_connected("w", 2, 0),
        Err(CoreError::WorkerAlreadyConnected("w".into()))
    );
    assert_eq!(
        core.worker_connected("nope", 3, 0),
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
    core.worker_connected("w", 1, 0).unwrap();
    let props = BTreeMap::from([("NAME".to_string(), "x; rm -rf /".to_string())]);
    core.force_build("b", None, props, 0).unwrap();
    let start = core
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            Effect::ToWorker {
                msg: MasterToWorker::StartStep(a),
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
        queued: vec![
            LiveRequest {
                id: 3,
                builder: "b".into(),
                reason: None,
                properties: BTreeMap::new(),
                build: None,
            },
            LiveRequest {
                id: 9,
                builder: "b".into(),
                reason: None,
                properties: BTreeMap::new(),
                build: None,
            },
        ],
        next_request: 10,
        next_build: 5,
    };
    let mut core = Core::new(config(&[("w", 1)], &[("b", &["w"], 1)]), restored, 0);
    assert_eq!(core.generation(), 5, "a different file is a new generation");
    assert_eq!(core.queue_of("b"), vec![3, 9]);
    assert_eq!(force(&mut core, "b"), 10);
    core.worker_connected("w", 1, 0).unwrap();
    assert_eq!(started_steps(&core.take_effects()), vec![(1, 5, 0)]);
}

#[test]
fn restored_requests_of_a_vanished_builder_are_cancelled() {
    let restored = Restored {
        generation: 1,
        config_hash: String::new(),
        queued: vec![LiveRequest {
            id: 1,
            builder: "gone".into(),
            reason: None,
            properties: BTreeMap::new(),
            build: None,
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
