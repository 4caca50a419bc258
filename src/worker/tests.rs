//! The whole worker against a fake master: the basics of one link.

use std::time::{Duration, Instant};

use super::WorkerError;
use super::fake_master::{FakeMaster, finished, step};
use crate::protocol::{
    HelloReply, MasterToWorker, RefusalKind, StepEnd, WorkerToMaster, write_msg,
};

#[tokio::test]
async fn runs_a_step_then_exits_on_goodbye() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(1, "echo $GREETING; echo there >&2")).await;
    let (out, end) = conn.until_end().await;
    assert_eq!(String::from_utf8_lossy(&out), "hi\nthere\n");
    assert_eq!(end, StepEnd::Exited { code: 0 });
    assert!(master.dir.path().join("work/hello").is_dir());
    conn.send(MasterToWorker::Goodbye {
        reason: "test over".to_string(),
    })
    .await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn stop_step_over_the_wire() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(2, "echo started; sleep 30")).await;
    assert!(matches!(conn.recv().await, WorkerToMaster::Output { .. }));
    // Unknown steps are ignored.
    conn.send(MasterToWorker::StopStep { build: 99, step: 0 })
        .await;
    conn.send(MasterToWorker::StopStep { build: 2, step: 0 })
        .await;
    let (_, end) = conn.until_end().await;
    assert_eq!(end, StepEnd::Stopped);
    conn.send(MasterToWorker::Goodbye {
        reason: "bye".to_string(),
    })
    .await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn goodbye_stops_running_steps_and_reports_them() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(3, "echo started; sleep 30")).await;
    assert!(matches!(conn.recv().await, WorkerToMaster::Output { .. }));
    conn.send(MasterToWorker::Goodbye {
        reason: "shutting down".to_string(),
    })
    .await;
    let (_, end) = conn.until_end().await;
    assert_eq!(end, StepEnd::Stopped);
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn refusal_is_an_error_with_the_reason() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.accept().await;
    let refused = HelloReply::refused(RefusalKind::WrongSecret, "bad secret for worker w1");
    write_msg(&mut conn.w, &refused).await.expect("refuse");
    let err = finished(worker).await.expect_err("refused");
    assert!(matches!(err, WorkerError::Refused { .. }));
    assert_eq!(
        err.to_string(),
        "the master refused this worker: bad secret for worker w1"
    );
}

#[tokio::test]
async fn reconnects_after_losing_the_master() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let conn = master.welcome().await;
    drop(conn);
    let mut conn = master.welcome().await;
    conn.send(MasterToWorker::Goodbye {
        reason: "done".to_string(),
    })
    .await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn already_connected_refusal_is_retried() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.accept().await;
    let refused = HelloReply::refused(RefusalKind::AlreadyConnected, "worker w1 is here");
    write_msg(&mut conn.w, &refused).await.expect("refuse");
    drop(conn);
    let mut conn = master.welcome().await;
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn orphan_timeout_exits_when_the_master_is_gone_and_no_step_is_held() {
    let mut master = FakeMaster::new();
    let mut opts = master.options();
    opts.orphan_timeout = Some(Duration::from_millis(300));
    let worker = tokio::spawn(super::run(opts));
    let mut conn = master.welcome().await;
    conn.send(step(1, "echo quick")).await;
    let (out, _) = conn.until_end().await;
    assert_eq!(out, b"quick\n");
    // The master goes away for good.
    master.close();
    let lost = Instant::now();
    drop(conn);
    finished(worker).await.expect("Ok once orphaned");
    let waited = lost.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "exited after {waited:?}"
    );
}

#[tokio::test]
async fn spool_cap_drops_what_the_master_does_not_take_says_so_once_and_the_step_ends_normally() {
    let master = FakeMaster::new();
    let mut opts = master.options();
    opts.spool_limit = 1000;
    let worker = tokio::spawn(super::run(opts));
    let mut conn = master.welcome().await;
    conn.send(step(1, "head -c 200000 /dev/zero; echo tail"))
        .await;
    let (out, end) = conn.until_end().await;
    assert_eq!(end, StepEnd::Exited { code: 0 });
    // This master never says it kept anything: past 1000 bytes waiting,
    // the rest is dropped.
    let notice =
        b"\n[bbworker: output dropped: more than 1000 bytes waited to be sent (--spool-limit)]\n";
    assert_eq!(out.len(), 1000 + notice.len());
    assert!(out[..1000].iter().all(|&b| b == 0));
    assert_eq!(&out[1000..], notice);
    conn.goodbye().await;
    finished(worker).await.expect("Ok after Goodbye");
}

#[tokio::test]
async fn duplicate_start_is_ignored() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker();
    let mut conn = master.welcome().await;
    conn.send(step(1, "echo once; sleep 30")).await;
    let WorkerToMaster::Output { data, .. } = conn.recv().await else {
        panic!("expected output first");
    };
    assert_eq!(data, b"once\n");
    conn.send(step(1, "echo twice")).await;
    conn.send(MasterToWorker::StopStep { build: 1, step: 0 })
        .await;
    let (out, end) = conn.until_end_from(5).await;
    assert!(out.is_empty(), "the duplicate did not run");
    assert_eq!(end, StepEnd::Stopped);
    conn.goodbye().await;
    // Nothing more for that step before the link closes.
    while let Ok(msg) = conn.try_recv().await {
        assert!(
            matches!(
                msg,
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. }
            ),
            "unexpected {msg:?}"
        );
    }
    finished(worker).await.expect("Ok after Goodbye");
}
