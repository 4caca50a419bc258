//! Protocol tests: the client conversation (bbctl's requests, replies and
//! events) round trips, and a response's result is tagged as documented.

use std::collections::BTreeMap;

use super::*;
use crate::protocol::frame::{decode, encode};

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
            source: Some(crate::protocol::SourceStamp {
                repository: "r".into(),
                branch: "main".into(),
                revision: Some("abc".into()),
                changes: vec![1, 2],
            }),
        },
        Request::SendChange {
            change: crate::protocol::NewChange {
                repository: "r".into(),
                branch: "main".into(),
                revision: "abc".into(),
                files: vec!["src/a.rs".into()],
                ..Default::default()
            },
        },
        Request::Changes { limit: 3 },
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
                waiting_for_lock: None,
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
            pollers: vec![crate::protocol::PollerView {
                name: "app".into(),
                repository: "/srv/app.git".into(),
                last_poll_ms: Some(7),
                last_duration_ms: Some(8),
                last_error: Some("boom".into()),
                last_warning: None,
                refs: 2,
                changes: 3,
            }],
            lock_waits: vec![],
            irc: Some(crate::protocol::IrcStatus {
                state: "connected".into(),
                server: "irc.example:6697".into(),
                nick: Some("bbmaster".into()),
                channels: vec!["#builds".into()],
                lag_ms: Some(12),
                last_error: None,
                since_ms: 5,
            }),
            leadership: Some(crate::protocol::LeadershipStatus {
                name: "a".into(),
                role: crate::protocol::MasterRole::Standby,
                leader: crate::protocol::LeaderView {
                    epoch: 3,
                    name: Some("b".into()),
                    address: Some("tls://b:9989".into()),
                    lease_expired: false,
                },
            }),
        }),
        Reply::Masters(crate::protocol::MastersReply {
            store: "postgres".into(),
            answered_by: "a".into(),
            leader: None,
            masters: vec![crate::protocol::MasterView {
                name: "a".into(),
                address: None,
                role: crate::protocol::MasterRole::Leader,
                epoch: Some(2),
                pid: Some(1),
                started_at_ms: Some(1),
                heartbeat_at_ms: Some(2),
                heartbeat_age_ms: Some(3),
            }],
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
            source: None,
        },
        EventKind::BuildStarted {
            build: 1,
            request: 1,
            builder: "b".into(),
            worker: "w".into(),
            source: Some(crate::protocol::SourceStamp {
                repository: "repo".into(),
                branch: "main".into(),
                revision: Some("0123456789abcdef".into()),
                changes: vec![3],
            }),
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
            source: None,
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
    let doc = include_str!("../../../docs/protocol.md");
    assert!(
        doc.contains("`{Ok: Reply}` or `{Err: {kind, message}}`"),
        "docs/protocol.md must spell the result tags as the wire does"
    );
}

/// Build events gained `source` (the source stamp); an event from a master
/// that did not send it still parses, with no stamp.
#[test]
fn a_build_event_without_a_source_stamp_still_parses() {
    let old = r#"{"at_ms":1,"generation":1,"event":"build_finished","build":7,"request":8,"result":"success","reason":null}"#;
    let event: Event = serde_json::from_str(old).expect("an event without source");
    assert!(matches!(
        event.kind,
        EventKind::BuildFinished { source: None, .. }
    ));
}
