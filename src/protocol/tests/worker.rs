//! Protocol tests: the worker conversation (steps, output, file transfers,
//! step ends) round trips.

use super::*;

#[test]
fn worker_messages_round_trip() {
    round_trip(MasterToWorker::StartStep(StepAssignment {
        build: 1,
        step: 2,
        builder: "b".into(),
        name: "s".into(),
        action: WireAction::Shell("echo hi".into()),
        env: vec![("A".into(), "1".into())],
        pass_env: Vec::new(),
        timeout_ms: Some(5),
        max_output: None,
    }));
    round_trip(MasterToWorker::StartStep(StepAssignment {
        build: 1,
        step: 2,
        builder: "b".into(),
        name: "s".into(),
        action: WireAction::Command(vec!["true".into()]),
        env: vec![],
        pass_env: Vec::new(),
        timeout_ms: None,
        max_output: None,
    }));
    round_trip(MasterToWorker::StopStep { build: 1, step: 0 });
    round_trip(MasterToWorker::Goodbye { reason: "r".into() });
    round_trip(MasterToWorker::Resume {
        build: 1,
        step: 0,
        offset: 77,
    });
    round_trip(MasterToWorker::Abandon { build: 1, step: 0 });
    round_trip(MasterToWorker::Ping { seq: 3 });
    round_trip(MasterToWorker::Pong { seq: 4 });
    round_trip(WorkerToMaster::Ping { seq: 5 });
    let begin = FileBegin {
        build: 1,
        step: 2,
        name: "sub/a.bin".into(),
        size: 1 << 33,
        mode: 0o644,
    };
    let chunk = FileChunk {
        build: 1,
        step: 2,
        offset: 7,
        data: vec![0, 1, 255],
    };
    let end = FileEnd {
        build: 1,
        step: 2,
        sha256: "ab".repeat(32),
    };
    round_trip(WorkerToMaster::FileBegin(begin.clone()));
    round_trip(WorkerToMaster::FileChunk(chunk.clone()));
    round_trip(WorkerToMaster::FileEnd(end.clone()));
    round_trip(WorkerToMaster::FileAck {
        build: 1,
        step: 2,
        received: 9,
    });
    round_trip(MasterToWorker::FileBegin(begin));
    round_trip(MasterToWorker::FileChunk(chunk));
    round_trip(MasterToWorker::FileEnd(end));
    round_trip(MasterToWorker::FileAck {
        build: 1,
        step: 2,
        received: 9,
    });
    round_trip(MasterToWorker::FileRefused {
        build: 1,
        step: 2,
        reason: "too big".into(),
    });
    round_trip(WorkerToMaster::Pong { seq: 6 });
    round_trip(WorkerToMaster::Output {
        build: 1,
        step: 0,
        offset: 1 << 40,
        data: vec![0, 255, 10],
    });
    for end in [
        StepEnd::Exited { code: 3 },
        StepEnd::Signalled { signal: 9 },
        StepEnd::TimedOut { after_ms: 10 },
        StepEnd::Stopped,
        StepEnd::SpawnFailed { error: "e".into() },
        StepEnd::TransferFailed { error: "t".into() },
    ] {
        round_trip(WorkerToMaster::StepEnded {
            build: 1,
            step: 0,
            end,
        });
    }
}
