//! The master loop: the single owner of the core and the store.
//!
//! Connection tasks send [`Command`]s here; each command is one core event,
//! its effects are written to the store in one transaction, and only then
//! are workers told and clients answered. Nothing else touches the core, so
//! dispatch, reload and step ends are strictly ordered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::daemon::config_read;
use crate::daemon::core::{Core, CoreError, Effect, LinkId, Record};
use crate::daemon::local_workers::LocalWorkers;
use crate::daemon::logs;
use crate::daemon::messages::{Command, LinkCmd, LinkMeta, Notice, Refusal, Snapshot};
use crate::daemon::store::{Store, StoreError};
use crate::paths::now_ms;
use crate::protocol::{
    BuildDetail, BuildId, DrainMode, ErrorReply, Event, EventKind, MasterToWorker, RefusalKind,
    ReloadReport, Reply, Request, RequestId, RequestInfo, RunningStep, ShutdownMode, StatusFilter,
    StatusReply, StreamTarget, WorkerDetail, WorkerStatus,
};

/// A live worker link, as the master loop knows it.
struct LinkInfo {
    tx: mpsc::UnboundedSender<LinkCmd>,
    worker: String,
    meta: LinkMeta,
    connected_at_ms: u64,
}

/// The master loop's state.
pub struct Master {
    core: Core,
    store: Store,
    links: HashMap<LinkId, LinkInfo>,
    notices: broadcast::Sender<Arc<Notice>>,
    events: broadcast::Sender<Arc<Event>>,
    config_path: Option<PathBuf>,
    /// The `[master]` settings this process started with: restart-only
    /// settings that differ from them still wait for a restart.
    boot_master: crate::config::MasterSettings,
    local: LocalWorkers,
    logs: PathBuf,
    started_at_ms: u64,
    /// Effects of the commands of the current batch, carried out at `flush`.
    pending: Vec<Effect>,
    /// Answers held back until the batch's records are on disk.
    replies: Vec<Deferred>,
    /// Events of the batch, published after its commit.
    staged_events: Vec<Event>,
    /// The loop's own queue, for work done off the loop (reload reads).
    me: Option<mpsc::WeakSender<Command>>,
}

/// Most commands taken into one batch (one transaction).
const MAX_BATCH: usize = 256;

/// An answer held back until its records are committed.
enum Deferred {
    /// To a client request.
    Client(
        oneshot::Sender<Result<Reply, ErrorReply>>,
        Result<Reply, ErrorReply>,
    ),
    /// To a worker's hello.
    Hello(oneshot::Sender<Result<(), Refusal>>, Result<(), Refusal>),
    /// To a reload.
    Reload(
        oneshot::Sender<Result<ReloadReport, ErrorReply>>,
        Result<ReloadReport, ErrorReply>,
    ),
}

impl Master {
    /// Put together a master loop from its parts.
    pub fn new(
        core: Core,
        store: Store,
        notices: broadcast::Sender<Arc<Notice>>,
        events: broadcast::Sender<Arc<Event>>,
        config_path: Option<PathBuf>,
        local: LocalWorkers,
        logs: PathBuf,
    ) -> Self {
        Master {
            boot_master: core.config().master.clone(),
            core,
            store,
            links: HashMap::new(),
            notices,
            events,
            config_path,
            local,
            logs,
            started_at_ms: now_ms(),
            pending: Vec::new(),
            replies: Vec::new(),
            staged_events: Vec::new(),
            me: None,
        }
    }

    /// Give the loop its own queue: work done off the loop (a reload's
    /// file reads) comes back through it.
    pub fn set_queue(&mut self, tx: &mpsc::Sender<Command>) {
        self.me = Some(tx.downgrade());
    }

