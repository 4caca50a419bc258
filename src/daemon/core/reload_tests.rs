//! The reload contract (`docs/reload.md`), row by row.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::tests::config;
use super::*;
use crate::config::{Secret, StepDef};
use crate::protocol::{BuildResult, StepEnd};

const OK: StepEnd = StepEnd::Exited { code: 0 };

/// A core with worker `w` (2 slots) connected on link 1 and builder `b`
/// (one step): builds 1 and 2 run, request 3 waits in the queue.
fn busy_core() -> Core {
    let mut core = Core::new(
        config(&[("w", 2)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.worker_connected("w", 1, &[], 0).unwrap();
    for _ in 0..3 {
        core.force_build("b", None, BTreeMap::new(), 0).unwrap();
    }
    core.take_effects();
    core
}

fn with_steps(cfg: &Config, builder: &str, steps: usize) -> Arc<Config> {
    let mut cfg = cfg.clone();
    let b = cfg.builders.iter_mut().find(|b| b.name == builder).unwrap();
    let template = b.steps[0].clone();
    b.steps = (0..steps)
        .map(|i| StepDef {
            name: format!("new{i}"),
            ..template.clone()
        })
        .collect();
    cfg.hash.push('+');
    Arc::new(cfg)
}

#[test]
fn an_unchanged_config_changes_nothing() {
    let mut core = busy_core();
    let same = Arc::clone(core.config());
    let report = core.reload(same, 1, false);
    assert_eq!(report.generation_before, report.generation_after);
    assert!(report.builders_changed.is_empty() && report.builders_added.is_empty());
    assert!(core.take_effects().is_empty(), "no record, no message");
    assert_eq!(core.queue_of("b"), vec![3]);
}

#[test]
fn a_changed_builder_keeps_running_builds_and_its_queue() {
    let mut core = busy_core();
    let old_def = Arc::clone(&core.running_build(1).unwrap().def);
    let new = with_steps(core.config(), "b", 2);
    let report = core.reload(new, 1, false);
    assert_eq!(report.builders_changed, vec!["b".to_string()]);
    assert_eq!(report.generation_after, report.generation_before + 1);
    assert_eq!(report.builds_on_old_generations, vec![1, 2]);
    // Running builds keep the definition they started with.
    assert!(Arc::ptr_eq(&core.running_build(1).unwrap().def, &old_def));
    assert_eq!(core.queue_of("b"), vec![3], "queue kept, in order");
    core.take_effects();
    // Build 1 had one step: it finishes after it, not after two.
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(Record::BuildFinished {
            build: 1,
            result: BuildResult::Success,
            ..
        })
    )));
    // Request 3 now runs with the new definition (two steps, new names).
    let b3 = core.running_build(3).expect("request 3 became build 3");
    assert_eq!(b3.def.steps.len(), 2);
    assert_eq!(b3.def.steps[0].name, "new0");
    assert_eq!(b3.generation, report.generation_after);
}

#[test]
fn an_added_builder_dispatches_at_once() {
    let mut core = busy_core();
    core.step_ended(1, 1, 0, OK, 1).unwrap(); // frees a slot; request 3 takes it
    core.step_ended(1, 2, 0, OK, 1).unwrap(); // frees the other slot
    core.take_effects();
    let mut cfg = (**core.config()).clone();
    let mut extra = cfg.builders[0].clone();
    extra.name = "c".into();
    cfg.builders.push(extra);
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 2, false);
    assert_eq!(report.builders_added, vec!["c".to_string()]);
    core.force_build("c", None, BTreeMap::new(), 3).unwrap();
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::ToWorker { cmd: WorkerCmd::Start(a), .. } if a.builder == "c"
    )));
}

#[test]
fn a_removed_builder_finishes_running_builds_and_cancels_its_queue() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.builders.clear();
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.builders_removed, vec!["b".to_string()]);
    assert_eq!(report.requests_cancelled, vec![3]);
    let gen_after = report.generation_after;
    let effects = core.take_effects();
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Record(Record::RequestCancelled { request: 3, reason, .. })
            if *reason == format!("removed by reload, generation {gen_after}")
    )));
    assert_eq!(
        core.force_build("b", None, BTreeMap::new(), 2),
        Err(CoreError::UnknownBuilder("b".into()))
    );
    // Running builds still finish and are recorded.
    core.step_ended(1, 1, 0, OK, 2).unwrap();
    assert!(core.take_effects().iter().any(|e| matches!(
        e,
        Effect::Record(Record::BuildFinished {
            build: 1,
            result: BuildResult::Success,
            ..
        })
    )));
    let status = core.builder_status();
    assert_eq!(status.len(), 1, "still listed while build 2 runs");
    assert_eq!(status[0].state, "removed");
}

#[test]
fn a_rename_moves_queue_running_builds_and_history() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.builders[0].name = "b2".into();
    cfg.builders[0].previous_names = vec!["b".into()];
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(
        report.builders_renamed,
        vec![("b".to_string(), "b2".to_string())]
    );
    assert!(report.builders_added.is_empty() && report.builders_removed.is_empty());
    assert_eq!(report.requests_moved, vec![3]);
    assert_eq!(core.queue_of("b2"), vec![3]);
    assert_eq!(core.running_build(1).unwrap().builder, "b2");
    assert!(
        core.take_effects()
            .contains(&Effect::Record(Record::BuilderRenamed {
                from: "b".into(),
                to: "b2".into()
            }))
    );
    assert_eq!(
        core.force_build("b", None, BTreeMap::new(), 2),
        Err(CoreError::RenamedBuilder {
            old: "b".into(),
            new: "b2".into()
        })
    );
}

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

