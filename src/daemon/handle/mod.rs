//! The master's front door: [`MasterHandle`], one async method per thing a
//! client, a worker link or a signal may ask of the master loop.
//!
//! Every adapter (the control socket, worker links, transfers, followers,
//! signals, and the ones to come) talks to the loop through this handle and
//! never builds a [`Command`] or a reply channel by hand. Adding a way in
//! means calling these methods, not learning the loop (see
//! docs/architecture.md).
//!
//! What worker links ask (a hello, a step's end, an upload recorded) is in
//! [`links`]; this master's place among others on a shared store (its
//! role, `masters`, its write lease) in [`seat`].

use std::path::PathBuf;
use std::sync::Arc;

mod links;
mod seat;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::daemon::auth::{self, Ask, Policy, Principal};
use crate::daemon::history::History;
use crate::daemon::messages::{Command, LinkCmd, Notice, Refusal, Snapshot};
use crate::protocol::{
    BuildId, ChangeBatch, ChangeId, ErrorReply, Event, PruneReport, ReloadReport, Reply, Request,
    RequestId, ShutdownMode, SourceStamp, StatusFilter, StreamTarget,
};

/// The git pollers' status by name, as their tasks publish it.
pub type PollerMap =
    Arc<std::sync::RwLock<std::collections::BTreeMap<String, crate::protocol::PollerView>>>;

/// What a caller hears when the master loop is gone.
const GONE: &str = "the master is shutting down";

/// How long `ping` waits for the worker's answer.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn gone() -> ErrorReply {
    ErrorReply::failed(GONE)
}

/// A cloneable way in to the master loop (see the module comment).
#[derive(Clone)]
pub struct MasterHandle {
    tx: mpsc::Sender<Command>,
    notices: broadcast::Sender<Arc<Notice>>,
    events: broadcast::Sender<Arc<Event>>,
    retention: Option<crate::daemon::retention::RetentionHandle>,
    /// The history's reads, answered off the loop.
    history: Option<History>,
    /// Who may ask what (see [`crate::daemon::auth`]).
    policy: Arc<Policy>,
    /// Becomes true once the master loop has ended (see [`Self::shutting_down`]).
    stopping: watch::Receiver<bool>,
    /// What the TCP listeners for remote workers are, for `status`.
    listeners: Option<Arc<std::sync::RwLock<Option<crate::protocol::TlsStatus>>>>,
    /// How the git pollers' last polls went, for `status`.
    pollers: Option<PollerMap>,
    /// Where the IRC bot stands, for `status`.
    irc: Option<Arc<std::sync::RwLock<Option<crate::protocol::IrcStatus>>>>,
    /// This master among others on a shared store (`status`, `masters`).
    seat: Option<crate::daemon::leader::Seat>,
    /// Until when worker links may write logs and artifacts.
    files: crate::daemon::leader::write_lease::WriteLease,
}

impl MasterHandle {
    /// A handle on the loop that reads `tx`, with its broadcast channels.
    pub fn new(
        tx: mpsc::Sender<Command>,
        notices: broadcast::Sender<Arc<Notice>>,
        events: broadcast::Sender<Arc<Event>>,
    ) -> Self {
        MasterHandle {
            tx,
            notices,
            events,
            retention: None,
            history: None,
            listeners: None,
            pollers: None,
            irc: None,
            seat: None,
            files: crate::daemon::leader::write_lease::WriteLease::unlimited(),
            policy: Arc::new(Policy {
                own_uid: nix::unistd::geteuid().as_raw(),
                allowed_uids: Vec::new(),
                allowed_gid: None,
                http_tokens: Default::default(),
                irc: Default::default(),
            }),
            stopping: watch::channel(false).1,
        }
    }

    /// The same handle, told of shutdown through `stopping` (the master
    /// sets it to true when its loop has ended).
    pub fn with_shutdown(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = stopping;
        self
    }

