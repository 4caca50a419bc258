//! The reload contract (`docs/reload.md`) for workers, row by row: removed,
//! new credentials, unlisted, fewer slots, added (back).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::config::Secret;

#[test]
fn a_removed_worker_drains_then_is_disconnected() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.workers.clear();
    cfg.builders[0].workers.clear();
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.workers_removed, vec!["w".to_string()]);
    assert_eq!(report.workers_draining, vec!["w".to_string()]);
    assert!(
        !core
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::CloseLink { .. })),
        "not while it runs builds"
    );
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert!(core.queue_of("b") == vec![3], "takes nothing new");
    core.step_ended(1, 2, 0, OK, 2).unwrap();
    let effects = core.take_effects();
    assert!(effects.contains(&Effect::CloseLink {
        link: 1,
        reason: "removed by reload".into()
    }));
    assert!(core.worker_status().is_empty(), "forgotten once idle");
}

#[test]
fn changed_credentials_drain_then_require_a_new_login() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.workers[0].secret = Some(Secret("new".into()));
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.workers_changed, vec!["w".to_string()]);
    core.take_effects();
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert_eq!(core.queue_of("b"), vec![3], "no new build on the old login");
    core.step_ended(1, 2, 0, OK, 2).unwrap();
    assert!(
        core.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::CloseLink { link: 1, .. }))
    );
    core.worker_connected("w", 2, &[], 3).unwrap();
    assert!(
        core.running_build(3).is_some(),
        "back to work after logging in again"
    );
}

#[test]
fn a_worker_no_longer_listed_finishes_but_takes_no_new_builds() {
    let mut core = Core::new(
        config(&[("w", 1), ("v", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    core.worker_connected("v", 2, &[], 0).unwrap();
    core.force_build("b", None, BTreeMap::new(), 0).unwrap();
    core.force_build("b", None, BTreeMap::new(), 0).unwrap();
    let mut cfg = (**core.config()).clone();
    cfg.builders[0].workers = vec!["v".into()];
    cfg.hash.push('+');
    core.reload(Arc::new(cfg), 1, false);
    // Newly listed connected worker attaches at once: request 2 runs on v.
    assert_eq!(core.running_build(2).unwrap().worker, "v");
    assert_eq!(core.running_build(1).unwrap().worker, "w");
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    core.force_build("b", None, BTreeMap::new(), 2).unwrap();
    assert_eq!(core.queue_of("b"), vec![3], "w is not eligible any more");
}

#[test]
fn lowering_max_builds_applies_to_new_builds_only() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.workers[0].max_builds = 1;
    cfg.hash.push('+');
    core.reload(Arc::new(cfg), 1, false);
    assert!(core.running_build(1).is_some() && core.running_build(2).is_some());
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert_eq!(
        core.queue_of("b"),
        vec![3],
        "one still runs: limit 1 is reached"
    );
    core.step_ended(1, 2, 0, OK, 2).unwrap();
    assert!(core.running_build(3).is_some());
}

/// `workers_draining` names only workers that still run builds: an idle
/// worker removed, or whose credentials changed, is disconnected at once
/// (and not listed); a busy one is listed and closed when idle. An offline
/// worker with new credentials needs no closing at all.
#[test]
fn only_busy_workers_are_reported_draining() {
    let mut core = Core::new(
        config(
            &[("busy", 1), ("idle", 1), ("rekeyed", 1), ("off", 1)],
            &[("b", &["busy"], 1)],
        ),
        Restored::default(),
        0,
    );
    for (link, name) in [(1, "busy"), (2, "idle"), (3, "rekeyed")] {
        core.worker_connected(name, link, &[], 0).unwrap();
    }
    core.force_build("b", None, BTreeMap::new(), 0).unwrap();
    core.take_effects();
    let mut cfg = (**core.config()).clone();
    cfg.workers.retain(|w| w.name != "busy" && w.name != "idle");
    cfg.builders[0].workers = vec!["rekeyed".into()];
    for w in &mut cfg.workers {
        w.secret = Some(Secret("new".into()));
    }
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.workers_removed, vec!["busy", "idle"]);
    assert_eq!(report.workers_changed, vec!["rekeyed", "off"]);
    assert_eq!(report.workers_draining, vec!["busy"]);
    let closed: Vec<(LinkId, String)> = core
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::CloseLink { link, reason } => Some((link, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        vec![
            (2, "removed by reload".to_string()),
            (
                3,
                "credentials changed by reload; authenticate again".to_string()
            ),
        ]
    );
    // A busy worker whose credentials change is listed too.
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.workers[0].local = true;
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.workers_changed, vec!["w"]);
    assert_eq!(
        report.workers_draining,
        vec!["w"],
        "`local` is a credential"
    );
    assert!(
        !core
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::CloseLink { .. }))
    );
}

/// A worker removed and then added back while it still runs builds stays
/// draining under its old login, and is reported draining.
#[test]
fn a_worker_added_back_while_draining_is_reported_draining() {
    let mut core = busy_core();
    let original = (**core.config()).clone();
    let mut cfg = original.clone();
    cfg.workers.clear();
    cfg.builders[0].workers.clear();
    cfg.hash.push('+');
    core.reload(Arc::new(cfg), 1, false);
    let mut back = original;
    back.hash.push_str("++");
    let report = core.reload(Arc::new(back), 2, false);
    assert_eq!(report.workers_added, vec!["w"]);
    assert_eq!(report.workers_draining, vec!["w"]);
    assert_eq!(core.queue_of("b"), vec![3], "still takes nothing new");
}

/// A worker new in the file is reported added, may connect, and builds.
#[test]
fn an_added_worker_is_reported_and_may_connect() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    let mut v = cfg.workers[0].clone();
    v.name = "v".into();
    cfg.workers.push(v);
    cfg.builders[0].workers.push("v".into());
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.workers_added, vec!["v"]);
    assert!(report.workers_changed.is_empty() && report.workers_draining.is_empty());
    core.worker_connected("v", 9, &[], 2).unwrap();
    assert_eq!(core.running_build(3).unwrap().worker, "v");
}
