//! Core tests: what a client asks of builds (force and its refusals,
//! cancel, stop) and the master-wide drains.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::protocol::{BuildResult, DrainMode, StepEnd};

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
