//! Scenarios every backend passes: each takes a [`Backend`] and is run
//! on SQLite and on PostgreSQL by `on_both_backends!` (mod.rs).

use std::collections::BTreeMap;

use super::*;
use crate::protocol::{
    ArtifactInfo, BuildResult, Change, NewChange, PollerCursor, SourceStamp, StepResult,
};

pub(super) fn queued_requests_survive_reopen_in_order(b: &dyn Backend) {
    {
        let mut store = b.open();
        store
            .apply(&[&queued(1, "a"), &queued(2, "b"), &queued(3, "a")])
            .unwrap();
        store
            .apply(&[&Record::RequestCancelled {
                request: 2,
                reason: "r".into(),
                at_ms: 2,
            }])
            .unwrap();
    }
    let mut store = b.open();
    let restored = store.restore(5).unwrap();
    let ids: Vec<u64> = restored.queued.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(restored.queued[0].properties["K"], "v");
    assert_eq!(restored.next_request, 4);
    assert_eq!(restored.next_build, 1);
    assert_eq!(b.reader().request(2).unwrap().unwrap().state, "cancelled");
}

pub(super) fn a_build_running_at_a_crash_comes_back_with_its_definition(b: &dyn Backend) {
    start_build_1(&mut *b.open());
    let mut store = b.open();
    let restored = store.restore(9).unwrap();
    assert!(restored.queued.is_empty());
    assert_eq!(restored.running.len(), 1);
    let r = &restored.running[0];
    assert_eq!((r.id, r.request.id, r.step), (1, 1, 0));
    assert_eq!(r.request.build, Some(1));
    assert_eq!(r.worker, "w");
    assert_eq!(*r.def, *test_def());
    assert_eq!(b.reader().build(1).unwrap().unwrap().summary.result, None);
}

pub(super) fn a_build_whose_definition_cannot_be_read_is_retried(b: &dyn Backend) {
    start_build_1(&mut *b.open());
    b.sql("UPDATE builds SET definition = 'not json' WHERE id = 1");
    let mut store = b.open();
    let restored = store.restore(9).unwrap();
    assert!(restored.running.is_empty());
    let ids: Vec<u64> = restored.queued.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1], "its request is queued again");
    assert_eq!(restored.queued[0].retries, 1);
    let build = b.reader().build(1).unwrap().unwrap();
    assert_eq!(build.summary.result, Some(BuildResult::Retry));
    assert_eq!(build.steps[0].result, Some(BuildResult::Retry));
    assert!(
        build
            .summary
            .reason
            .unwrap()
            .contains("could not be read back"),
        "says why"
    );
}

pub(super) fn a_retried_build_requeues_its_request(b: &dyn Backend) {
    let mut store = b.open();
    start_build_1(&mut *store);
    store
        .apply(&[&Record::BuildRetried {
            build: 1,
            request: 1,
            reason: "gone".into(),
            at_ms: 3,
        }])
        .unwrap();
    let restored = store.restore(9).unwrap();
    assert_eq!(restored.queued.len(), 1);
    assert_eq!(restored.queued[0].retries, 1);
    assert!(restored.running.is_empty());
    let build = b.reader().build(1).unwrap().unwrap();
    assert_eq!(build.summary.result, Some(BuildResult::Retry));
}

pub(super) fn artifacts_in_a_batch_are_kept_or_refused_alone(b: &dyn Backend) {
    let mut store = b.open();
    start_build_1(&mut *store);
    let a = ArtifactInfo {
        name: "out/b.tar.gz".into(),
        size: 1 << 33,
        sha256: "ab".repeat(32),
        created_at_ms: 7,
    };
    let first = ArtifactInfo {
        name: "a.bin".into(),
        ..a.clone()
    };
    // In one batch with a record: each artifact kept or refused alone.
    let outcomes = store
        .apply_batch(
            &[&queued(5, "x")],
            &[(1, &a), (1, &first), (1, &a), (9, &a)],
        )
        .unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    assert!(outcomes[2].is_err(), "a name is stored once");
    assert!(outcomes[3].is_err(), "only for known builds");
    let reader = b.reader();
    assert!(
        reader.request(5).unwrap().is_some(),
        "the batch's record is written beside them"
    );
    drop(store);
    let _store = b.open();
    assert_eq!(reader.artifacts(1).unwrap(), vec![first, a]);
    assert!(reader.artifacts(2).unwrap().is_empty());
}

