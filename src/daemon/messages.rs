//! The messages between the adapters (control socket, worker links,
//! transfers, followers, signals) and the master loop.
//!
//! A leaf module: it imports only the core's ids and records, the protocol
//! and the config, never the loop or an adapter, so that adapters and the
//! loop both depend on it and not on each other (see docs/architecture.md).
//! Adapters do not build these by hand: they call the `MasterHandle`
//! (handle/), the front door.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::daemon::core::{LinkId, Record, WorkerCmd};
use crate::protocol::proof::Proof;
use crate::protocol::{
    BuildDetail, BuildId, ErrorReply, RefusalKind, ReloadReport, Reply, Request, RequestInfo,
    RunningStep, ShutdownMode, StepEnd, StepIndex,
};
use crate::protocol::{ChangeBatch, ChangeId};

/// A message for the master loop.
pub enum Command {
    /// Changes from a source (`sendchange`, a poller), with its cursor.
    AddChanges {
        /// The changes and the cursor.
        batch: ChangeBatch,
        /// Who sent them ([`crate::daemon::auth::Principal::label`]), for
        /// the `change_added` events.
        sent_by: String,
        /// The stored ids, once the batch is on disk.
        reply: oneshot::Sender<Result<Vec<ChangeId>, ErrorReply>>,
    },
    /// A client request other than a stream or shutdown.
    Client {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Reply, ErrorReply>>,
    },
    /// The config in force (`MasterHandle::config`: the retention task's policy).
    Config {
        /// Where the answer goes.
        reply: oneshot::Sender<Arc<Config>>,
    },
    /// Does this builder exist in the config in force? `bbctl builds`
    /// asks when a builder's history is empty, to tell a typo.
    KnownBuilder {
        /// The name asked for.
        name: String,
        /// `Err` (not found, with the closest names) if it does not exist.
        reply: oneshot::Sender<Result<(), ErrorReply>>,
    },
    /// A worker finished the handshake and wants to be attached.
    WorkerHello {
        /// The name it claims.
        name: String,
        /// Its proof of the secret, checked by the loop.
        proof: Proof,
        /// The steps it still holds from an earlier link.
        held: Vec<RunningStep>,
        /// What the connection says about the worker.
        meta: Box<LinkMeta>,
        /// Its new link id.
        link: LinkId,
        /// How to reach its connection task.
        tx: mpsc::UnboundedSender<LinkCmd>,
        /// The worker's current link, found silent to a ping: dropped
        /// (its builds follow the worker-lost rules) before this one is
        /// attached, in the same step, if it is still the worker's link.
        replaces: Option<LinkId>,
        /// `Err(refusal)` refuses it.
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// A worker reported a step's end.
    StepEnded {
        /// The reporting link.
        link: LinkId,
        /// The build.
        build: BuildId,
        /// The step.
        step: StepIndex,
        /// How it ended.
        end: StepEnd,
    },
    /// A worker's connection ended.
    WorkerGone {
        /// The link that ended.
        link: LinkId,
    },
    /// A worker link is being dropped for keepalive silence (sent just
    /// before its [`Command::WorkerGone`]): a local worker is then frozen
    /// or hung, and is killed and restarted.
    WorkerSilent {
        /// The silent link.
        link: LinkId,
    },
    /// Re-read the config (from `bbctl reload` or SIGHUP).
    Reload {
        /// Only report.
        dry_run: bool,
        /// Read this file instead of the master's config file.
        config: Option<PathBuf>,
        /// Where the answer goes; `None` for SIGHUP (the result is logged).
        reply: Option<oneshot::Sender<Result<ReloadReport, ErrorReply>>>,
    },
    /// A reload's config, read off the loop (see `config_read`): apply it.
    ReloadRead {
        /// Only report.
        dry_run: bool,
        /// The file read (`None`: the embedded default).
        path: Option<PathBuf>,
        /// The config, or why it could not be had.
        config: Result<Box<Config>, String>,
        /// Where the answer goes; `None` for SIGHUP (the result is logged).
        reply: Option<oneshot::Sender<Result<ReloadReport, ErrorReply>>>,
    },
    /// The connection task of a worker, for `bbctl ping`.
    LinkOf {
        /// The worker.
        worker: String,
        /// Its link and the link's command channel, or why there is none.
        reply: oneshot::Sender<Result<(LinkId, mpsc::UnboundedSender<LinkCmd>), ErrorReply>>,
    },
    /// A worker link stored an uploaded file: record it.
    Artifact {
        /// The build.
        build: BuildId,
        /// The file.
        artifact: crate::protocol::ArtifactInfo,
        /// `Err(reason)` if it could not be recorded.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Stop the master (see [`ShutdownMode`]).
    Shutdown {
        /// How.
        mode: ShutdownMode,
        /// Where the answer goes; `None` for signals.
        reply: Option<oneshot::Sender<Result<Reply, ErrorReply>>>,
    },
}

/// Why a worker's hello is refused: the kind for the worker, the words
/// for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the worker is told it can do about it.
    pub kind: RefusalKind,
    /// The words.
    pub reason: String,
    /// Where the leader is, for a `NotLeader` refusal (a standby's).
    pub leader: Option<String>,
}

impl Refusal {
    /// A refusal of `kind`.
    pub fn new(kind: RefusalKind, reason: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason: reason.into(),
            leader: None,
        }
    }

    /// The same refusal, naming the leader's address (`NotLeader`).
    pub fn with_leader(mut self, leader: Option<String>) -> Self {
        self.leader = leader;
        self
    }
}

/// What the master loop tells a worker connection task.
#[derive(Debug)]
pub enum LinkCmd {
    /// Do this (the link says it in the wire's words).
    Send(WorkerCmd),
    /// Say goodbye with this reason and close.
    Close(String),
    /// Ping the worker and report the round trip.
    Ping(oneshot::Sender<std::time::Duration>),
    /// Tell the worker that this step's end is stored (after the batch
    /// holding it is committed): it may forget the step.
    EndKept {
        /// The build.
        build: crate::protocol::BuildId,
        /// The step.
        step: crate::protocol::StepIndex,
    },
}

/// What a worker's connection tells about it (for `bbctl workers`).
#[derive(Debug, Clone)]
pub struct LinkMeta {
    /// The worker's program and version, from its hello.
    pub software: String,
    /// Its host name, from its hello.
    pub host: Option<String>,
    /// Its process id, from the socket's peer credentials.
    pub pid: Option<i32>,
    /// Unix socket, TCP or TLS.
    pub transport: crate::net::Transport,
    /// Its address (TCP and TLS).
    pub peer: Option<std::net::SocketAddr>,
    /// The TLS version of the link.
    pub tls_version: Option<String>,
    /// The last keepalive round trip in microseconds; `u64::MAX` until one
    /// is measured.
    pub ping_rtt_us: Arc<AtomicU64>,
    /// When the connection task last heard from it (ms since the epoch).
    pub last_seen_ms: Arc<AtomicU64>,
}

/// What followers of builds are told; they read details from the store.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A record was written.
    Record(Record),
    /// A step's log grew.
    Output {
        /// The build.
        build: BuildId,
        /// The step.
        step: StepIndex,
    },
}

/// Where a build stands, for a follower.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The request, when the target was a request.
    pub request: Option<RequestInfo>,
    /// The build, once there is one.
    pub build: Option<BuildDetail>,
}