    /// Carry out the effects of the initial config, start local workers,
    /// then serve commands (and the grace-period timer) until shutdown.
    ///
    /// A plain shutdown leaves every worker and its running steps alone:
    /// links simply close, and the next master on this state dir re-adopts
    /// the builds. A drain shutdown waits for running builds to finish and
    /// then says goodbye to the workers.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Result<(), StoreError> {
        let effects = self.core.take_effects();
        self.execute(effects);
        self.flush()?;
        self.local.sync(self.core.config());
        let mut exit_after_drain = false;
        'serve: loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep(wake) => {
                    self.core.tick(now_ms());
                    let effects = self.core.take_effects();
                    self.execute(effects);
                    self.flush()?;
                    if exit_after_drain && self.drained().await {
                        break;
                    }
                    continue;
                }
            };
            let Some(mut cmd) = first else { break };
            // Group commit: take every command already waiting (up to a
            // bound), run them through the core one by one, then write all
            // their records in one transaction before anyone hears back.
            let mut taken = 0;
            loop {
                match cmd {
                    Command::Shutdown { mode, reply } => {
                        self.flush()?;
                        if self.shutdown(mode, reply, &mut exit_after_drain) {
                            break 'serve;
                        }
                    }
                    other => self.handle(other),
                }
                taken += 1;
                if taken >= MAX_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(next) => cmd = next,
                    Err(_) => break,
                }
            }
            self.flush()?;
            if exit_after_drain && self.drained().await {
                break;
            }
        }
        info!("shutting down");
        crate::daemon::notify::stopping();
        self.local.detach();
        Ok(())
    }

    /// After `shutdown --drain`: once no build runs, say goodbye to the
    /// workers, stop the local ones, and tell the loop to end.
    async fn drained(&mut self) -> bool {
        if self.core.running_builds().next().is_some() {
            return false;
        }
        info!("drained: no build running");
        for (_, LinkInfo { tx, .. }) in self.links.drain() {
            let _ = tx.send(LinkCmd::Close("the master shut down after draining".into()));
        }
        self.local.stop_all().await;
        true
    }

    /// `bbctl shutdown` in its three modes; true when the loop must end now.
    fn shutdown(
        &mut self,
        mode: ShutdownMode,
        reply: Option<oneshot::Sender<Result<Reply, ErrorReply>>>,
        exit_after_drain: &mut bool,
    ) -> bool {
        let answer = match mode {
            ShutdownMode::Now => Ok(Reply::Done {
                message: "the master is shutting down; running steps stay with their workers for the next master".into(),
            }),
            ShutdownMode::Drain => {
                self.core.set_drain(DrainMode::Shutdown, true, now_ms());
                self.emit(EventKind::MasterDraining {
                    draining: true,
                    mode: DrainMode::Shutdown,
                });
                *exit_after_drain = true;
                let running = self.core.running_builds().count();
                info!("draining for shutdown: {running} build(s) still running");
                Ok(Reply::Done {
                    message: format!(
                        "draining: no new builds start; {} (`bbctl shutdown --cancel` to stop draining)",
                        drain_exit_words(running)
                    ),
                })
            }
            ShutdownMode::Cancel => {
                let was = std::mem::replace(exit_after_drain, false);
                if was {
                    self.core.set_drain(DrainMode::Shutdown, false, now_ms());
                    self.emit(EventKind::MasterDraining {
                        draining: false,
                        mode: DrainMode::Shutdown,
                    });
                    let effects = self.core.take_effects();
                    self.execute(effects);
                    let message = if self.core.is_draining() {
                        "drain for shutdown cancelled; the master goes on, still draining for maintenance (`bbctl undrain` to start builds)"
                    } else {
                        "drain cancelled; the master goes on"
                    };
                    Ok(Reply::Done {
                        message: message.into(),
                    })
                } else {
                    Err(ErrorReply::rejected("the master is not draining"))
                }
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
        mode == ShutdownMode::Now
    }

    /// `status`, with builders (and the workers and running builds that go
    /// with them) filtered on the master.
    fn status(&self, filter: &StatusFilter, now: u64) -> StatusReply {
        let all = self.core.builder_status();
        let builders_total = all.len() as u32;
        let queued_total = all.iter().map(|b| b.queued).sum();
        let mut builders: Vec<_> = all
            .into_iter()
            .filter(|b| filter.admits(&b.name, &b.state))
            .collect();
        if let Some(limit) = filter.limit {
            builders.truncate(limit as usize);
        }
        let mut workers = self.worker_status();
        let mut running = self.core.running_status();
        if !filter.is_empty() {
            let shown: std::collections::HashSet<&str> =
                builders.iter().map(|b| b.name.as_str()).collect();
            workers.retain(|w| w.builders.iter().any(|b| shown.contains(b.as_str())));
            running.retain(|r| shown.contains(r.builder.as_str()));
        }
        StatusReply {
            master_pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            now_ms: now,
            generation: self.core.generation(),
            config_hash: self.core.config().hash.clone(),
            config_origin: self.core.config().origin.clone(),
            builders,
            workers,
            running,
            draining: self.core.is_draining(),
            drain_mode: self.core.drain_mode(),
            builders_total,
            queued_total,
            // Filled in by the control connection from the retention task.
            disk: None,
        }
    }

    /// `bbctl drain` / `undrain`, for the master or one worker.
    fn drain(
        &mut self,
        worker: Option<String>,
        drain: bool,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        let verb = if drain {
            "draining"
        } else {
            "no longer draining"
        };
        match worker {
            Some(name) => {
                self.core
                    .set_worker_paused(&name, drain, now)
                    .map_err(|e| self.explain(e))?;
                self.emit(if drain {
                    EventKind::WorkerDraining {
                        worker: name.clone(),
                    }
                } else {
                    EventKind::WorkerUndrained {
                        worker: name.clone(),
                    }
                });
                let effects = self.core.take_effects();
                self.execute(effects);
                Ok(Reply::Done {
                    message: format!(
                        "worker {name} is {verb} ({} build(s) running on it)",
                        self.core.builds_on(&name)
                    ),
                })
            }
            None => {
                // `undrain` ends a maintenance drain only: a drain for
                // shutdown is ended by `shutdown --cancel`, so that the
                // master never stays set to exit while it starts builds.
                if !drain && self.core.drain_mode() == Some(DrainMode::Shutdown) {
                    return Err(ErrorReply::rejected(
                        "the master is draining for shutdown; `bbctl shutdown --cancel` stops that",
                    ));
                }
                self.core.set_drain(DrainMode::Maintenance, drain, now);
                self.emit(EventKind::MasterDraining {
                    draining: drain,
                    mode: DrainMode::Maintenance,
                });
                let effects = self.core.take_effects();
                self.execute(effects);
                let running = self.core.running_builds().count();
                let message = if drain && self.core.drain_mode() == Some(DrainMode::Shutdown) {
                    format!(
                        "the master is draining for maintenance and for shutdown ({running} build(s) running)"
                    )
                } else if drain {
                    format!(
                        "the master is draining for maintenance ({running} build(s) running): requests are queued, none starts until `bbctl undrain`"
                    )
                } else {
                    format!("the master is no longer draining ({running} build(s) running)")
                };
                Ok(Reply::Done { message })
            }
        }
    }

    /// The core's worker status, with why each local worker last failed to
    /// start or exited (which only the shell knows).
    fn worker_status(&self) -> Vec<WorkerStatus> {
        let mut workers = self.core.worker_status();
        for w in workers.iter_mut().filter(|w| w.local) {
            w.last_error = self.local.last_error(&w.name);
        }
        workers
    }

    /// Worker status joined with what each live link told us.
    fn worker_details(&self) -> Vec<WorkerDetail> {
        self.worker_status()
            .into_iter()
            .map(|status| {
                let link = self.links.values().find(|l| l.worker == status.name);
                WorkerDetail {
                    connected_since_ms: link.map(|l| l.connected_at_ms),
                    last_seen_ms: link.map(|l| l.meta.last_seen_ms.load(Ordering::Relaxed)),
                    software: link.map(|l| l.meta.software.clone()),
                    host: link.and_then(|l| l.meta.host.clone()),
                    pid: link.and_then(|l| l.meta.pid),
                    status,
                }
            })
            .collect()
    }

    /// Tell event subscribers (`bbctl events`, `bbctl watch`).
    /// Events wait for the batch's commit like everything else, and go out
    /// in the order things happened.
    fn emit(&mut self, kind: EventKind) {
        let event = Event {
            at_ms: now_ms(),
            generation: self.core.generation(),
            kind,
        };
        self.staged_events.push(event);
    }

    /// How long the loop may sleep before the core needs a tick.
    fn next_wake(&self) -> std::time::Duration {
        let max = std::time::Duration::from_secs(3600);
        match self.core.next_deadline() {
            Some(at) => std::time::Duration::from_millis(at.saturating_sub(now_ms())).min(max),
            None => max,
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Client { request, reply } => {
                let answer = self.client_request(request);
                self.replies.push(Deferred::Client(reply, answer));
            }
            Command::Snapshot { target, reply } => {
                let _ = reply.send(self.snapshot(&target));
            }
            Command::Config { reply } => {
                let _ = reply.send(Arc::clone(self.core.config()));
            }
            Command::WorkerHello {
                name,
                secret,
                held,
                meta,
                link,
                tx,
                reply,
            } => {
                let answer = self.attach_worker(&name, &secret, &held, link);
                if answer.is_ok() {
                    self.links.insert(
                        link,
                        LinkInfo {
                            tx,
                            worker: name.clone(),
                            meta,
                            connected_at_ms: now_ms(),
                        },
                    );
                    info!(worker = %name, link, "worker connected");
                    self.emit(EventKind::WorkerConnected {
                        worker: name.clone(),
                    });
                }
                self.replies.push(Deferred::Hello(reply, answer));
                let effects = self.core.take_effects();
                self.execute(effects);
            }
            Command::StepEnded {
                link,
                build,
                step,
                end,
            } => {
                if let Err(e) = self.core.step_ended(link, build, step, end, now_ms()) {
                    warn!("ignored a step report: {e}");
                }
                let effects = self.core.take_effects();
                self.execute(effects);
            }
            Command::WorkerSilent { link } => {
                if let Some(info) = self.links.get(&link)
                    && self
                        .core
                        .config()
                        .worker(&info.worker)
                        .is_some_and(|def| def.local)
                {
                    self.local.kill_frozen(&info.worker);
                }
            }
            Command::WorkerGone { link } => {
                let known = self.links.remove(&link).is_some();
                if let Some(name) = self.core.link_worker(link).map(str::to_string)
                    && known
                {
                    info!(worker = %name, link, "worker disconnected");
                    self.emit(EventKind::WorkerLost {
                        worker: name,
                        reason: "connection lost".into(),
                    });
                }
                self.core.worker_lost(link, now_ms());
                let effects = self.core.take_effects();
                self.execute(effects);
            }
            Command::Reload {
                dry_run,
                config,
                reply,
            } => {
                // Files are read off the loop, in bounded time; the answer
                // comes back as `ReloadRead`.
                let path = config.or_else(|| self.config_path.clone());
                match self.me.as_ref().and_then(mpsc::WeakSender::upgrade) {
                    Some(me) => {
                        tokio::spawn(async move {
                            let config =
                                config_read::load(path.as_deref(), config_read::READ_TIMEOUT)
                                    .await
                                    .map(Box::new);
                            let read = Command::ReloadRead {
                                dry_run,
                                path,
                                config,
                                reply,
                            };
                            let _ = me.send(read).await;
                        });
                    }
                    None => {
                        let answer = Err(ErrorReply::failed("the master is shutting down"));
                        if let Some(reply) = reply {
                            self.replies.push(Deferred::Reload(reply, answer));
                        }
                    }
                }
            }
            Command::ReloadRead {
                dry_run,
                path,
                config,
                reply,
            } => {
                let answer = self.reload(dry_run, path, config.map(|c| *c));
                match (&answer, reply) {
                    (_, Some(reply)) => self.replies.push(Deferred::Reload(reply, answer)),
                    (Ok(report), None) => info!("reload applied: {}", reload_summary(report)),
                    (Err(e), None) => error!("reload rejected: {}", e.message),
                }
            }
            Command::LinkOf { worker, reply } => {
                let tx = match self.links.values().find(|l| l.worker == worker) {
                    Some(l) => Ok(l.tx.clone()),
                    None if self.core.config().worker(&worker).is_none() => {
                        Err(self.explain(CoreError::UnknownWorker(worker.clone())))
                    }
                    None => Err(ErrorReply::failed(format!(
                        "worker `{worker}` is not connected"
                    ))),
                };
                let _ = reply.send(tx);
            }
            Command::Artifact {
                build,
                artifact,
                reply,
            } => {
                let _ = reply.send(
                    self.store
                        .add_artifact(build, &artifact)
                        .map_err(|e| e.to_string()),
                );
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn attach_worker(
        &mut self,
        name: &str,
        secret: &str,
        held: &[RunningStep],
        link: LinkId,
    ) -> Result<(), Refusal> {
        let Some(def) = self.core.config().worker(name) else {
            return Err(Refusal::new(
                RefusalKind::UnknownWorker,
                format!("no worker named `{name}` in the master's config"),
            ));
        };
        let expected = if def.local {
            self.local.secret(name)
        } else {
            def.secret.as_ref().map(|s| s.0.clone())
        };
        let ok = expected.is_some_and(|e| constant_time_eq(e.as_bytes(), secret.as_bytes()));
        if !ok {
            return Err(Refusal::new(
                RefusalKind::WrongSecret,
                format!("wrong secret for worker `{name}`"),
            ));
        }
        self.core
            .worker_connected(name, link, held, now_ms())
            .map_err(|e| {
                let kind = match e {
                    CoreError::WorkerAlreadyConnected(_) => RefusalKind::AlreadyConnected,
                    CoreError::WorkerRemoved(_) => RefusalKind::Removed,
                    CoreError::UnknownWorker(_) => RefusalKind::UnknownWorker,
                    _ => RefusalKind::Other,
                };
                Refusal::new(kind, e.to_string())
            })
    }

    fn client_request(&mut self, request: Request) -> Result<Reply, ErrorReply> {
        let now = now_ms();
        match request {
            Request::Status(filter) => {
                if let Some(name) = &filter.builder
                    && !name.ends_with('*')
                    && !self.core.has_builder(name)
                {
                    return Err(self.explain(CoreError::UnknownBuilder(name.clone())));
                }
                Ok(Reply::Status(self.status(&filter, now)))
            }
            Request::ForceBuild {
                builder,
                reason,
                properties,
                priority,
            } => {
                let id = self
                    .core
                    .force_build_with_priority(&builder, reason, properties, priority, now)
                    .map_err(|e| self.explain(e))?;
                // The id is told only once the request is on disk (see
                // `flush`, which takes it back if the write fails).
                let effects = self.core.take_effects();
                self.execute(effects);
                Ok(Reply::Queued { request_id: id })
            }
            Request::Queue { builder } => {
                if let Some(b) = &builder
                    && !self.core.has_builder(b)
                {
                    return Err(self.explain(CoreError::UnknownBuilder(b.clone())));
                }
                Ok(Reply::Queue(self.core.queue_status(builder.as_deref())))
            }
            Request::Workers => Ok(Reply::Workers(self.worker_details())),
            Request::Drain { worker, drain } => self.drain(worker, drain, now),
            Request::Builds { builder, limit } => {
                let builds = self
                    .store
                    .builds(builder.as_deref(), limit)
                    .map_err(|e| ErrorReply::failed(e.to_string()))?;
                // A builder that neither exists nor ever built is a typo.
                if let Some(b) = &builder
                    && builds.is_empty()
                    && !self.core.has_builder(b)
                {
                    return Err(self.explain(CoreError::UnknownBuilder(b.clone())));
                }
                Ok(Reply::Builds(builds))
            }
            Request::Build { build } => self.build_detail(build).map(Reply::Build),
            Request::RequestInfo { request } => self.request_info(request).map(Reply::Request),
            Request::Cancel { request } => {
                match self
                    .core
                    .cancel_request(request, "cancelled by `bbctl cancel`", now)
                {
                    Ok(()) => {
                        let effects = self.core.take_effects();
                        self.execute(effects);
                        Ok(Reply::Done {
                            message: format!("request r{request} cancelled"),
                        })
                    }
                    Err(CoreError::RequestNotLive(_)) => {
                        let info = self.request_info(request)?;
                        Err(ErrorReply::rejected(format!(
                            "request r{request} is already {}",
                            info.state
                        )))
                    }
                    Err(e) => Err(core_error(e)),
                }
            }
            Request::Stop { build } => {
                match self.core.stop_build(build, "stopped by `bbctl stop`", now) {
                    Ok(()) => {
                        let effects = self.core.take_effects();
                        self.execute(effects);
                        // Say whose build it is: request and build ids differ.
                        let of = self
                            .build_detail(build)
                            .map(|d| format!(" (request r{})", d.summary.request_id))
                            .unwrap_or_default();
                        Ok(Reply::Done {
                            message: format!("build {build}{of} is stopping"),
                        })
                    }
                    Err(CoreError::BuildNotRunning(_)) => {
                        let detail = self.build_detail(build)?;
                        Err(ErrorReply::rejected(format!(
                            "build {build} already finished ({})",
                            detail
                                .summary
                                .result
                                .map(|r| r.as_str())
                                .unwrap_or("unknown")
                        )))
                    }
                    Err(e) => Err(core_error(e)),
                }
            }
            Request::Artifacts { build } => {
                crate::daemon::transfer::list_artifacts(&self.store, build).map(Reply::Artifacts)
            }
            Request::Stream(_)
            | Request::Shutdown { .. }
            | Request::Events
            | Request::Artifact { .. }
            | Request::Reload { .. }
            | Request::Prune { .. }
            | Request::Ping { .. } => Err(ErrorReply::rejected(
                "this request is handled by the connection, not the master loop",
            )),
        }
    }

    /// Validate the whole file, then apply it as one core event; an
    /// invalid file changes nothing.
    fn reload(
        &mut self,
        dry_run: bool,
        path: Option<PathBuf>,
        config: Result<Config, String>,
    ) -> Result<ReloadReport, ErrorReply> {
        if !dry_run {
            crate::daemon::notify::reloading();
        }
        let answer = self.reload_from(dry_run, path, config);
        if !dry_run {
            crate::daemon::notify::ready();
        }
        answer
    }

    fn reload_from(
        &mut self,
        dry_run: bool,
        path: Option<PathBuf>,
        config: Result<Config, String>,
    ) -> Result<ReloadReport, ErrorReply> {
        let config: Config = match config {
            Ok(config) => config,
            Err(e) => {
                if !dry_run {
                    self.emit(EventKind::ReloadRejected { error: e.clone() });
                }
                return Err(ErrorReply::rejected(e));
            }
        };
        for warning in &config.warnings {
            warn!("{warning}");
        }
        let master_settings = config.master.clone();
        let warnings = config.warnings.clone();
        let mut report = self.core.reload(Arc::new(config), now_ms(), dry_run);
        report.warnings = warnings;
        // Against what this process started with, not the last reload: a
        // restart-only change waits for a restart until one happens.
        report.needs_restart =
            crate::daemon::core::restart_only_changes(&self.boot_master, &master_settings);
        if !dry_run {
            if report.generation_after != report.generation_before {
                self.emit(EventKind::ReloadApplied {
                    generation_before: report.generation_before,
                    generation_after: report.generation_after,
                    config_hash: report.config_hash.clone(),
                });
            }
            for worker in &report.workers_draining {
                self.emit(EventKind::WorkerDraining {
                    worker: worker.clone(),
                });
            }
            self.config_path = path;
            let effects = self.core.take_effects();
            self.execute(effects);
            self.local.sync(self.core.config());
        }
        Ok(report)
    }

    /// A core refusal as a client error; a name not found comes with the
    /// closest names of that kind ("did you mean").
    fn explain(&self, e: CoreError) -> ErrorReply {
        let config = self.core.config();
        let hint = match &e {
            CoreError::UnknownBuilder(name) => {
                crate::suggest::did_you_mean(name, config.builders.iter().map(|b| b.name.as_str()))
            }
            CoreError::UnknownWorker(name) => {
                crate::suggest::did_you_mean(name, config.workers.iter().map(|w| w.name.as_str()))
            }
            _ => String::new(),
        };
        let mut reply = core_error(e);
        reply.message.push_str(&hint);
        reply
    }

    fn build_detail(&self, build: BuildId) -> Result<BuildDetail, ErrorReply> {
        let mut detail = self
            .store
            .build(build)
            .map_err(|e| ErrorReply::failed(e.to_string()))?
            .ok_or_else(|| ErrorReply::not_found(format!("no build {build}")))?;
        for step in &mut detail.steps {
            step.log_bytes = logs::log_len(&logs::step_log_path(&self.logs, build, step.index));
        }
        Ok(detail)
    }

    fn request_info(&self, request: RequestId) -> Result<RequestInfo, ErrorReply> {
        self.store
            .request(request)
            .map_err(|e| ErrorReply::failed(e.to_string()))?
            .ok_or_else(|| ErrorReply::not_found(format!("no request r{request}")))
    }

    fn snapshot(&self, target: &StreamTarget) -> Result<Snapshot, ErrorReply> {
        let (request, build) = match target {
            StreamTarget::Request(id) => {
                let info = self.request_info(*id)?;
                let build = info.build;
                (Some(info), build)
            }
            StreamTarget::Build(id) => (None, Some(*id)),
            StreamTarget::Latest => {
                let latest = self
                    .store
                    .latest_build()
                    .map_err(|e| ErrorReply::failed(e.to_string()))?
                    .ok_or_else(|| ErrorReply::not_found("no builds yet"))?;
                (None, Some(latest))
            }
        };
        let build = build.map(|b| self.build_detail(b)).transpose()?;
        Ok(Snapshot { request, build })
    }

    /// Hold the effects of one core event for the batch's `flush`.
    fn execute(&mut self, effects: Vec<Effect>) {
        for effect in &effects {
            match effect {
                Effect::Record(record) => {
                    if let Some(kind) = event_of(record) {
                        self.emit(kind);
                    }
                }
                // A link the master closes is a worker leaving: say so
                // here, as its `WorkerGone` will find the link forgotten.
                Effect::CloseLink { link, reason } => {
                    if let Some(info) = self.links.get(link) {
                        let worker = info.worker.clone();
                        self.emit(EventKind::WorkerLost {
                            worker,
                            reason: reason.clone(),
                        });
                    }
                }
                Effect::ToWorker { .. } => {}
            }
        }
        self.pending.extend(effects);
    }

    /// Write the batch's records in one transaction, then tell workers and
    /// followers, then answer. If the write fails (disk full, read-only,
    /// I/O error), nothing of the batch is told to anyone: every answer
    /// becomes the error, and the master stops, as a plain shutdown would.
    /// The disk is the truth; the next master starts from it, re-adopting
    /// the running builds, so nothing accepted is lost.
    fn flush(&mut self) -> Result<(), StoreError> {
        let effects = std::mem::take(&mut self.pending);
        let replies = std::mem::take(&mut self.replies);
        let events = std::mem::take(&mut self.staged_events);
        let records: Vec<&Record> = effects.iter().filter_map(record_of).collect();
        if let Err(e) = self.store.apply(&records) {
            error!(
                "could not record {} change(s): {e}; stopping",
                records.len()
            );
            let why = format!("the master could not record this and is stopping: {e}");
            for deferred in replies {
                match deferred {
                    Deferred::Client(tx, _) => {
                        let _ = tx.send(Err(ErrorReply::failed(why.clone())));
                    }
                    Deferred::Hello(tx, _) => {
                        let _ = tx.send(Err(Refusal::new(RefusalKind::Other, why.clone())));
                    }
                    Deferred::Reload(tx, _) => {
                        let _ = tx.send(Err(ErrorReply::failed(why.clone())));
                    }
                }
            }
            return Err(e);
        }
        self.send(effects);
        for event in events {
            let _ = self.events.send(Arc::new(event));
        }
        for deferred in replies {
            match deferred {
                Deferred::Client(tx, answer) => {
                    let _ = tx.send(answer);
                }
                Deferred::Hello(tx, answer) => {
                    let _ = tx.send(answer);
                }
                Deferred::Reload(tx, answer) => {
                    let _ = tx.send(answer);
                }
            }
        }
        Ok(())
    }

    /// Tell followers and workers, after the records are written.
    fn send(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Record(record) => {
                    let _ = self.notices.send(Arc::new(Notice::Record(record)));
                }
                Effect::ToWorker { link, mut msg } => match self.links.get(&link) {
                    Some(LinkInfo { tx, worker, .. }) => {
                        if let MasterToWorker::Abandon { build, step } = &msg {
                            warn!(
                                worker = %worker,
                                build,
                                step,
                                "worker came back still running build {build} step {step}, which ended or was retried elsewhere meanwhile: told it to kill the step's process group now"
                            );
                        }
                        // The core does not read files: the shell tells a
                        // resuming worker how much output is already kept.
                        if let MasterToWorker::Resume {
                            build,
                            step,
                            offset,
                        } = &mut msg
                        {
                            *offset =
                                logs::log_len(&logs::step_log_path(&self.logs, *build, *step));
                        }
                        let _ = tx.send(LinkCmd::Send(msg));
                    }
                    None => warn!(link, "message for a link that is gone"),
                },
                Effect::CloseLink { link, reason } => {
                    if let Some(LinkInfo { tx, .. }) = self.links.remove(&link) {
                        info!(link, "closing worker link: {reason}");
                        let _ = tx.send(LinkCmd::Close(reason));
                    }
                }
            }
        }
    }
}

/// The event a record means for watchers, if any.
fn event_of(record: &Record) -> Option<EventKind> {
    Some(match record {
        Record::RequestQueued {
            request, builder, ..
        } => EventKind::BuildQueued {
            request: *request,
            builder: builder.clone(),
        },
        Record::RequestCancelled {
            request, reason, ..
        } => EventKind::RequestCancelled {
            request: *request,
            reason: reason.clone(),
        },
        Record::BuildStarted {
            build,
            request,
            builder,
            worker,
            ..
        } => EventKind::BuildStarted {
            build: *build,
            request: *request,
            builder: builder.clone(),
            worker: worker.clone(),
        },
        Record::StepStarted {
            build, step, name, ..
        } => EventKind::StepStarted {
            build: *build,
            step: *step,
            name: name.clone(),
        },
        Record::StepFinished {
            build,
            step,
            result,
            reason,
            ..
        } => EventKind::StepFinished {
            build: *build,
            step: *step,
            result: *result,
            reason: reason.clone(),
        },
        Record::BuildFinished {
            build,
            request,
            result,
            reason,
            ..
        } => EventKind::BuildFinished {
            build: *build,
            request: *request,
            result: *result,
            reason: reason.clone(),
        },
        Record::BuildRetried {
            build,
            request,
            reason,
            ..
        } => EventKind::BuildRetried {
            build: *build,
            request: *request,
            reason: reason.clone(),
        },
        Record::RequestCollapsed {
            request,
            into,
            build,
            ..
        } => EventKind::RequestSkipped {
            request: *request,
            into: *into,
            build: *build,
        },
        Record::BuilderRenamed { .. } | Record::GenerationApplied { .. } => return None,
    })
}

fn record_of(effect: &Effect) -> Option<&Record> {
    match effect {
        Effect::Record(r) => Some(r),
        _ => None,
    }
}

/// A client error for a core refusal.
fn core_error(e: CoreError) -> ErrorReply {
    match e {
        CoreError::UnknownBuilder(_)
        | CoreError::RenamedBuilder { .. }
        | CoreError::UnknownWorker(_) => ErrorReply::not_found(e.to_string()),
        _ => ErrorReply::rejected(e.to_string()),
    }
}

/// When a `shutdown --drain` master exits, in words for 0, 1 or n builds.
fn drain_exit_words(running: usize) -> String {
    match running {
        0 => "no build is running, so the master exits now".into(),
        1 => "the master exits once the running build finishes".into(),
        n => format!("the master exits once the {n} running builds finish"),
    }
}

/// Compare secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// One line saying what a reload did, for the log.
pub fn reload_summary(r: &ReloadReport) -> String {
    format!(
        "generation {} -> {}; builders +{} ~{} -{} renamed {}; workers +{} ~{} -{}; {} request(s) cancelled; {} build(s) on older generations{}",
        r.generation_before,
        r.generation_after,
        r.builders_added.len(),
        r.builders_changed.len(),
        r.builders_removed.len(),
        r.builders_renamed.len(),
        r.workers_added.len(),
        r.workers_changed.len(),
        r.workers_removed.len(),
        r.requests_cancelled.len(),
        r.builds_on_old_generations.len(),
        if r.needs_restart.is_empty() {
            String::new()
        } else {
            format!("; waiting for a restart: {}", r.needs_restart.join(", "))
        }
    )
}

#[cfg(test)]
mod drain_words_tests {
    #[test]
    fn drain_exit_reads_right_for_0_1_n() {
        assert_eq!(
            super::drain_exit_words(0),
            "no build is running, so the master exits now"
        );
        assert_eq!(
            super::drain_exit_words(1),
            "the master exits once the running build finishes"
        );
        assert_eq!(
            super::drain_exit_words(3),
            "the master exits once the 3 running builds finish"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
