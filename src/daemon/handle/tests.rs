//! Unit tests of the front door, in a file of their own to keep it short.

use super::*;

fn handle() -> MasterHandle {
    MasterHandle::new(
        mpsc::channel(1).0,
        broadcast::channel(1).0,
        broadcast::channel(1).0,
    )
}

#[tokio::test]
async fn shutting_down_resolves_once_told_and_only_then() {
    let (tx, rx) = watch::channel(false);
    let h = handle().with_shutdown(rx);
    let wait = std::time::Duration::from_millis(50);
    assert!(tokio::time::timeout(wait, h.shutting_down()).await.is_err());
    tx.send(true).unwrap();
    drop(tx);
    tokio::time::timeout(wait, h.shutting_down())
        .await
        .expect("told: resolves, even after the sender is gone");
    // A handle never told of shutdown waits forever.
    assert!(
        tokio::time::timeout(wait, handle().shutting_down())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_caller_refused_by_the_policy_never_reaches_the_loop() {
    let (tx, mut rx) = mpsc::channel(1);
    let h = MasterHandle::new(tx, broadcast::channel(1).0, broadcast::channel(1).0).with_policy(
        Policy {
            own_uid: 1000,
            allowed_uids: vec![],
            allowed_gid: None,
            http_tokens: Default::default(),
            irc: Default::default(),
        },
    );
    let stranger = Principal::LocalUser {
        uid: Some(1001),
        gid: None,
        pid: None,
        under_worker: None,
    };
    let e = h.workers(&stranger).await.unwrap_err();
    assert!(
        e.message.starts_with("permission denied: uid 1001"),
        "{e:?}"
    );
    assert!(rx.try_recv().is_err(), "nothing was sent to the loop");
}

#[tokio::test]
async fn history_reads_are_answered_without_the_loop() {
    use crate::daemon::core::Record;
    use crate::daemon::history::History;
    use crate::daemon::store::{SqliteReader, SqliteStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .apply(&[&Record::RequestQueued {
            request: 1,
            builder: "a".into(),
            reason: None,
            properties: Default::default(),
            priority: 0,
            source: None,
            at_ms: 1,
        }])
        .unwrap();
    let reader = Arc::new(SqliteReader::open(&path).unwrap());
    // A loop that never reads its queue.
    let (tx, mut rx) = mpsc::channel(1);
    let h = MasterHandle::new(tx, broadcast::channel(1).0, broadcast::channel(1).0)
        .with_history(History::new(reader, dir.path().join("logs")));
    let me = Principal::LocalUser {
        uid: Some(nix::unistd::geteuid().as_raw()),
        gid: None,
        pid: None,
        under_worker: None,
    };
    match h.request_info(&me, 1).await.unwrap() {
        Reply::Request(info) => assert_eq!((info.builder.as_str(), info.build), ("a", None)),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.build(&me, 7).await.unwrap_err().message, "no build 7");
    assert_eq!(h.artifacts(&me, 7).await.unwrap_err().message, "no build 7");
    assert!(matches!(h.builds(&me, None, 10).await, Ok(Reply::Builds(b)) if b.is_empty()));
    let snap = h.snapshot(StreamTarget::Request(1)).await.unwrap();
    assert_eq!(snap.request.map(|r| r.state), Some("queued".to_string()));
    assert!(rx.try_recv().is_err(), "the loop was not asked");

    // A builder with no history may be a typo: only that is asked of the loop.
    let ask = {
        let (h, me) = (h.clone(), me.clone());
        tokio::spawn(async move { h.builds(&me, Some("nope".into()), 10).await })
    };
    match rx.recv().await {
        Some(Command::KnownBuilder { name, reply }) => {
            assert_eq!(name, "nope");
            let _ = reply.send(Err(ErrorReply::not_found("unknown builder `nope`")));
        }
        _ => panic!("expected the builder check"),
    }
    assert_eq!(
        ask.await.unwrap().unwrap_err().message,
        "unknown builder `nope`"
    );
}
