//! Schedulers in the core with a simulated clock: the `branch` kind's
//! filter, importance and tree-stable timer, firings as requests with a
//! source stamp, durability (state in the same batch, restart), and the
//! reload rows of `docs/reload.md`.

use std::time::Duration;

use super::changes::change;
use super::*;
use crate::config::{BranchFilter, SchedulerDef, SchedulerKind};
use crate::protocol::{ChangeBatch, NewChange, SourceStamp};

fn branch_def(name: &str, builders: &[&str], f: BranchFilter) -> SchedulerDef {
    SchedulerDef {
        name: name.into(),
        previous_names: vec![],
        builders: builders.iter().map(|b| b.to_string()).collect(),
        kind: SchedulerKind::Branch(f),
    }
}

fn stable(secs: u64) -> BranchFilter {
    BranchFilter {
        tree_stable: Duration::from_secs(secs),
        ..BranchFilter::default()
    }
}

fn with_schedulers(schedulers: Vec<SchedulerDef>) -> Arc<Config> {
    let base = config(&[("w", 4)], &[("test", &["w"], 1), ("lint", &["w"], 1)]);
    Arc::new(Config {
        schedulers,
        hash: format!("{}-{}", base.hash, rand_hash()),
        ..(*base).clone()
    })
}

fn rand_hash() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn send(core: &mut Core, changes: Vec<NewChange>, now: u64) -> Vec<u64> {
    core.add_changes(
        ChangeBatch {
            changes,
            cursor: None,
        },
        now,
    )
    .unwrap()
}

/// The requests queued in `effects`: (builder, reason, source).
fn queued(effects: &[Effect]) -> Vec<(String, Option<String>, Option<SourceStamp>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(Record::RequestQueued {
                builder,
                reason,
                source,
                ..
            }) => Some((builder.clone(), reason.clone(), source.clone())),
            _ => None,
        })
        .collect()
}

/// The scheduler states saved in `effects`.
fn saved(effects: &[Effect]) -> BTreeMap<String, Option<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(Record::SchedulerState { name, state, .. }) => {
                Some((name.clone(), state.clone()))
            }
            _ => None,
        })
        .collect()
}

fn core_with(schedulers: Vec<SchedulerDef>) -> Core {
    let mut core = Core::new(with_schedulers(schedulers), Restored::default(), 0);
    core.take_effects();
    core
}

#[test]
fn a_branch_scheduler_fires_once_the_tree_is_stable_with_every_change() {
    let mut core = core_with(vec![branch_def("on-main", &["test", "lint"], stable(30))]);
    send(&mut core, vec![change("main", "a", &[])], 1_000);
    let effects = core.take_effects();
    assert!(queued(&effects).is_empty());
    assert!(
        saved(&effects)["on-main"].is_some(),
        "the pending change is durable at once"
    );
    assert_eq!(core.next_deadline(), Some(31_000));
    send(&mut core, vec![change("main", "b", &[])], 10_000);
    core.take_effects();
    assert_eq!(
        core.next_deadline(),
        Some(40_000),
        "a new change restarts the timer"
    );
    core.tick(39_999);
    assert!(queued(&core.take_effects()).is_empty());
    core.tick(40_000);
    let effects = core.take_effects();
    let q = queued(&effects);
    let stamp = SourceStamp {
        repository: "repo".into(),
        branch: "main".into(),
        revision: Some("b".into()),
        changes: vec![1, 2],
    };
    assert_eq!(
        q,
        vec![
            (
                "test".into(),
                Some("scheduler on-main: 2 changes on main".into()),
                Some(stamp.clone())
            ),
            (
                "lint".into(),
                Some("scheduler on-main: 2 changes on main".into()),
                Some(stamp)
            ),
        ]
    );
    assert!(
        saved(&effects).contains_key("on-main"),
        "the firing is saved in its batch"
    );
    assert_eq!(core.next_deadline(), None);
    core.tick(100_000);
    assert!(queued(&core.take_effects()).is_empty(), "never twice");
}

