//! A lightweight generator of remote workers for the scale figures: one
//! tokio runtime (one thread) in `bbbench`, one task per worker. Each task
//! speaks the real protocol as `bbworker` does: TCP, TLS 1.3 with the
//! master's certificate pinned (the worker's own TLS client,
//! [`crate::worker::tls::client_config`]), the protocol-3 hello with the
//! challenge and its proof bound to the TLS session; then it answers
//! pings and holds every step it is given "running" without a process
//! (a `StopStep` ends it as stopped). When the link drops it dials again
//! at once and then every 50-150 ms (jittered), listing its held steps in
//! its hello, as a worker that outlived its master does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::protocol::{
    Hello, HelloReply, MAX_FRAME, MAX_HANDSHAKE_FRAME, MasterToWorker, RefusalKind, Role,
    RunningStep, StepEnd, WorkerProof, WorkerToMaster, proof, read_msg, write_msg,
};
use crate::worker::tls::{TlsOptions, Verify, client_config};

/// How long one dial (TCP, TLS and the hello) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// What every task shares: where to dial, and the counters the scenario reads.
struct Shared {
    addr: SocketAddr,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    secret: String,
    /// Workers welcomed and still linked.
    connected: AtomicUsize,
    /// Steps held over all workers.
    held: AtomicUsize,
    /// Dials that ended before the master's welcome (closed at once by a
    /// master at its cap of unauthenticated connections, refused as
    /// `busy` or `already_connected`, no listener yet) and were retried.
    failed_dials: AtomicUsize,
    /// The first failure that ended a task (a refusal that will not pass).
    fatal: Mutex<Option<String>>,
}

