//! Round trips of every message and the ways a peer can break the rules.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::frame::{decode, encode, read_frame};
use super::*;

fn round_trip<T>(msg: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode(&msg).expect("encode");
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4, "length prefix");
    let back: T = decode(&frame[4..]).expect("decode");
    assert_eq!(back, msg);
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn summary() -> BuildSummary {
    BuildSummary {
        id: 7,
        request_id: 3,
        builder: "hello".into(),
        worker: "local-1".into(),
        generation: 2,
        config_hash: "00ff".into(),
        result: Some(BuildResult::Failure),
        reason: Some("step `say` exited with code 1".into()),
        started_at_ms: 1,
        finished_at_ms: Some(2),
    }
}

#[test]
fn handshake_messages_round_trip() {
    round_trip(Hello::new(Role::Client));
    round_trip(Hello::new(Role::Worker {
        name: "w".into(),
        running: vec![RunningStep { build: 1, step: 0 }],
        host: Some("box".into()),
    }));
    round_trip(HelloReply::Challenge {
        nonce: vec![7; crate::protocol::proof::NONCE_LEN],
    });
    round_trip(WorkerProof { mac: vec![1, 2, 3] });
    round_trip(HelloReply::Welcome {
        version: PROTOCOL_VERSION,
        software: "x".into(),
        master_pid: 9,
        keepalive_ms: Some(10_000),
    });
    round_trip(HelloReply::Refused {
        kind: crate::protocol::RefusalKind::AlreadyConnected,
        reason: "no".into(),
    });
}

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