#[test]
fn filters_decide_what_is_taken_and_what_is_important() {
    let f = BranchFilter {
        repository: Some("repo".into()),
        branches: vec!["main".into(), "release/*".into()],
        files: vec!["src/**".into(), "Cargo.*".into()],
        tree_stable: Duration::ZERO,
    };
    let mut core = core_with(vec![branch_def("s", &["test"], f)]);
    // Another repository, another branch: not taken.
    let mut other = change("main", "x", &["src/a.rs"]);
    other.repository = "elsewhere".into();
    send(&mut core, vec![other, change("dev", "y", &["src/a.rs"])], 1);
    assert!(queued(&core.take_effects()).is_empty());
    assert!(core.scheduler_pending("s").is_empty());
    // Docs only: taken, not important, waits.
    send(&mut core, vec![change("main", "d", &["docs/x.md"])], 2);
    assert!(queued(&core.take_effects()).is_empty());
    assert_eq!(core.scheduler_pending("s"), vec![3]);
    // A source change: fires at once (tree_stable = 0) with both.
    send(&mut core, vec![change("main", "e", &["Cargo.toml"])], 3);
    let q = queued(&core.take_effects());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].2.as_ref().unwrap().changes, vec![3, 4]);
    // Branches are built apart.
    send(
        &mut core,
        vec![
            change("release/1", "r1", &["src/a.rs"]),
            change("main", "m1", &["src/a.rs"]),
        ],
        4,
    );
    let q = queued(&core.take_effects());
    let mut branches: Vec<&str> = q
        .iter()
        .map(|r| r.2.as_ref().unwrap().branch.as_str())
        .collect();
    branches.sort();
    assert_eq!(branches, vec!["main", "release/1"]);
}

#[test]
fn two_schedulers_that_take_a_change_each_build_it_once() {
    let mut core = core_with(vec![
        branch_def("a", &["test"], stable(0)),
        branch_def("b", &["lint"], stable(5)),
    ]);
    send(&mut core, vec![change("main", "x", &[])], 1);
    let q = queued(&core.take_effects());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "test");
    core.tick(5_001);
    let q = queued(&core.take_effects());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, "lint");
    assert_eq!(q[0].2.as_ref().unwrap().changes, vec![1]);
}

#[test]
fn a_pending_timer_survives_a_restart_and_fires_once() {
    let defs = vec![branch_def("s", &["test"], stable(30))];
    let cfg = with_schedulers(defs);
    let mut core = Core::new(Arc::clone(&cfg), Restored::default(), 0);
    core.take_effects();
    send(&mut core, vec![change("main", "a", &[])], 1_000);
    let state = saved(&core.take_effects())["s"].clone().unwrap();
    // The master dies; the store kept the state. It restarts before the
    // timer runs out: the timer goes on with the time it had left.
    let restored = Restored {
        next_change: 2,
        schedulers: BTreeMap::from([(
            "s".to_string(),
            SavedScheduler {
                kind: "branch".into(),
                state: state.clone(),
            },
        )]),
        ..Restored::default()
    };
    let mut core = Core::new(Arc::clone(&cfg), restored.clone(), 5_000);
    assert!(queued(&core.take_effects()).is_empty());
    assert_eq!(core.next_deadline(), Some(31_000));
    core.tick(31_000);
    assert_eq!(queued(&core.take_effects()).len(), 1);
    // Restarted after the due time: it fires at the start, once.
    let mut core = Core::new(Arc::clone(&cfg), restored, 60_000);
    let effects = core.take_effects();
    assert_eq!(queued(&effects).len(), 1);
    assert!(
        saved(&effects).contains_key("s"),
        "and says so in the same batch"
    );
    core.tick(120_000);
    assert!(queued(&core.take_effects()).is_empty());
}

