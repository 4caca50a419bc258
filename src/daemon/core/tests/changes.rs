//! Changes from their sources: ids, records, refusals, and the source
//! stamp a request carries to its steps.

use super::*;
use crate::protocol::{ChangeBatch, NewChange, PollerCursor, SourceStamp};

pub(super) fn change(branch: &str, rev: &str, files: &[&str]) -> NewChange {
    NewChange {
        repository: "repo".into(),
        branch: branch.into(),
        revision: rev.into(),
        files: files.iter().map(|f| f.to_string()).collect(),
        ..NewChange::default()
    }
}

fn records(effects: &[Effect]) -> Vec<&Record> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Record(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn changes_get_ids_in_order_and_are_recorded_with_the_cursor() {
    let mut core = Core::new(config(&[], &[]), Restored::default(), 0);
    core.take_effects();
    let ids = core
        .add_changes(
            ChangeBatch {
                changes: vec![change("main", "a", &[]), change("main", "b", &[])],
                cursor: Some(PollerCursor {
                    poller: "p".into(),
                    branch: "main".into(),
                    revision: Some("b".into()),
                }),
            },
            7,
        )
        .unwrap();
    assert_eq!(ids, vec![1, 2]);
    let effects = core.take_effects();
    let recs = records(&effects);
    assert!(
        matches!(recs[0], Record::ChangeAdded(c) if c.id == 1 && c.at_ms == 7 && c.new.revision == "a")
    );
    assert!(matches!(recs[1], Record::ChangeAdded(c) if c.id == 2));
    assert!(matches!(recs[2], Record::PollerCursor(c) if c.revision.as_deref() == Some("b")));
    // A cursor alone (a baseline) is fine; ids go on after a restart.
    assert_eq!(
        core.add_changes(
            ChangeBatch {
                changes: vec![],
                cursor: Some(PollerCursor {
                    poller: "p".into(),
                    branch: "gone".into(),
                    revision: None,
                }),
            },
            8,
        )
        .unwrap(),
        Vec::<u64>::new()
    );
    let restored = Restored {
        next_change: 3,
        ..Restored::default()
    };
    let mut core = Core::new(config(&[], &[]), restored, 0);
    let ids = core
        .add_changes(
            ChangeBatch {
                changes: vec![change("main", "c", &[])],
                cursor: None,
            },
            9,
        )
        .unwrap();
    assert_eq!(ids, vec![3]);
}

#[test]
fn a_bad_change_refuses_the_whole_batch_and_changes_nothing() {
    let mut core = Core::new(config(&[], &[]), Restored::default(), 0);
    core.take_effects();
    let e = core
        .add_changes(
            ChangeBatch {
                changes: vec![change("main", "a", &[]), change("", "b", &[])],
                cursor: None,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "change 2 of the batch: the branch is empty");
    assert!(core.take_effects().is_empty());
    let mut nul = change("main", "a", &[]);
    nul.comments = Some("a\0b".into());
    let e = core
        .add_changes(
            ChangeBatch {
                changes: vec![nul],
                cursor: None,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "change 1 of the batch: the comments contains a NUL byte"
    );
    let ids = core
        .add_changes(
            ChangeBatch {
                changes: vec![change("main", "a", &[])],
                cursor: None,
            },
            1,
        )
        .unwrap();
    assert_eq!(ids, vec![1], "refused batches used no id");
}

#[test]
fn a_request_with_a_source_gives_its_steps_the_bb_source_variables() {
    let mut core = Core::new(
        config(&[("w", 1)], &[("b", &["w"], 1)]),
        Restored::default(),
        0,
    );
    core.add_changes(
        ChangeBatch {
            changes: vec![change("main", "a", &[]), change("main", "b", &[])],
            cursor: None,
        },
        1,
    )
    .unwrap();
    let stamp = SourceStamp {
        repository: "repo".into(),
        branch: "main".into(),
        revision: Some("b".into()),
        changes: vec![1, 2],
    };
    let bad = SourceStamp {
        changes: vec![1, 9],
        ..stamp.clone()
    };
    let e = core
        .force_build_with_source("b", None, BTreeMap::new(), 0, Some(bad), 2)
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid source stamp: there is no change 9");
    core.force_build_with_source("b", None, BTreeMap::new(), 0, Some(stamp.clone()), 2)
        .unwrap();
    core.take_effects();
    core.worker_connected("w", 1, &[], 3).unwrap();
    let effects = core.take_effects();
    let env = effects
        .iter()
        .find_map(|e| match e {
            Effect::ToWorker {
                cmd: WorkerCmd::Start(s),
                ..
            } => Some(s.env.clone()),
            _ => None,
        })
        .unwrap();
    for (k, v) in [
        ("BB_REPOSITORY", "repo"),
        ("BB_BRANCH", "main"),
        ("BB_REVISION", "b"),
        ("BB_CHANGES", "1,2"),
    ] {
        assert!(
            env.contains(&(k.to_string(), v.to_string())),
            "{k} in {env:?}"
        );
    }
    assert_eq!(core.live_request(1).unwrap().source, Some(stamp));
}