#[test]
fn client_messages_round_trip() {
    let mut props = BTreeMap::new();
    props.insert("K".to_string(), "v w".to_string());
    let requests = vec![
        Request::Status(StatusFilter::default()),
        Request::Status(StatusFilter {
            builder: Some("b*".into()),
            state: Some("idle".into()),
            limit: Some(3),
        }),
        Request::ForceBuild {
            builder: "hello".into(),
            reason: Some("r".into()),
            properties: props.clone(),
            priority: -3,
        },
        Request::Builds {
            builder: None,
            limit: 5,
        },
        Request::Build { build: 4 },
        Request::RequestInfo { request: 4 },
        Request::Stream(StreamRequest {
            target: StreamTarget::Request(3),
            step: Some("say".into()),
            output: true,
            follow: true,
        }),
        Request::Stream(StreamRequest {
            target: StreamTarget::Latest,
            step: None,
            output: false,
            follow: false,
        }),
        Request::Cancel { request: 1 },
        Request::Stop { build: 1 },
        Request::Events,
        Request::Queue {
            builder: Some("b".into()),
        },
        Request::Workers,
        Request::Ping { worker: "w".into() },
        Request::Drain {
            worker: None,
            drain: true,
        },
        Request::Prune { dry_run: true },
        Request::Reload {
            dry_run: true,
            config: Some("/etc/bb/master.toml".into()),
        },
        Request::Shutdown {
            mode: ShutdownMode::Drain,
        },
    ];
    for (id, body) in requests.into_iter().enumerate() {
        round_trip(ClientRequest {
            id: id as u64,
            body,
        });
    }
    let replies = vec![
        Reply::Status(StatusReply {
            master_pid: 1,
            started_at_ms: 2,
            now_ms: 3,
            generation: 4,
            config_hash: "h".into(),
            config_origin: "o".into(),
            builders: vec![BuilderStatus {
                name: "b".into(),
                state: "idle".into(),
                queued: 1,
                running: 0,
                running_builds: vec![],
                workers: vec!["w".into()],
            }],
            workers: vec![WorkerStatus {
                name: "w".into(),
                connected: true,
                local: false,
                draining: false,
                max_builds: 2,
                builders: vec!["b".into()],
                running_builds: vec![1],
                last_error: None,
            }],
            running: vec![RunningStatus {
                build: 1,
                request: 2,
                builder: "b".into(),
                worker: "w".into(),
                step: 0,
                step_name: "s".into(),
                steps: 2,
                started_at_ms: 5,
                step_started_at_ms: 6,
                generation: 4,
                waiting_for_worker: false,
            }],
            draining: true,
            drain_mode: Some(crate::protocol::DrainMode::Maintenance),
            builders_total: 1,
            queued_total: 1,
            disk: Some(DiskUsage {
                logs_bytes: 1,
                artifacts_bytes: 2,
                db_bytes: 3,
                measured_at_ms: 4,
            }),
            tls: Some(crate::protocol::TlsStatus {
                fingerprint: Some("sha256:00".into()),
                listen: vec!["127.0.0.1:9989".into()],
                plaintext: false,
            }),
        }),
        Reply::Pruned(PruneReport {
            dry_run: true,
            builds_deleted: vec![1],
            logs_deleted: vec![2],
            bytes_freed: 3,
        }),
        Reply::Queued { request_id: 1 },
        Reply::Builds(vec![summary()]),
        Reply::Build(BuildDetail {
            summary: summary(),
            request_reason: None,
            properties: props,
            steps: vec![StepDetail {
                index: 0,
                name: "s".into(),
                started_at_ms: 1,
                finished_at_ms: None,
                result: None,
                reason: None,
                log_bytes: 0,
            }],
        }),
        Reply::Request(RequestInfo {
            id: 1,
            builder: "b".into(),
            state: "queued".into(),
            build: None,
            result: None,
            reason: None,
        }),
        Reply::StreamEnd,
        Reply::Done {
            message: "m".into(),
        },
        Reply::Reloaded(ReloadReport {
            builders_renamed: vec![("a".into(), "b".into())],
            ..ReloadReport::default()
        }),
    ];
    for reply in replies {
        round_trip(ServerMsg::Response {
            id: 1,
            result: Ok(reply),
        });
    }
    round_trip(ServerMsg::Response {
        id: 1,
        result: Err(ErrorReply::not_found("no build 9")),
    });
    for item in [
        StreamItem::BuildStarted {
            build: 1,
            builder: "b".into(),
            worker: "w".into(),
        },
        StreamItem::StepStarted {
            step: 0,
            name: "s".into(),
        },
        StreamItem::Output {
            step: 0,
            data: b"hi\n".to_vec(),
        },
        StreamItem::StepFinished {
            step: 0,
            result: BuildResult::Success,
            reason: None,
        },
        StreamItem::BuildFinished {
            build: 1,
            result: BuildResult::Cancelled,
            reason: Some("stopped".into()),
        },
        StreamItem::RequestCancelled {
            request: 1,
            reason: "r".into(),
        },
    ] {
        round_trip(ServerMsg::Item { id: 2, item });
    }
    for kind in [
        EventKind::BuildQueued {
            request: 1,
            builder: "b".into(),
        },
        EventKind::BuildStarted {
            build: 1,
            request: 1,
            builder: "b".into(),
            worker: "w".into(),
        },
        EventKind::StepStarted {
            build: 1,
            step: 0,
            name: "s".into(),
        },
        EventKind::StepFinished {
            build: 1,
            step: 0,
            result: BuildResult::Success,
            reason: None,
        },
        EventKind::BuildFinished {
            build: 1,
            request: 1,
            result: BuildResult::Retry,
            reason: Some("r".into()),
        },
        EventKind::BuildRetried {
            build: 1,
            request: 1,
            reason: "r".into(),
        },
        EventKind::RequestCancelled {
            request: 1,
            reason: "r".into(),
        },
        EventKind::RequestSkipped {
            request: 2,
            into: 1,
            build: 1,
        },
        EventKind::WorkerConnected { worker: "w".into() },
        EventKind::WorkerLost {
            worker: "w".into(),
            reason: "removed by reload".into(),
        },
        EventKind::WorkerDraining { worker: "w".into() },
        EventKind::ReloadApplied {
            generation_before: 1,
            generation_after: 2,
            config_hash: "h".into(),
        },
        EventKind::ReloadRejected { error: "e".into() },
        EventKind::MasterDraining {
            draining: true,
            mode: crate::protocol::DrainMode::Shutdown,
        },
        EventKind::WorkerUndrained { worker: "w".into() },
        EventKind::Subscribed,
        EventKind::Lagged { missed: 3 },
    ] {
        round_trip(ServerMsg::Event {
            id: 3,
            event: Event {
                at_ms: 1,
                generation: 2,
                kind,
            },
        });
    }
}

#[test]
fn garbage_is_a_decode_error() {
    let err = decode::<ClientRequest>(b"\xc1\xc1\xc1 not msgpack").unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    let err = decode::<ClientRequest>(&[]).unwrap_err();
    assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
}

#[test]
fn trailing_bytes_are_refused() {
    let frame = encode(&Hello::new(Role::Client)).unwrap();
    let mut body = frame[4..].to_vec();
    body.push(0);
    let err = decode::<Hello>(&body).unwrap_err();
    assert!(err.to_string().contains("unexpected bytes"), "{err}");
}

#[test]
fn unknown_message_kind_is_a_decode_error() {
    // A well-formed map naming a request kind this version does not know.
    let mut body = Vec::new();
    rmp_serde::encode::write_named(&mut body, &serde_json::json!({"id": 1, "body": "explode"}))
        .unwrap();
    let err = decode::<ClientRequest>(&body).unwrap_err();
    assert!(err.to_string().contains("explode"), "{err}");
}