#[test]
fn reload_keeps_a_changed_schedulers_timer_moves_a_renamed_one_and_lists_what_a_removal_drops() {
    let mut core = core_with(vec![
        branch_def("keep", &["test"], stable(30)),
        branch_def("old-name", &["test"], stable(30)),
        branch_def("gone", &["lint"], stable(30)),
    ]);
    send(&mut core, vec![change("main", "a", &[])], 1_000);
    core.take_effects();
    let mut renamed = branch_def("new-name", &["lint"], stable(30));
    renamed.previous_names = vec!["old-name".into()];
    let report = core.reload(
        with_schedulers(vec![
            branch_def("keep", &["test", "lint"], stable(60)),
            renamed,
        ]),
        2_000,
        false,
    );
    assert_eq!(report.schedulers_changed, vec!["keep".to_string()]);
    assert_eq!(
        report.schedulers_renamed,
        vec![("old-name".to_string(), "new-name".to_string())]
    );
    assert_eq!(report.schedulers_removed, vec!["gone".to_string()]);
    assert_eq!(report.changes_dropped.len(), 1);
    assert_eq!(report.changes_dropped[0].scheduler, "gone");
    assert_eq!(report.changes_dropped[0].changes, vec![1]);
    let effects = core.take_effects();
    let states = saved(&effects);
    assert_eq!(
        states["gone"], None,
        "a removed scheduler's state is forgotten"
    );
    assert_eq!(states["old-name"], None);
    assert!(states["new-name"].is_some());
    // The timers keep the time they had left (due at 31 s, not 62 s).
    assert_eq!(core.next_deadline(), Some(31_000));
    core.tick(31_000);
    let q = queued(&core.take_effects());
    let builders: Vec<&str> = q.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(builders, vec!["test", "lint", "lint"]);
    assert!(
        q.iter()
            .any(|r| r.1.as_deref() == Some("scheduler new-name: 1 change on main"))
    );
}

#[test]
fn a_filter_narrowed_by_reload_drops_the_branches_it_no_longer_takes() {
    let mut core = core_with(vec![branch_def("s", &["test"], stable(30))]);
    send(
        &mut core,
        vec![change("main", "a", &[]), change("dev", "b", &[])],
        1_000,
    );
    core.take_effects();
    let narrowed = BranchFilter {
        branches: vec!["main".into()],
        ..stable(30)
    };
    let report = core.reload(
        with_schedulers(vec![branch_def("s", &["test"], narrowed)]),
        2_000,
        false,
    );
    assert_eq!(report.changes_dropped[0].changes, vec![2]);
    assert_eq!(core.scheduler_pending("s"), vec![1]);
    // A dry run changes nothing.
    let report = core.reload(with_schedulers(vec![]), 3_000, true);
    assert_eq!(report.changes_dropped[0].changes, vec![1]);
    assert_eq!(core.scheduler_pending("s"), vec![1]);
}

#[test]
fn a_start_on_a_config_changed_while_down_says_which_pending_changes_it_drops() {
    let cfg = with_schedulers(vec![
        branch_def("gone", &["test"], stable(30)),
        branch_def("narrowed", &["test"], stable(30)),
    ]);
    let mut core = Core::new(Arc::clone(&cfg), Restored::default(), 0);
    core.take_effects();
    send(
        &mut core,
        vec![change("main", "a", &[]), change("dev", "b", &[])],
        1_000,
    );
    let states = saved(&core.take_effects());
    let restored = Restored {
        next_change: 3,
        schedulers: states
            .into_iter()
            .map(|(name, state)| {
                (
                    name,
                    SavedScheduler {
                        kind: "branch".into(),
                        state: state.unwrap(),
                    },
                )
            })
            .collect(),
        ..Restored::default()
    };
    let narrowed = BranchFilter {
        branches: vec!["main".into()],
        ..stable(30)
    };
    let core = Core::new(
        with_schedulers(vec![branch_def("narrowed", &["test"], narrowed)]),
        restored,
        2_000,
    );
    let dropped: Vec<(String, Vec<u64>)> = core
        .dropped_at_start()
        .iter()
        .map(|d| (d.scheduler.clone(), d.changes.clone()))
        .collect();
    assert_eq!(
        dropped,
        vec![("narrowed".into(), vec![2]), ("gone".into(), vec![1, 2])]
    );
    assert_eq!(core.scheduler_pending("narrowed"), vec![1]);
}
