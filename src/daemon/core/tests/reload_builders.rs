//! The reload contract (`docs/reload.md`) for builders, row by row:
//! unchanged, changed, added, removed, renamed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::protocol::BuildResult;

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