#[test]
fn dry_run_reports_the_same_and_changes_nothing() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.builders.clear();
    cfg.master.state_dir = Some("/elsewhere".into());
    cfg.hash.push('+');
    let cfg = Arc::new(cfg);
    let dry = core.reload(Arc::clone(&cfg), 1, true);
    assert!(core.take_effects().is_empty());
    assert_eq!(core.queue_of("b"), vec![3]);
    assert_eq!(dry.needs_restart, vec!["master.state_dir".to_string()]);
    let real = core.reload(cfg, 1, false);
    assert_eq!(dry, real);
}

/// The generation a reload records, and the hash it reports, are the new
/// ones: one more than before, the new file's hash.
#[test]
fn a_reload_records_the_next_generation_with_the_new_hash() {
    let mut core = busy_core();
    let before = core.generation();
    assert_eq!(before, 1, "a fresh start is generation 1");
    let mut cfg = (*with_steps(core.config(), "b", 2)).clone();
    cfg.hash = "new-hash".into();
    cfg.origin = "new.toml".into();
    let report = core.reload(Arc::new(cfg), 7, false);
    assert_eq!(report.generation_before, 1);
    assert_eq!(report.generation_after, 2);
    assert_eq!(report.config_hash, "new-hash");
    assert_eq!(core.generation(), 2);
    assert_eq!(core.config().hash, "new-hash");
    assert!(
        core.take_effects()
            .contains(&Effect::Record(Record::GenerationApplied {
                generation: 2,
                config_hash: "new-hash".into(),
                origin: "new.toml".into(),
                at_ms: 7,
            }))
    );
}

/// A change to the file that touches no builder or worker (a `[master]`
/// setting) is still a new generation; the same file again is not.
#[test]
fn a_master_setting_alone_is_a_new_generation() {
    let mut core = busy_core();
    let mut cfg = (**core.config()).clone();
    cfg.master.max_retries = 9;
    cfg.hash.push('+');
    let report = core.reload(Arc::new(cfg), 1, false);
    assert_eq!(report.generation_after, report.generation_before + 1);
    assert!(report.workers_changed.is_empty() && report.builders_changed.is_empty());
    assert!(
        report.needs_restart.is_empty(),
        "max_retries applies at once"
    );
    let effects = core.take_effects();
    assert_eq!(effects.len(), 1, "only the generation record: {effects:?}");
    let report = core.reload(Arc::clone(core.config()), 2, false);
    assert_eq!(report.generation_after, report.generation_before);
}

/// A start on a file other than the one last applied is a new generation
/// (recorded); a fresh state dir starts at generation 1.
#[test]
fn a_start_on_another_file_is_a_new_generation() {
    let cfg = config(&[("w", 1)], &[("b", &["w"], 1)]);
    let restored = Restored {
        generation: 3,
        config_hash: "older".into(),
        ..Restored::default()
    };
    let mut core = Core::new(Arc::clone(&cfg), restored, 5);
    assert_eq!(core.generation(), 4);
    assert!(core.take_effects().iter().any(|e| matches!(
        e,
        Effect::Record(Record::GenerationApplied { generation: 4, config_hash, .. })
            if *config_hash == cfg.hash
    )));
    let mut fresh = Core::new(cfg, Restored::default(), 5);
    assert_eq!(fresh.generation(), 1);
    assert!(fresh.take_effects().iter().any(|e| matches!(
        e,
        Effect::Record(Record::GenerationApplied { generation: 1, .. })
    )));
}

/// `builds_on_old_generations` lists builds started under a generation
/// older than the one in force, and only those.
#[test]
fn builds_on_old_generations_are_those_started_before() {
    let mut core = busy_core();
    let report = core.reload(with_steps(core.config(), "b", 1), 1, false);
    assert_eq!(report.generation_after, 2);
    assert_eq!(report.builds_on_old_generations, vec![1, 2]);
    core.step_ended(1, 1, 0, OK, 2).unwrap(); // request 3 starts under 2
    assert_eq!(core.running_build(3).unwrap().generation, 2);
    let report = core.reload(Arc::clone(core.config()), 3, false);
    assert_eq!(report.generation_after, 2, "nothing changed");
    assert_eq!(report.builds_on_old_generations, vec![2]);
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

/// Every `[master]` setting that needs a restart is reported under its own
/// name, and alone.
#[test]
fn each_restart_only_setting_is_reported_by_name() {
    type Edit = fn(&mut crate::config::MasterSettings);
    let edits: Vec<(&str, Edit)> = vec![
        ("master.state_dir", |m| m.state_dir = Some("/x".into())),
        ("master.control_socket", |m| {
            m.control_socket = Some("/x".into())
        }),
        ("master.worker_socket", |m| {
            m.worker_socket = Some("/x".into())
        }),
        ("master.keepalive", |m| {
            m.keepalive = std::time::Duration::from_secs(99)
        }),
        ("master.max_handshake_frame", |m| m.max_handshake_frame += 1),
        ("master.max_frame", |m| m.max_frame += 1),
        ("master.max_log_size", |m| m.max_log_size += 1),
        ("master.max_clients", |m| m.max_clients += 1),
        ("master.allowed_uids", |m| m.allowed_uids.push(4242)),
        ("master.allowed_gid", |m| m.allowed_gid = Some(4242)),
        ("master.transfer_dir", |m| {
            m.transfer_dir = Some("/x".into())
        }),
    ];
    for (key, edit) in edits {
        let mut core = busy_core();
        let mut cfg = (**core.config()).clone();
        edit(&mut cfg.master);
        cfg.hash.push('+');
        let report = core.reload(Arc::new(cfg), 1, true);
        assert_eq!(report.needs_restart, vec![key.to_string()], "{key}");
    }
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
