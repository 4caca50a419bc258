//! Protocol tests: the handshake: its messages round trip, a wrong version
//! or magic is named, a worker's proof stays out of debug output.

use super::*;

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
        leader: None,
    });
    round_trip(HelloReply::not_leader(
        "a standby",
        Some("tls://a.example:9989".into()),
    ));
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
