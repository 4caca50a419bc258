//! A fake master speaking the worker protocol by hand, for the worker's
//! tests.

use std::path::PathBuf;

use tempfile::TempDir;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use super::spool::DEFAULT_SPOOL_LIMIT;
use super::test_util::BOUND;
use super::{WorkerError, WorkerOptions, run};
use crate::protocol::{
    FrameError, Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, MasterToWorker,
    PROTOCOL_VERSION, Role, RunningStep, StepAssignment, StepEnd, WireAction, WorkerProof,
    WorkerToMaster, proof, read_msg, write_msg,
};

/// A listening fake master in a short temp dir (socket paths are limited
/// to 107 bytes).
pub(crate) struct FakeMaster {
    pub(crate) dir: TempDir,
    pub(crate) socket: PathBuf,
    listener: Option<UnixListener>,
}

/// One accepted worker connection, handshake read.
pub(crate) struct Conn {
    pub(crate) r: OwnedReadHalf,
    pub(crate) w: OwnedWriteHalf,
    pub(crate) hello: Hello,
    /// The worker's answer to our challenge.
    pub(crate) proof: proof::Proof,
}

impl FakeMaster {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bbw")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("m.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        FakeMaster {
            dir,
            socket,
            listener: Some(listener),
        }
    }

    pub(crate) fn options(&self) -> WorkerOptions {
        WorkerOptions {
            master_socket: self.socket.clone(),
            name: "w1".to_string(),
            secret: "s3cret".to_string(),
            dir: self.dir.path().join("work"),
            orphan_timeout: None,
            spool_limit: DEFAULT_SPOOL_LIMIT,
            guard_exe: None,
        }
    }

    pub(crate) fn spawn_worker(&self) -> JoinHandle<Result<(), WorkerError>> {
        tokio::spawn(run(self.options()))
    }

    /// Stop listening: connections are refused from now on.
    pub(crate) fn close(&mut self) {
        self.listener = None;
    }

    pub(crate) async fn accept(&self) -> Conn {
        let listener = self.listener.as_ref().expect("listening");
        let (stream, _) = tokio::time::timeout(BOUND, listener.accept())
            .await
            .expect("worker connects in time")
            .expect("accept");
        let (mut r, mut w) = stream.into_split();
        let hello: Hello = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("hello");
        let nonce = proof::nonce().to_vec();
        write_msg(
            &mut w,
            &HelloReply::Challenge {
                nonce: nonce.clone(),
            },
        )
        .await
        .expect("challenge");
        let answer: WorkerProof = read_msg(&mut r, MAX_HANDSHAKE_FRAME).await.expect("proof");
        let proof = proof::Proof {
            nonce,
            binding: Vec::new(),
            mac: answer.mac,
        };
        Conn { r, w, hello, proof }
    }

    /// Accept, check the Hello lists no step, welcome.
    pub(crate) async fn welcome(&self) -> Conn {
        self.welcome_with(&[], None).await
    }

    /// Accept, check the Hello lists exactly `running`, welcome with this
    /// keepalive.
    pub(crate) async fn welcome_with(
        &self,
        running: &[(u64, u32)],
        keepalive_ms: Option<u64>,
    ) -> Conn {
        let mut conn = self.accept().await;
        assert!(conn.hello.check().is_ok());
        match &conn.hello.role {
            Role::Worker {
                name,
                running: listed,
                ..
            } => {
                assert_eq!(name, "w1");
                assert!(
                    conn.proof.verify("s3cret", "w1"),
                    "the worker proved its secret"
                );
                let expected: Vec<RunningStep> = running
                    .iter()
                    .map(|&(build, step)| RunningStep { build, step })
                    .collect();
                assert_eq!(listed, &expected, "steps listed in the Hello");
            }
            Role::Client => panic!("worker said it is a client"),
        }
        let welcome = HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            software: "fake master".to_string(),
            master_pid: std::process::id(),
            keepalive_ms,
        };
        write_msg(&mut conn.w, &welcome).await.expect("welcome");
        conn
    }
}

impl Conn {
    pub(crate) async fn send(&mut self, msg: MasterToWorker) {
        write_msg(&mut self.w, &msg).await.expect("send to worker");
    }

    /// The next frame, or why there is none, with a bound.
    pub(crate) async fn try_recv(&mut self) -> Result<WorkerToMaster, FrameError> {
        tokio::time::timeout(BOUND, read_msg(&mut self.r, MAX_FRAME))
            .await
            .expect("worker message in time")
    }

    /// The next frame that is not a keepalive.
    pub(crate) async fn recv(&mut self) -> WorkerToMaster {
        loop {
            match self.try_recv().await.expect("worker message") {
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
                other => return other,
            }
        }
    }

    /// Output up to the step's end, checking offsets are contiguous from
    /// `from`.
    pub(crate) async fn until_end_from(&mut self, from: u64) -> (Vec<u8>, StepEnd) {
        let mut out = Vec::new();
        loop {
            match self.recv().await {
                WorkerToMaster::Output { offset, data, .. } => {
                    assert_eq!(offset, from + out.len() as u64, "contiguous offsets");
                    out.extend_from_slice(&data);
                }
                WorkerToMaster::StepEnded { end, .. } => return (out, end),
                WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Output up to the step's end.
    pub(crate) async fn until_end(&mut self) -> (Vec<u8>, StepEnd) {
        self.until_end_from(0).await
    }

    pub(crate) async fn goodbye(&mut self) {
        self.send(MasterToWorker::Goodbye {
            reason: "test over".to_string(),
        })
        .await;
    }
}

pub(crate) fn step(build: u64, line: &str) -> MasterToWorker {
    MasterToWorker::StartStep(StepAssignment {
        build,
        step: 0,
        builder: "hello".to_string(),
        name: "say".to_string(),
        action: WireAction::Shell(line.to_string()),
        env: vec![("GREETING".to_string(), "hi".to_string())],
        pass_env: Vec::new(),
        timeout_ms: None,
        max_output: None,
    })
}

pub(crate) async fn finished(
    worker: JoinHandle<Result<(), WorkerError>>,
) -> Result<(), WorkerError> {
    tokio::time::timeout(BOUND, worker)
        .await
        .expect("worker exits in time")
        .expect("worker does not panic")
}
