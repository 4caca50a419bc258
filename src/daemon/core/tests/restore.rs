//! Core tests: a master restart on what the store kept (queued requests,
//! running builds waiting for their workers, the generation).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::protocol::BuildResult;

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
        ..Restored::default()
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
        ..Restored::default()
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