    /// Resolves once the master is shutting down (its loop has ended).
    /// Connection tasks wait on it beside their own work, so that they end
    /// because they were told (mini-redis's explicit shutdown), not when the
    /// process exits. Never resolves for a handle not told of shutdown.
    pub async fn shutting_down(&self) {
        let mut stopping = self.stopping.clone();
        if stopping.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The same handle, deciding by `policy` (the default admits the
    /// master's own user only).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The policy this handle decides by (an adapter derives its own
    /// handle from it, say with the `[irc] authz` in force).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// May `who` do `what`? Every client method asks this first; an
    /// adapter also asks it when a connection opens (`Ask::Connect`).
    pub fn authorize(&self, who: &Principal, what: Ask<'_>) -> Result<(), Refusal> {
        auth::authorize(&self.policy, who, what)
    }

    /// [`Self::authorize`] for one client request, as a client error.
    fn check(&self, who: &Principal, request: &Request) -> Result<(), ErrorReply> {
        self.authorize(who, Ask::Request(request))
            .map_err(|refusal| ErrorReply::rejected(refusal.reason))
    }

    /// The same handle, also showing the git pollers in `status`.
    pub fn with_pollers(mut self, pollers: PollerMap) -> Self {
        self.pollers = Some(pollers);
        self
    }

    /// The same handle, also showing the worker listeners in `status`.
    pub fn with_listeners(
        mut self,
        listeners: Arc<std::sync::RwLock<Option<crate::protocol::TlsStatus>>>,
    ) -> Self {
        self.listeners = Some(listeners);
        self
    }

    /// The same handle, also showing the IRC bot in `status`.
    pub fn with_irc(
        mut self,
        irc: Arc<std::sync::RwLock<Option<crate::protocol::IrcStatus>>>,
    ) -> Self {
        self.irc = Some(irc);
        self
    }

    /// The same handle, also answering `prune` and the disk figures of
    /// `status` from the retention task.
    pub fn with_retention(mut self, retention: crate::daemon::retention::RetentionHandle) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The same handle, answering `builds`, `build`, `request`,
    /// `artifacts` and followers' snapshots from `history`, off the loop.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// The history, or why there is none (a handle built without one).
    fn history(&self) -> Result<&History, ErrorReply> {
        self.history
            .as_ref()
            .ok_or_else(|| ErrorReply::failed("the history is not available here"))
    }

    /// Send `cmd` and wait for the answer on `rx`; `None` if the loop is gone.
    async fn round_trip<T>(&self, cmd: Command, rx: oneshot::Receiver<T>) -> Option<T> {
        self.tx.send(cmd).await.ok()?;
        rx.await.ok()
    }

    /// A client request answered by the loop itself.
    async fn client(&self, who: &Principal, request: Request) -> Result<Reply, ErrorReply> {
        self.check(who, &request)?;
        let (reply, rx) = oneshot::channel();
        self.round_trip(Command::Client { request, reply }, rx)
            .await
            .unwrap_or_else(|| Err(gone()))
    }

    /// `bbctl force-build`: queue a request; answered once it is on disk.
    pub async fn force_build(
        &self,
        who: &Principal,
        builder: String,
        reason: Option<String>,
        properties: std::collections::BTreeMap<String, String>,
        priority: i32,
        source: Option<SourceStamp>,
    ) -> Result<Reply, ErrorReply> {
        self.client(
            who,
            Request::ForceBuild {
                builder,
                reason,
                properties,
                priority,
                source,
            },
        )
        .await
    }

    /// Store changes (`bbctl sendchange`, a poller's batch with its
    /// cursor) and let the schedulers see them; answered with the ids once
    /// the batch is on disk. Who may: `Ask::AddChanges` (local users as
    /// for force-build; a poller as `Principal::ChangeSource`).
    pub async fn add_changes(
        &self,
        who: &Principal,
        batch: ChangeBatch,
    ) -> Result<Vec<ChangeId>, ErrorReply> {
        self.authorize(who, Ask::AddChanges)
            .map_err(|refusal| ErrorReply::rejected(refusal.reason))?;
        let (reply, rx) = oneshot::channel();
        let sent_by = who.label();
        self.round_trip(
            Command::AddChanges {
                batch,
                sent_by,
                reply,
            },
            rx,
        )
        .await
        .unwrap_or_else(|| Err(gone()))
    }

    /// A poller's stored cursors (the last revision seen, by branch), read
    /// from the store off the loop: where a (re)started poller resumes.
    pub async fn poller_cursors(
        &self,
        who: &Principal,
        poller: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ErrorReply> {
        self.authorize(who, Ask::AddChanges)
            .map_err(|refusal| ErrorReply::rejected(refusal.reason))?;
        self.history()?.poller_cursors(poller.to_string()).await
    }

    /// `bbctl changes`: stored changes, newest first, with the builds each
    /// started; read off the loop.
    pub async fn changes(&self, who: &Principal, limit: u32) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::Changes { limit })?;
        self.history()?.changes(limit).await.map(Reply::Changes)
    }

    /// A rebuild (`POST /api/v1/builds/N/rebuild`): a new request for
    /// build N's builder with its properties and source stamp, as `bbctl
    /// rebuild` makes it. Who may: `Ask::Rebuild` (an HTTP token needs
    /// `rebuild` in its `may`, not `force`). The build is read off the loop;
    /// answered (with the builder's name) once the request is on disk.
    pub async fn rebuild(
        &self,
        who: &Principal,
        build: BuildId,
        reason: String,
        priority: i32,
    ) -> Result<(Reply, String), ErrorReply> {
        self.authorize(who, Ask::Rebuild)
            .map_err(|refusal| ErrorReply::rejected(refusal.reason))?;
        let detail = self.history()?.build(build).await?;
        let builder = detail.summary.builder;
        let request = Request::ForceBuild {
            builder: builder.clone(),
            reason: Some(reason),
            properties: detail.properties,
            priority,
            source: detail.summary.source,
        };
        let (reply, rx) = oneshot::channel();
        let reply = self
            .round_trip(Command::Client { request, reply }, rx)
            .await
            .unwrap_or_else(|| Err(gone()))?;
        Ok((reply, builder))
    }

    /// `bbctl cancel`: cancel a queued request.
    pub async fn cancel(&self, who: &Principal, request: RequestId) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Cancel { request }).await
    }

    /// `bbctl stop`: stop a running build.
    pub async fn stop(&self, who: &Principal, build: BuildId) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Stop { build }).await
    }

    /// `bbctl status`, with the disk figures of the retention task.
    pub async fn status(&self, who: &Principal, filter: StatusFilter) -> Result<Reply, ErrorReply> {
        let reply = self.client(who, Request::Status(filter)).await?;
        Ok(match reply {
            Reply::Status(mut status) => {
                status.disk = self.retention.as_ref().and_then(|r| r.usage());
                status.tls = self
                    .listeners
                    .as_ref()
                    .and_then(|l| l.read().unwrap_or_else(|e| e.into_inner()).clone());
                if let Some(pollers) = &self.pollers {
                    status.pollers = pollers
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                }
                status.irc = self
                    .irc
                    .as_ref()
                    .and_then(|i| i.read().unwrap_or_else(|e| e.into_inner()).clone());
                if let Some(seat) = &self.seat {
                    status.leadership = seat.status().await;
                }
                Reply::Status(status)
            }
            other => other,
        })
    }

    /// `bbctl queue`.
    pub async fn queue(
        &self,
        who: &Principal,
        builder: Option<String>,
    ) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Queue { builder }).await
    }

    /// `bbctl locks`: every lock with its holders and waiters.
    pub async fn locks(&self, who: &Principal) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Locks).await
    }

    /// `bbctl workers`.
    pub async fn workers(&self, who: &Principal) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Workers).await
    }

    /// `bbctl drain` / `undrain`, for the master or one worker.
    pub async fn drain(
        &self,
        who: &Principal,
        worker: Option<String>,
        drain: bool,
    ) -> Result<Reply, ErrorReply> {
        self.client(who, Request::Drain { worker, drain }).await
    }

    /// `bbctl builds`: the history, read off the loop. Only when a
    /// builder's history is empty is the loop asked (cheaply) whether the
    /// builder exists at all: a name that never built nor exists is a typo.
    pub async fn builds(
        &self,
        who: &Principal,
        builder: Option<String>,
        limit: u32,
    ) -> Result<Reply, ErrorReply> {
        self.check(
            who,
            &Request::Builds {
                builder: builder.clone(),
                limit,
            },
        )?;
        let builds = self.history()?.builds(builder.clone(), limit).await?;
        if let Some(name) = builder
            && builds.is_empty()
        {
            let (reply, rx) = oneshot::channel();
            self.round_trip(Command::KnownBuilder { name, reply }, rx)
                .await
                .unwrap_or_else(|| Err(gone()))?;
        }
        Ok(Reply::Builds(builds))
    }

    /// `bbctl build`: one build in detail, read off the loop.
    pub async fn build(&self, who: &Principal, build: BuildId) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::Build { build })?;
        self.history()?.build(build).await.map(Reply::Build)
    }

    /// `bbctl request`: one request, read off the loop.
    pub async fn request_info(
        &self,
        who: &Principal,
        request: RequestId,
    ) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::RequestInfo { request })?;
        self.history()?.request(request).await.map(Reply::Request)
    }

    /// `bbctl artifacts`: a build's uploaded files, read off the loop.
    pub async fn artifacts(&self, who: &Principal, build: BuildId) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::Artifacts { build })?;
        self.history()?.artifacts(build).await.map(Reply::Artifacts)
    }

    /// `bbctl reload` (or its dry run), from `config` or the master's file.
    pub async fn reload(
        &self,
        who: &Principal,
        dry_run: bool,
        config: Option<PathBuf>,
    ) -> Result<ReloadReport, ErrorReply> {
        self.check(
            who,
            &Request::Reload {
                dry_run,
                config: config.clone(),
            },
        )?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Reload {
            dry_run,
            config,
            reply: Some(reply),
        };
        self.round_trip(cmd, rx)
            .await
            .unwrap_or_else(|| Err(gone()))
    }

    /// `bbctl shutdown` in one of its modes.
    pub async fn shutdown(&self, who: &Principal, mode: ShutdownMode) -> Result<Reply, ErrorReply> {
        self.check(who, &Request::Shutdown { mode })?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Shutdown {
            mode,
            reply: Some(reply),
        };
        self.round_trip(cmd, rx)
            .await
            .unwrap_or_else(|| Err(gone()))
    }

    /// A reload nobody waits for (SIGHUP: the result is logged); false
    /// when the loop is gone.
    pub async fn reload_unanswered(&self) -> bool {
        let cmd = Command::Reload {
            dry_run: false,
            config: None,
            reply: None,
        };
        self.tx.send(cmd).await.is_ok()
    }

    /// A plain shutdown nobody waits for (SIGTERM, SIGINT); false when the
    /// loop is gone.
    pub async fn shutdown_unanswered(&self) -> bool {
        let cmd = Command::Shutdown {
            mode: ShutdownMode::Now,
            reply: None,
        };
        self.tx.send(cmd).await.is_ok()
    }

    /// `bbctl ping`: time a round trip master -> worker -> master.
    pub async fn ping(&self, who: &Principal, worker: String) -> Result<Reply, ErrorReply> {
        self.check(
            who,
            &Request::Ping {
                worker: worker.clone(),
            },
        )?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::LinkOf {
            worker: worker.clone(),
            reply,
        };
        let (_, link) = self.round_trip(cmd, rx).await.ok_or_else(gone)??;
        let (pong_tx, pong) = oneshot::channel();
        link.send(LinkCmd::Ping(pong_tx))
            .map_err(|_| ErrorReply::failed(format!("worker `{worker}` just disconnected")))?;
        match tokio::time::timeout(PING_TIMEOUT, pong).await {
            Ok(Ok(rtt)) => Ok(Reply::Pong {
                worker,
                round_trip_us: rtt.as_micros() as u64,
            }),
            Ok(Err(_)) => Err(ErrorReply::failed(format!(
                "worker `{worker}` disconnected before answering"
            ))),
            Err(_) => Err(ErrorReply::failed(format!(
                "no answer from worker `{worker}` within {} s",
                PING_TIMEOUT.as_secs()
            ))),
        }
    }

    /// `bbctl prune` (or its dry run), off the master loop.
    pub async fn prune(&self, who: &Principal, dry_run: bool) -> Result<PruneReport, ErrorReply> {
        self.check(who, &Request::Prune { dry_run })?;
        let Some(retention) = &self.retention else {
            // A standby's handle: its loop refuses, naming the leader.
            return match self.client(who, Request::Prune { dry_run }).await {
                Ok(Reply::Pruned(report)) => Ok(report),
                Ok(_) => Err(ErrorReply::failed("pruning is not available here")),
                Err(e) => Err(e),
            };
        };
        let config = self.config().await.ok_or_else(gone)?;
        retention
            .prune(&config.master.retention, dry_run)
            .await
            .map_err(|e| ErrorReply::failed(e.to_string()))
    }

    /// May `who` follow builds (`log`, `force-build --follow`)? Asked once
    /// per stream, before its first [`Self::snapshot`].
    pub fn may_follow(&self, who: &Principal, request: &Request) -> Result<(), ErrorReply> {
        self.check(who, request)
    }

    /// Where a build (or a request's build) stands, for a follower; read
    /// off the loop.
    pub async fn snapshot(&self, target: StreamTarget) -> Result<Snapshot, ErrorReply> {
        self.history()?.snapshot(target).await
    }

    /// The config in force; `None` when the loop is gone.
    pub async fn config(&self) -> Option<Arc<Config>> {
        let (reply, rx) = oneshot::channel();
        self.round_trip(Command::Config { reply }, rx).await
    }

    /// The master's events, from now on (`bbctl events`, `watch`).
    pub fn subscribe_events(
        &self,
        who: &Principal,
    ) -> Result<broadcast::Receiver<Arc<Event>>, ErrorReply> {
        self.check(who, &Request::Events)?;
        Ok(self.events.subscribe())
    }

    /// Build notices (records written, logs grown), from now on.
    pub fn subscribe_notices(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.notices.subscribe()
    }
}

#[cfg(test)]
mod tests;
