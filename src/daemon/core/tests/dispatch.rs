//! Core tests: queued requests meet free workers; steps run in order with
//! what the request and builder give them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::protocol::{BuildResult, StepEnd};

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
