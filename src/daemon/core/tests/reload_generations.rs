//! The reload contract (`docs/reload.md`): dry runs, generations and their
//! hashes, and what a reload reports (old generations, restart-only settings).

use std::sync::Arc;

use super::*;

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
