//! The master loop: the single owner of the core and the store.
//!
//! Adapters reach it through the `MasterHandle` (handle/), which sends [`Command`]s here; each command is one core event, handled
//! by its handler in `handlers/`. After every command the loop itself takes
//! the core's effects ([`Master::absorb`]): they are written to the store in
//! one transaction per batch, and only then are workers told and clients
//! answered. Nothing else touches the core, so dispatch, reload and step
//! ends are strictly ordered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use crate::daemon::core::{Core, Effect, LinkId, Record};
use crate::daemon::local_workers::LocalWorkers;
use crate::daemon::messages::{Command, LinkCmd, LinkMeta, Notice, Refusal};
use crate::daemon::store::{BoxedStore, StoreError};
use crate::paths::now_ms;
use crate::protocol::{
    ArtifactInfo, BuildId, ChangeId, ErrorReply, Event, EventKind, RefusalKind, ReloadReport,
    Reply, SourceStamp, StepIndex,
};

/// A live worker link, as the master loop knows it.
pub(super) struct LinkInfo {
    pub(super) tx: mpsc::UnboundedSender<LinkCmd>,
    pub(super) worker: String,
    pub(super) meta: LinkMeta,
    pub(super) connected_at_ms: u64,
}

/// The master loop's state.
pub struct Master {
    pub(super) core: Core,
    /// The store, whichever the backend (`store::open`).
    pub(super) store: BoxedStore,
    pub(super) links: HashMap<LinkId, LinkInfo>,
    pub(super) notices: broadcast::Sender<Arc<Notice>>,
    pub(super) events: broadcast::Sender<Arc<Event>>,
    pub(super) config_path: Option<PathBuf>,
    /// The `[master]` settings this process started with: restart-only
    /// settings that differ from them still wait for a restart.
    pub(super) boot_master: crate::config::MasterSettings,
    pub(super) local: LocalWorkers,
    pub(super) started_at_ms: u64,
    /// Effects of the commands of the current batch, carried out at `flush`.
    pub(super) pending: Vec<Effect>,
    /// Answers held back until the batch's records are on disk.
    pub(super) replies: Vec<Deferred>,
    /// Events of the batch, published after its commit.
    pub(super) staged_events: Vec<Event>,
    /// Uploaded files to record in the batch's transaction, and who waits
    /// to hear whether they were.
    pub(super) artifacts: Vec<PendingArtifact>,
    /// The loop's own queue, for work done off the loop (reload reads).
    pub(super) me: Option<mpsc::WeakSender<Command>>,
    /// The config in force, for the shell's parts that follow reloads
    /// (the worker listeners).
    pub(super) config_tx: tokio::sync::watch::Sender<Arc<crate::config::Config>>,
    /// The source stamps of running builds, for their `build_finished`
    /// event: the core forgets a request when its build ends.
    pub(super) stamps: HashMap<BuildId, SourceStamp>,
}

/// An uploaded file to record with the batch, and where its answer goes.
pub(super) struct PendingArtifact {
    pub(super) build: BuildId,
    pub(super) artifact: ArtifactInfo,
    pub(super) reply: oneshot::Sender<Result<(), String>>,
}

/// Most commands taken into one batch (one transaction).
const MAX_BATCH: usize = 256;

/// An answer held back until its records are committed.
pub(super) enum Deferred {
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
    /// To a batch of changes.
    Changes(
        oneshot::Sender<Result<Vec<ChangeId>, ErrorReply>>,
        Result<Vec<ChangeId>, ErrorReply>,
    ),
    /// To a worker's step end: the receipt that lets it forget the step,
    /// sent only once the end is committed (docs/protocol.md).
    EndKept {
        /// The link the end came on.
        link: LinkId,
        /// The build.
        build: BuildId,
        /// The step.
        step: StepIndex,
    },
}

impl Master {
    /// Put together a master loop from its parts.
    pub fn new(
        core: Core,
        store: BoxedStore,
        notices: broadcast::Sender<Arc<Notice>>,
        events: broadcast::Sender<Arc<Event>>,
        config_path: Option<PathBuf>,
        local: LocalWorkers,
    ) -> Self {
        let config_tx = tokio::sync::watch::Sender::new(Arc::clone(core.config()));
        // Builds re-adopted after a restart: their stamps come from the store.
        let stamps = core
            .running_builds()
            .filter_map(|b| {
                let source = core.live_request(b.request)?.source.clone()?;
                Some((b.id, source))
            })
            .collect();
        Master {
            boot_master: core.config().master.clone(),
            core,
            store,
            links: HashMap::new(),
            notices,
            events,
            config_path,
            local,
            started_at_ms: now_ms(),
            pending: Vec::new(),
            replies: Vec::new(),
            staged_events: Vec::new(),
            artifacts: Vec::new(),
            me: None,
            config_tx,
            stamps,
        }
    }

