//! The link alone, on an in-memory pipe: shutdown, and how core commands
//! are said on the wire.

use super::*;
use crate::config::StepAction;
use crate::config::{DownloadSpec, UploadSpec};
use crate::daemon::core::StepStart;
use crate::daemon::leader::write_lease::WriteLease;
use crate::protocol::{StepAssignment, WireAction};

/// A link on one end of an in-memory pipe, its master told of shutdown
/// through the returned sender; the other end is the worker's.
fn link_on_pipe(
    logs: &std::path::Path,
) -> (
    Link,
    tokio::sync::watch::Sender<bool>,
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
) {
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let master = MasterHandle::new(
        mpsc::channel(8).0,
        tokio::sync::broadcast::channel(1).0,
        tokio::sync::broadcast::channel(1).0,
    )
    .with_shutdown(stopping);
    let limits = Arc::new(Limits::from_settings(&Default::default()));
    let link = Link {
        id: 1,
        worker: "w".into(),
        master: master.clone(),
        logs: logs.to_path_buf(),
        open: HashMap::new(),
        keepalive: Duration::from_secs(60),
        last_seen: Arc::new(AtomicU64::new(0)),
        limits: Arc::clone(&limits),
        pings: HashMap::new(),
        transfers: Transfers::new(limits.dirs.clone(), master, limits.worker.clone()),
        outbox: Vec::new(),
        rtt_us: Arc::new(AtomicU64::new(u64::MAX)),
    };
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    (link, stopping_tx, ours, theirs)
}

/// A leader paused past its lease resumes to find a worker's output in
/// its socket: with its write lease over, it writes none of it (the next
/// leader has the log now) and closes the link without a goodbye, so that
/// the worker keeps the step for the next leader.
#[tokio::test]
async fn a_link_past_its_write_lease_writes_nothing_and_closes_without_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let (mut link, _stopping, ours, mut theirs) = link_on_pipe(dir.path());
    let lease = WriteLease::unlimited();
    lease.revoke();
    link.master = link.master.clone().with_write_lease(lease);
    link.open.insert(
        (1, 0),
        StepLog {
            new: true,
            ..StepLog::default()
        },
    );
    let late = WorkerToMaster::Output {
        build: 1,
        step: 0,
        offset: 0,
        data: b"late".to_vec(),
    };
    protocol::write_msg(&mut theirs, &late).await.unwrap();
    let (rd, mut wr) = tokio::io::split(ours);
    let (_cmd_tx, mut cmds) = mpsc::unbounded_channel();
    tokio::time::timeout(Duration::from_secs(5), link.run(rd, &mut wr, &mut cmds))
        .await
        .expect("the link closes at once");
    drop(wr);
    assert!(
        !logs::step_log_path(dir.path(), 1, 0).exists(),
        "the log was written"
    );
    loop {
        match protocol::frame::read_frame(&mut theirs, MAX_WORKER_FRAME).await {
            Ok(body) => {
                let msg = protocol::frame::decode::<MasterToWorker>(&body).unwrap();
                assert!(
                    !matches!(msg, MasterToWorker::Goodbye { .. }),
                    "a goodbye would make the worker stop its steps"
                );
            }
            Err(e) => {
                assert!(e.is_disconnect(), "{e}");
                break;
            }
        }
    }
}

/// Told that the master shuts down, a link writes what the loop had
/// queued for it, then closes at once without a Goodbye (which would
/// make the worker stop its steps and exit), even while its command
/// channel is still open (a `bbctl ping` holds a sender).
#[tokio::test]
async fn a_link_closes_when_the_master_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut link, stopping, ours, mut theirs) = link_on_pipe(dir.path());
    let (rd, mut wr) = tokio::io::split(ours);
    let (cmd_tx, mut cmds) = mpsc::unbounded_channel();
    cmd_tx
        .send(LinkCmd::Send(WorkerCmd::Stop { build: 1, step: 0 }))
        .unwrap();
    stopping.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), link.run(rd, &mut wr, &mut cmds))
        .await
        .expect("the link ends because it was told, not after keepalive silence");
    drop(wr);
    let mut seen = Vec::new();
    loop {
        match protocol::frame::read_frame(&mut theirs, MAX_WORKER_FRAME).await {
            Ok(body) => seen.push(protocol::frame::decode::<MasterToWorker>(&body).unwrap()),
            Err(e) => {
                assert!(e.is_disconnect(), "{e}");
                break;
            }
        }
    }
    assert!(
        seen.contains(&MasterToWorker::StopStep { build: 1, step: 0 }),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, MasterToWorker::Goodbye { .. })),
        "{seen:?}"
    );
    drop(cmd_tx);
}

fn start(action: StepAction) -> StepStart {
    StepStart {
        build: 7,
        step: 2,
        builder: "b".into(),
        name: "s".into(),
        action,
        env: vec![("BB_BUILD_ID".into(), "7".into())],
        pass_env: vec!["HOME".into()],
        timeout: Some(Duration::from_millis(1500)),
        max_output: Some(1 << 20),
    }
}

/// Every field of the core's step start reaches the wire as it was.
#[test]
fn a_step_start_is_said_on_the_wire_field_for_field() {
    let a = assignment(start(StepAction::Shell("make".into())));
    assert_eq!(
        a,
        StepAssignment {
            build: 7,
            step: 2,
            builder: "b".into(),
            name: "s".into(),
            action: WireAction::Shell("make".into()),
            env: vec![("BB_BUILD_ID".into(), "7".into())],
            pass_env: vec!["HOME".into()],
            timeout_ms: Some(1500),
            max_output: Some(1 << 20),
        }
    );
    let mut none = start(StepAction::Command(vec!["true".into()]));
    none.timeout = None;
    none.max_output = None;
    let a = assignment(none);
    assert_eq!(a.action, WireAction::Command(vec!["true".into()]));
    assert_eq!((a.timeout_ms, a.max_output), (None, None));
}

/// Transfers keep their limits and modes on the way to the wire.
#[test]
fn transfer_steps_keep_their_limits_and_modes() {
    let up = assignment(start(StepAction::Upload(UploadSpec {
        from: "out/*.tar".into(),
        max_size: Some(10),
        mode: 0o640,
    })));
    assert_eq!(
        up.action,
        WireAction::Upload {
            from: "out/*.tar".into(),
            max_size: Some(10),
            mode: 0o640
        }
    );
    let down = assignment(start(StepAction::Download(DownloadSpec {
        from: "in.bin".into(),
        to: "x/in.bin".into(),
        max_size: None,
        mode: 0o600,
    })));
    assert_eq!(
        down.action,
        WireAction::Download {
            from: "in.bin".into(),
            to: "x/in.bin".into(),
            max_size: None,
            mode: 0o600
        }
    );
}