/// The running generator; its tasks end when it is dropped.
pub(super) struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Fleet {
    /// Start one task per name in `names`, dialling `addr` with the
    /// certificate `fingerprint` (`sha256:...`) pinned.
    pub(super) fn start(
        addr: SocketAddr,
        fingerprint: &str,
        secret: &str,
        names: Vec<String>,
    ) -> Result<Fleet> {
        let pin = crate::net::parse_fingerprint(fingerprint)
            .map_err(|e| anyhow::anyhow!("bad fingerprint {fingerprint:?}: {e}"))?;
        let mut config = (*client_config(&TlsOptions {
            verify: Verify::Fingerprint(pin),
            ..TlsOptions::default()
        })
        .context("cannot set up the generator's TLS client")?)
        .clone();
        // Each real worker is a process of its own: no session shared
        // between the generator's workers makes their handshakes cheaper.
        config.resumption = rustls::client::Resumption::disabled();
        let shared = Arc::new(Shared {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::IpAddress(addr.ip().into()),
            secret: secret.to_string(),
            connected: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            failed_dials: AtomicUsize::new(0),
            fatal: Mutex::new(None),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bbbench-fleet")
            .enable_all()
            .build()
            .context("cannot start the generator's runtime")?;
        let (stop, stopped) = watch::channel(false);
        for (i, name) in names.into_iter().enumerate() {
            let task = Task {
                shared: Arc::clone(&shared),
                name,
                held: Vec::new(),
                random: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            };
            runtime.spawn(task.run(stopped.clone()));
        }
        Ok(Fleet {
            shared,
            stop,
            runtime: Some(runtime),
        })
    }

    /// Workers welcomed by the master and still linked.
    pub(super) fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Steps held "running" over all workers.
    pub(super) fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Dials that ended before the welcome and were retried.
    pub(super) fn failed_dials(&self) -> usize {
        self.shared.failed_dials.load(Ordering::SeqCst)
    }

    /// Fails with the first refusal that ended a worker's task, if any.
    pub(super) fn check(&self) -> Result<()> {
        match &*self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => anyhow::bail!("a generator worker gave up: {why}"),
            None => Ok(()),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Why a session ended.
enum End {
    /// The link dropped or was refused for now: dial again.
    Retry,
    /// Dialling again would give the same answer.
    Fatal(String),
}

/// One generated worker.
struct Task {
    shared: Arc<Shared>,
    name: String,
    held: Vec<RunningStep>,
    random: u64,
}

/// Counts a welcomed link in `connected` while it lives.
struct Linked(Arc<Shared>);

impl Linked {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.connected.fetch_add(1, Ordering::SeqCst);
        Linked(Arc::clone(shared))
    }
}

impl Drop for Linked {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Task {
    /// Dial, serve, dial again, until the generator stops.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let end = tokio::select! {
                end = self.session() => end,
                _ = stop.changed() => return,
            };
            if let End::Fatal(why) = end {
                let mut fatal = self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner());
                fatal.get_or_insert(format!("{}: {why}", self.name));
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.retry_delay()) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// 50 ms plus up to 100 ms of jitter (xorshift).
    fn retry_delay(&mut self) -> Duration {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        Duration::from_millis(50 + self.random % 100)
    }

    /// One connection: the handshake, then pings and steps until it drops.
    async fn session(&mut self) -> End {
        let link = match tokio::time::timeout(ATTEMPT_LIMIT, self.dial()).await {
            Ok(Ok(link)) => link,
            Ok(Err(end)) => {
                self.shared.failed_dials.fetch_add(1, Ordering::SeqCst);
                return end;
            }
            Err(_) => {
                self.shared.failed_dials.fetch_add(1, Ordering::SeqCst);
                return End::Retry;
            }
        };
        let (mut rd, mut wr) = link;
        let _linked = Linked::new(&self.shared);
        loop {
            let Ok(msg) = read_msg::<_, MasterToWorker>(&mut rd, MAX_FRAME).await else {
                return End::Retry;
            };
            let answer = match msg {
                MasterToWorker::Ping { seq } => Some(WorkerToMaster::Pong { seq }),
                MasterToWorker::StartStep(a) => {
                    self.held.push(RunningStep {
                        build: a.build,
                        step: a.step,
                    });
                    self.shared.held.fetch_add(1, Ordering::SeqCst);
                    None
                }
                MasterToWorker::StopStep { build, step } => {
                    self.forget(build, step);
                    Some(WorkerToMaster::StepEnded {
                        build,
                        step,
                        end: StepEnd::Stopped,
                    })
                }
                MasterToWorker::Abandon { build, step } => {
                    self.forget(build, step);
                    None
                }
                MasterToWorker::Goodbye { .. } => return End::Retry,
                _ => None,
            };
            if let Some(answer) = answer
                && write_msg(&mut wr, &answer).await.is_err()
            {
                return End::Retry;
            }
        }
    }

    fn forget(&mut self, build: crate::protocol::BuildId, step: crate::protocol::StepIndex) {
        let before = self.held.len();
        self.held.retain(|r| (r.build, r.step) != (build, step));
        let gone = before - self.held.len();
        self.shared.held.fetch_sub(gone, Ordering::SeqCst);
    }

    /// TCP, TLS and the hello with its proof; the link once welcomed.
    async fn dial(&self) -> Result<Halves, End> {
        let sh = &self.shared;
        let tcp = TcpStream::connect(sh.addr).await.map_err(|_| End::Retry)?;
        let _ = tcp.set_nodelay(true);
        let tls = sh
            .connector
            .connect(sh.server_name.clone(), tcp)
            .await
            .map_err(|_| End::Retry)?;
        let binding = crate::net::channel_binding(tls.get_ref().1)
            .map_err(|e| End::Fatal(format!("no channel binding: {e}")))?;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let hello = Hello::new(Role::Worker {
            name: self.name.clone(),
            running: self.held.clone(),
            host: None,
        });
        write_msg(&mut wr, &hello).await.map_err(|_| End::Retry)?;
        let mut reply = read_msg::<_, HelloReply>(&mut rd, MAX_HANDSHAKE_FRAME)
            .await
            .map_err(|_| End::Retry)?;
        if let HelloReply::Challenge { nonce } = &reply {
            let mac = proof::prove(&sh.secret, nonce, &self.name, &binding);
            write_msg(&mut wr, &WorkerProof { mac })
                .await
                .map_err(|_| End::Retry)?;
            reply = read_msg(&mut rd, MAX_HANDSHAKE_FRAME)
                .await
                .map_err(|_| End::Retry)?;
        }
        match reply {
            HelloReply::Welcome { .. } => Ok((rd, wr)),
            HelloReply::Refused {
                kind: RefusalKind::Busy | RefusalKind::AlreadyConnected,
                ..
            } => Err(End::Retry),
            HelloReply::Refused { reason, kind, .. } => {
                Err(End::Fatal(format!("refused ({kind:?}): {reason}")))
            }
            HelloReply::Challenge { .. } => Err(End::Fatal("challenged twice".into())),
        }
    }
}

/// The two halves of a welcomed TLS link.
type Halves = (
    tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
);
