//! The whole worker against a fake master speaking the protocol by hand.

use std::path::PathBuf;

use tempfile::TempDir;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use super::{WorkerError, WorkerOptions, run};
use crate::protocol::{
    Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, MasterToWorker, PROTOCOL_VERSION, Role,
    StepAssignment, StepEnd, WireAction, WorkerToMaster, read_msg, write_msg,
};

use super::test_util::{BOUND, eventually, live_members};

/// A listening fake master in a short temp dir (socket paths are limited
/// to 107 bytes).
struct FakeMaster {
    dir: TempDir,
    socket: PathBuf,
    listener: UnixListener,
}

/// One accepted worker connection, handshake read.
struct Conn {
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    hello: Hello,
}

impl FakeMaster {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bbw")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("m.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        FakeMaster {
            dir,
            socket,
            listener,
        }
    }

    fn options(&self, exit_with_master: bool) -> WorkerOptions {
        WorkerOptions {
            master_socket: self.socket.clone(),
            name: "w1".to_string(),
            secret: "s3cret".to_string(),
            dir: self.dir.path().join("work"),
            exit_with_master,
        }
    }

    fn spawn_worker(&self, exit_with_master: bool) -> JoinHandle<Result<(), WorkerError>> {
        tokio::spawn(run(self.options(exit_with_master)))
    }

    async fn accept(&self) -> Conn {
        let (stream, _) = tokio::time::timeout(BOUND, self.listener.accept())
            .await
            .expect("worker connects in time")
            .expect("accept");
        let (mut r, w) = stream.into_split();
        let hello: Hello = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("hello");
        Conn { r, w, hello }
    }

    async fn welcome(&self) -> Conn {
        let mut conn = self.accept().await;
        assert!(conn.hello.check().is_ok());
        match &conn.hello.role {
            Role::Worker {
                name,
                secret,
                running,
            } => {
                assert_eq!((name.as_str(), secret.as_str()), ("w1", "s3cret"));
                assert!(running.is_empty());
            }
            Role::Client => panic!("worker said it is a client"),
        }
        let welcome = HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            software: "fake master".to_string(),
            master_pid: std::process::id(),
            keepalive_ms: None,
        };
        write_msg(&mut conn.w, &welcome).await.expect("welcome");
        conn
    }
}

impl Conn {
    async fn send(&mut self, msg: MasterToWorker) {
        write_msg(&mut self.w, &msg).await.expect("send to worker");
    }

    async fn recv(&mut self) -> WorkerToMaster {
        tokio::time::timeout(BOUND, read_msg(&mut self.r, MAX_FRAME))
            .await
            .expect("worker message in time")
            .expect("worker message")
    }

    /// Output up to the step's end.
    async fn until_end(&mut self) -> (Vec<u8>, StepEnd) {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                WorkerToMaster::Output { data, .. } => out.extend_from_slice(&data),
                WorkerToMaster::StepEnded { end, .. } => return (out, end),
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
            }
        }
    }
}

fn step(build: u64, line: &str) -> MasterToWorker {
    MasterToWorker::StartStep(StepAssignment {
        build,
        step: 0,
        builder: "hello".to_string(),
        name: "say".to_string(),
        action: WireAction::Shell(line.to_string()),
        env: vec![("GREETING".to_string(), "hi".to_string())],
        timeout_ms: None,
    })
}

async fn finished(worker: JoinHandle<Result<(), WorkerError>>) -> Result<(), WorkerError> {
    tokio::time::timeout(BOUND, worker)
        .await
        .expect("worker exits in time")
        .expect("worker does not panic")
}

#[tokio::test]
async fn runs_a_step_then_exits_on_goodbye() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker(false);
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
    let worker = master.spawn_worker(false);
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
    let worker = master.spawn_worker(false);
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
    let worker = master.spawn_worker(false);
    let mut conn = master.accept().await;
    let refused = HelloReply::Refused {
        reason: "bad secret for worker w1".to_string(),
    };
    write_msg(&mut conn.w, &refused).await.expect("refuse");
    let err = finished(worker).await.expect_err("refused");
    assert!(matches!(err, WorkerError::Refused { .. }));
    assert_eq!(
        err.to_string(),
        "the master refused this worker: bad secret for worker w1"
    );
}

#[tokio::test]
async fn lost_connection_with_exit_with_master_kills_steps_and_exits() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker(true);
    let mut conn = master.welcome().await;
    let pidfile = master.dir.path().join("pid");
    let line = format!("echo $$ > '{}'; echo started; sleep 30", pidfile.display());
    conn.send(step(4, &line)).await;
    assert!(matches!(conn.recv().await, WorkerToMaster::Output { .. }));
    drop(conn);
    finished(worker)
        .await
        .expect("Ok when the master goes away");
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    eventually("the step's group is gone", || live_members(pgid).is_empty()).await;
}

#[tokio::test]
async fn reconnects_after_losing_the_master() {
    let master = FakeMaster::new();
    let worker = master.spawn_worker(false);
    let conn = master.welcome().await;
    drop(conn);
    let mut conn = master.welcome().await;
    conn.send(MasterToWorker::Goodbye {
        reason: "done".to_string(),
    })
    .await;
    finished(worker).await.expect("Ok after Goodbye");
}