    /// The config in force, updated after every reload applied (even one
    /// that changed only files the config reads, such as certificates).
    pub fn config_watch(&self) -> tokio::sync::watch::Receiver<Arc<crate::config::Config>> {
        self.config_tx.subscribe()
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
        self.absorb();
        self.flush()?;
        self.local.sync(self.core.config());
        let mut exit_after_drain = false;
        'serve: loop {
            let wake = self.next_wake();
            let first = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep(wake) => {
                    self.core.tick(now_ms());
                    self.absorb();
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
                        let now = self.shutdown(mode, reply, &mut exit_after_drain);
                        self.absorb();
                        if now {
                            break 'serve;
                        }
                    }
                    other => {
                        self.handle(other);
                        self.absorb();
                    }
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
        if let Err(e) = self.store.checkpoint() {
            warn!("could not fold the write-ahead log into the database at exit: {e}");
        }
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

    /// Tell event subscribers (`bbctl events`, `bbctl watch`).
    /// Events wait for the batch's commit like everything else, and go out
    /// in the order things happened.
    pub(super) fn emit(&mut self, kind: EventKind) {
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

    /// Take every effect the core has pushed so far and hold it for the
    /// batch's `flush`. The loop calls this after every command and tick,
    /// in one place, so that no handler can forget it and let effects slip
    /// into the next batch.
    fn absorb(&mut self) {
        let effects = self.core.take_effects();
        self.execute(effects);
    }

    /// Hold the effects of one core event for the batch's `flush`.
    fn execute(&mut self, effects: Vec<Effect>) {
        for effect in &effects {
            match effect {
                Effect::Record(record) => {
                    let source = self.source_of(record);
                    if let Some(kind) = event_of(record, source) {
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

    /// The source stamp the event of `record` carries: a queued request's
    /// own; a build's, looked up at its start and remembered until its end
    /// (by then the core has forgotten the request).
    fn source_of(&mut self, record: &Record) -> Option<SourceStamp> {
        match record {
            Record::RequestQueued { source, .. } => source.clone(),
            Record::BuildStarted { build, request, .. } => {
                let source = self.core.live_request(*request)?.source.clone()?;
                self.stamps.insert(*build, source.clone());
                Some(source)
            }
            Record::BuildFinished { build, request, .. } => {
                self.stamps.remove(build).or_else(|| {
                    self.core
                        .live_request(*request)
                        .and_then(|r| r.source.clone())
                })
            }
            Record::BuildRetried { build, .. } => {
                self.stamps.remove(build);
                None
            }
            _ => None,
        }
    }

    /// Write the batch's records, and the artifacts uploads stored, in one
    /// transaction, then tell workers and followers, then answer. If the write fails (disk full, read-only,
    /// I/O error), nothing of the batch is told to anyone: every answer
    /// becomes the error, and the master stops, as a plain shutdown would.
    /// The disk is the truth; the next master starts from it, re-adopting
    /// the running builds, so nothing accepted is lost.
    fn flush(&mut self) -> Result<(), StoreError> {
        let effects = std::mem::take(&mut self.pending);
        let replies = std::mem::take(&mut self.replies);
        let events = std::mem::take(&mut self.staged_events);
        let artifacts = std::mem::take(&mut self.artifacts);
        let records: Vec<&Record> = effects.iter().filter_map(record_of).collect();
        let files: Vec<_> = artifacts.iter().map(|a| (a.build, &a.artifact)).collect();
        let outcomes = match self.store.apply_batch(&records, &files) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let changes = records.len() + files.len();
                drop(files);
                Self::refuse_all(replies, artifacts, changes, &e);
                return Err(e);
            }
        };
        self.send(effects);
        for event in events {
            let _ = self.events.send(Arc::new(event));
        }
        for (pending, outcome) in artifacts.into_iter().zip(outcomes) {
            let _ = pending.reply.send(outcome.map_err(|e| e.to_string()));
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
                Deferred::Changes(tx, answer) => {
                    let _ = tx.send(answer);
                }
                Deferred::EndKept { link, build, step } => {
                    // A link gone meanwhile: the worker lists the step in
                    // its next hello and the core abandons it there.
                    if let Some(LinkInfo { tx, .. }) = self.links.get(&link) {
                        let _ = tx.send(LinkCmd::EndKept { build, step });
                    }
                }
            }
        }
        Ok(())
    }

    /// The batch could not be written: everyone waiting hears why.
    fn refuse_all(
        replies: Vec<Deferred>,
        artifacts: Vec<PendingArtifact>,
        changes: usize,
        e: &StoreError,
    ) {
        error!("could not record {changes} change(s): {e}; stopping");
        let why = format!("the master could not record this and is stopping: {e}");
        for pending in artifacts {
            let _ = pending.reply.send(Err(why.clone()));
        }
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
                Deferred::Changes(tx, _) => {
                    let _ = tx.send(Err(ErrorReply::failed(why.clone())));
                }
                // Not stored: the worker keeps the end for the next master.
                Deferred::EndKept { .. } => {}
            }
        }
    }

    /// Tell followers and workers, after the records are written.
    fn send(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Record(record) => {
                    let _ = self.notices.send(Arc::new(Notice::Record(record)));
                }
                Effect::ToWorker { link, cmd } => match self.links.get(&link) {
                    Some(LinkInfo { tx, .. }) => {
                        let _ = tx.send(LinkCmd::Send(cmd));
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

/// The event a record means for watchers, if any; `source` is the stamp
/// of the build or request it is about ([`Master::source_of`]).
fn event_of(record: &Record, source: Option<SourceStamp>) -> Option<EventKind> {
    Some(match record {
        Record::RequestQueued {
            request, builder, ..
        } => EventKind::BuildQueued {
            request: *request,
            builder: builder.clone(),
            source,
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
            source,
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
            source,
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
        Record::BuilderRenamed { .. }
        | Record::GenerationApplied { .. }
        | Record::ChangeAdded(_)
        | Record::PollerCursor(_)
        | Record::SchedulerState { .. } => return None,
    })
}

fn record_of(effect: &Effect) -> Option<&Record> {
    match effect {
        Effect::Record(r) => Some(r),
        _ => None,
    }
}