pub(super) fn changes_cursors_and_scheduler_state_round_trip(b: &dyn Backend) {
    let mut store = b.open();
    let change = Change {
        id: 1,
        new: NewChange {
            repository: "https://example.org/app.git".into(),
            branch: "main".into(),
            revision: "abc123".into(),
            files: vec!["src/a.rs".into(), "README".into()],
            author: Some("ann".into()),
            comments: Some("fix".into()),
            when_ms: Some(3),
            properties: BTreeMap::from([("k".to_string(), "v".to_string())]),
            category: Some("cat".into()),
        },
        at_ms: 4,
    };
    let source = SourceStamp {
        repository: change.new.repository.clone(),
        branch: "main".into(),
        revision: Some("abc123".into()),
        changes: vec![1],
    };
    let mut with_source = queued(2, "a");
    if let Record::RequestQueued { source: s, .. } = &mut with_source {
        *s = Some(source.clone());
    }
    let cursor = |branch: &str, revision: Option<&str>| {
        Record::PollerCursor(PollerCursor {
            poller: "p".into(),
            branch: branch.into(),
            revision: revision.map(str::to_string),
        })
    };
    store
        .apply(&[
            &Record::ChangeAdded(Box::new(change.clone())),
            &cursor("main", Some("abc")),
            &cursor("main", Some("abc123")),
            &cursor("old", Some("def")),
            &Record::SchedulerState {
                name: "s".into(),
                kind: "branch".into(),
                state: Some("{\"old\":1}".into()),
            },
            &Record::SchedulerState {
                name: "s".into(),
                kind: "branch".into(),
                state: Some("{}".into()),
            },
            &with_source,
        ])
        .unwrap();
    store
        .apply(&[
            &cursor("old", None),
            &Record::SchedulerState {
                name: "gone".into(),
                kind: "branch".into(),
                state: None,
            },
        ])
        .unwrap();
    let r = b.reader();
    assert_eq!(
        r.poller_cursors("p").unwrap(),
        BTreeMap::from([("main".to_string(), "abc123".to_string())])
    );
    assert!(r.poller_cursors("q").unwrap().is_empty());
    let listed = r.changes(10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].change, change);
    assert_eq!(listed[0].requests.len(), 1);
    assert_eq!(listed[0].requests[0].request_id, 2);
    assert!(listed[0].requests[0].builds.is_empty());
    drop(store);
    let mut store = b.open();
    let restored = store.restore(6).unwrap();
    assert_eq!(restored.next_change, 2);
    assert_eq!(restored.queued[0].source, Some(source));
    assert_eq!(
        restored.schedulers["s"],
        crate::daemon::core::SavedScheduler {
            kind: "branch".into(),
            state: "{}".into()
        }
    );
    assert_eq!(restored.schedulers.len(), 1);
}

pub(super) fn rename_moves_history(b: &dyn Backend) {
    let mut store = b.open();
    store
        .apply(&[
            &queued(1, "old"),
            &build_started(1, 1, "old"),
            &Record::BuilderRenamed {
                from: "old".into(),
                to: "new".into(),
            },
        ])
        .unwrap();
    let reader = b.reader();
    assert_eq!(reader.builds(Some("new"), 10).unwrap().len(), 1);
    assert!(reader.builds(Some("old"), 10).unwrap().is_empty());
    assert_eq!(store.request(1).unwrap().unwrap().builder, "new");
}

pub(super) fn the_loop_and_the_readers_answer_the_same(b: &dyn Backend) {
    let mut store = b.open();
    start_build_1(&mut *store);
    store
        .apply(&[
            &Record::StepFinished {
                build: 1,
                step: 0,
                result: StepResult::Success,
                reason: None,
                at_ms: 5,
            },
            &Record::BuildFinished {
                build: 1,
                request: 1,
                result: BuildResult::Success,
                reason: Some("done".into()),
                at_ms: 6,
            },
            &queued(2, "a"),
            &Record::RequestCollapsed {
                request: 2,
                into: 1,
                build: 1,
                at_ms: 6,
            },
            &Record::GenerationApplied {
                generation: 3,
                config_hash: "h3".into(),
                origin: "test".into(),
                at_ms: 6,
            },
        ])
        .unwrap();
    let reader = b.reader();
    let summary = store.build_summary(1).unwrap().unwrap();
    assert_eq!(summary.result, Some(BuildResult::Success));
    assert_eq!(summary.finished_at_ms, Some(6));
    assert_eq!(reader.builds(None, 10).unwrap(), vec![summary.clone()]);
    assert_eq!(store.build_summary(9).unwrap(), None);
    let request = store.request(1).unwrap().unwrap();
    assert_eq!(
        (request.state.as_str(), request.build),
        ("finished", Some(1))
    );
    let collapsed = store.request(2).unwrap().unwrap();
    assert_eq!(collapsed.state, "skipped");
    assert_eq!(collapsed.build, Some(1), "the build it was merged into");
    assert_eq!(reader.request(2).unwrap(), Some(collapsed));
    let (info, build) = reader.request_and_build(1).unwrap().unwrap();
    assert_eq!(info, request);
    let build = build.unwrap();
    assert_eq!(build.summary, summary);
    assert_eq!(build.properties["K"], "v");
    assert_eq!(build.steps.len(), 1);
    assert_eq!(build.steps[0].result, Some(BuildResult::Success));
    assert_eq!(reader.latest_build().unwrap(), Some(1));
    assert!(reader.request_and_build(7).unwrap().is_none());
    let restored = store.restore(7).unwrap();
    assert_eq!(
        (restored.generation, restored.config_hash.as_str()),
        (3, "h3")
    );
}

pub(super) fn an_empty_batch_writes_nothing(b: &dyn Backend) {
    let mut store = b.open();
    assert!(store.apply_batch(&[], &[]).unwrap().is_empty());
    assert_eq!(b.reader().latest_build().unwrap(), None);
    store.checkpoint().unwrap();
}