#[test]
fn truncated_frames_are_reported() {
    let frame = encode(&Hello::new(Role::Client)).unwrap();
    let cut = &frame[..frame.len() - 3];
    let err = block_on(read_frame(&mut &cut[..], MAX_FRAME)).unwrap_err();
    assert!(
        matches!(err, FrameError::Truncated { want, .. } if want == frame.len()),
        "{err:?}"
    );
    let err = block_on(read_frame(&mut &frame[..2], MAX_FRAME)).unwrap_err();
    assert!(matches!(err, FrameError::Truncated { got: 2, want: 4 }));
    let err = block_on(read_frame(&mut &[][..], MAX_FRAME)).unwrap_err();
    assert!(matches!(err, FrameError::Closed));
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    // Announces 4 GiB - 1 and sends nothing else: must not try to allocate it.
    let bytes = [0xff, 0xff, 0xff, 0xff];
    let err = block_on(read_frame(&mut &bytes[..], MAX_HANDSHAKE_FRAME)).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: MAX_HANDSHAKE_FRAME
            }
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_version_and_magic_are_named() {
    let mut hello = Hello::new(Role::Client);
    hello.version = 99;
    let msg = hello.check().unwrap_err();
    assert!(msg.contains("version 99"), "{msg}");
    assert!(
        msg.contains(&format!("version {PROTOCOL_VERSION}")),
        "{msg}"
    );
    let mut hello = Hello::new(Role::Client);
    hello.magic = "http".into();
    assert!(
        hello
            .check()
            .unwrap_err()
            .contains("not a bbctl protocol peer")
    );
    assert!(Hello::new(Role::Client).check().is_ok());
}

#[test]
fn a_workers_proof_is_hidden_from_debug() {
    let answer = WorkerProof {
        mac: b"hunter2".to_vec(),
    };
    assert!(!format!("{answer:?}").contains("104"));
    let checked = crate::protocol::proof::Proof {
        nonce: vec![1],
        binding: vec![],
        mac: b"hunter2".to_vec(),
    };
    assert!(!format!("{checked:?}").contains("104"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientRequest>(&bytes);
        let _ = decode::<Hello>(&bytes);
        let _ = decode::<WorkerToMaster>(&bytes);
        let _ = block_on(read_frame(&mut &bytes[..], 1024));
    }
}

proptest! {
    /// `read_frame` under any limit: it returns a body within the limit and
    /// consumes exactly its frame, or fails with the error that fits the
    /// bytes; every decoder copes with whatever body it returns.
    #[test]
    fn read_frame_keeps_any_limit(
        max in prop_oneof![0usize..64, Just(MAX_HANDSHAKE_FRAME), Just(MAX_FRAME)],
        len in prop_oneof![0u32..80, any::<u32>()],
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let mut rest = &stream[..];
        match block_on(read_frame(&mut rest, max)) {
            Ok(frame) => {
                prop_assert!(frame.len() <= max);
                prop_assert_eq!(frame.len(), len as usize);
                prop_assert_eq!(&frame[..], &body[..len as usize]);
                prop_assert_eq!(rest.len(), body.len() - len as usize);
                let _ = decode::<ClientRequest>(&frame);
                let _ = decode::<Hello>(&frame);
                let _ = decode::<HelloReply>(&frame);
                let _ = decode::<ServerMsg>(&frame);
                let _ = decode::<WorkerToMaster>(&frame);
                let _ = decode::<MasterToWorker>(&frame);
            }
            Err(FrameError::TooLarge { len: l, max: m }) => {
                prop_assert!(l > m && m == max && l == len as usize);
            }
            Err(FrameError::Truncated { got, want }) => {
                prop_assert!(len as usize <= max && body.len() < len as usize);
                prop_assert_eq!((got, want), (4 + body.len(), 4 + len as usize));
            }
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }
}

/// `docs/protocol.md` spells a response's `result` the way the wire does:
/// serde's `Result`, tagged `Ok` and `Err` (capitalised). A client written
/// from the doc must match these keys exactly.
#[test]
fn a_response_result_is_tagged_ok_and_err_as_documented() {
    let ok = ServerMsg::Response {
        id: 1,
        result: Ok(Reply::Done {
            message: "m".into(),
        }),
    };
    let err = ServerMsg::Response {
        id: 2,
        result: Err(ErrorReply::rejected("no")),
    };
    let as_value = |msg: &ServerMsg| -> serde_json::Value {
        let frame = encode(msg).expect("encode");
        decode(&frame[4..]).expect("decode as a generic value")
    };
    let ok = as_value(&ok);
    assert_eq!(
        ok["response"]["result"]["Ok"]["done"]["message"], "m",
        "{ok}"
    );
    let err = as_value(&err);
    assert_eq!(
        err["response"]["result"]["Err"]["kind"], "rejected",
        "{err}"
    );
    assert_eq!(err["response"]["result"]["Err"]["message"], "no", "{err}");
    let doc = include_str!("../../docs/protocol.md");
    assert!(
        doc.contains("`{Ok: Reply}` or `{Err: {kind, message}}`"),
        "docs/protocol.md must spell the result tags as the wire does"
    );
}
