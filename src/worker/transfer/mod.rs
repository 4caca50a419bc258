//! The worker's side of `upload` and `download` steps.
//!
//! A transfer step is held like any other step (same table, same resume
//! rules) but, instead of a process, runs [`run_transfer`]: it talks to the
//! master through the step's link (frames go in the link's queue, the
//! master's answers arrive on the step's inbox) and writes a few lines to
//! the step's spool so that the build log says what was moved.
//!
//! Upload: resolve the files (a glob or a directory inside the work dir,
//! every file checked to really be inside it), then for each one
//! `FileBegin`, chunks of at most [`FILE_CHUNK`] bytes with at most
//! [`WINDOW`] unacknowledged, `FileEnd` with the SHA-256, and wait for the
//! master's ack of the whole size (the file is then stored) or a refusal.
//!
//! Download: check the target is inside the work dir, wait for the
//! master's `FileBegin`, write a temp file beside the target, ack as data
//! is written, verify the hash at `FileEnd`, fsync, rename, ack the whole
//! size.
//!
//! A lost link, a stop or a timeout ends the transfer at once; the temp
//! file is deleted (a guard removes it on every way out); files stored
//! before stay.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

mod download;
mod upload;

use download::download;
use upload::upload;

use crate::protocol::{
    FileBegin, FileChunk, FileEnd, MasterToWorker, StepAssignment, StepEnd, WireAction,
    WorkerToMaster,
};
use crate::worker::key::StepKey;
use crate::worker::runner::{StepContext, prepare_workdir};
use crate::worker::sender::{LinkTx, Outgoing, Route};
use crate::worker::spool::{Progress, SpoolWriter, spool_path};
use crate::worker::stop::StopSignal;

/// Why the transfer of a step ended early.
pub(crate) const LOST: &str = "worker lost mid-transfer: the link to the master broke";

/// A transfer message from the master, routed to its step.
#[derive(Debug)]
pub(crate) enum FromMaster {
    /// Upload: bytes of the current file the master has (the whole size:
    /// the file is stored).
    Ack(u64),
    /// The master gave up on this transfer.
    Refused(String),
    /// Download: a file begins.
    Begin(FileBegin),
    /// Download: a piece of it.
    Chunk(FileChunk),
    /// Download: its end.
    End(FileEnd),
}

/// The step and transfer message in `msg`, if it is one.
pub(crate) fn from_master(msg: MasterToWorker) -> Option<(StepKey, FromMaster)> {
    Some(match msg {
        MasterToWorker::FileAck {
            build,
            step,
            received,
        } => ((build, step), FromMaster::Ack(received)),
        MasterToWorker::FileRefused {
            build,
            step,
            reason,
        } => ((build, step), FromMaster::Refused(reason)),
        MasterToWorker::FileBegin(b) => ((b.build, b.step), FromMaster::Begin(b)),
        MasterToWorker::FileChunk(c) => ((c.build, c.step), FromMaster::Chunk(c)),
        MasterToWorker::FileEnd(e) => ((e.build, e.step), FromMaster::End(e)),
        _ => return None,
    })
}

/// Is this assignment a transfer (run by [`run_transfer`], not a process)?
pub(crate) fn is_transfer(a: &StepAssignment) -> bool {
    matches!(
        a.action,
        WireAction::Upload { .. } | WireAction::Download { .. }
    )
}

/// How a transfer ended, if not well.
enum Fail {
    Stopped,
    TimedOut(u64),
    Failed(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Failed(s)
    }
}

/// What a transfer works with.
struct Ctx {
    key: StepKey,
    link: LinkTx,
    route: watch::Receiver<Route>,
    inbox: mpsc::UnboundedReceiver<FromMaster>,
    stop: StopSignal,
    deadline: Option<(Instant, u64)>,
    log: Log,
}

/// The step's spool, for a few lines of log.
struct Log {
    spool: Option<SpoolWriter>,
    progress: Arc<watch::Sender<Progress>>,
}

impl Log {
    fn line(&mut self, text: &str) {
        if let Some(spool) = &mut self.spool {
            let written = spool.append(format!("{text}\n").as_bytes());
            self.progress.send_modify(|p| p.written = written);
        }
    }
}

/// Run one upload or download step to its end, like `run_step` does for a
/// process: the end is set in `progress` and returned.
pub(crate) async fn run_transfer(
    a: &StepAssignment,
    ctx: &StepContext,
    progress: Arc<watch::Sender<Progress>>,
    stop: StopSignal,
    route: watch::Receiver<Route>,
    inbox: mpsc::UnboundedReceiver<FromMaster>,
) -> StepEnd {
    let key = (a.build, a.step);
    info!(build = key.0, step = key.1, name = %a.name, "starting transfer step");
    let spool_file = spool_path(&ctx.dir, a.build, a.step);
    let spool = match SpoolWriter::create(&spool_file, ctx.spool_limit) {
        Ok(s) => Some(s.with_total(a.max_output.unwrap_or(u64::MAX))),
        Err(e) => {
            warn!("cannot create the spool {}: {e}", spool_file.display());
            None
        }
    };
    let log = Log {
        spool,
        progress: Arc::clone(&progress),
    };
    let end = match prepare_workdir(&ctx.dir, &a.builder).await {
        Err(error) => StepEnd::SpawnFailed { error },
        Ok(workdir) => {
            // Download temp files left by a worker killed mid-way.
            let sweep_dir = workdir.clone();
            let _ = tokio::task::spawn_blocking(move || super::partials::sweep(&sweep_dir)).await;
            let link = match &*route.borrow() {
                Route::Attached { link, .. } => Some(link.clone()),
                _ => None,
            };
            match link {
                None => StepEnd::TransferFailed { error: LOST.into() },
                Some(link) => {
                    let mut t = Ctx {
                        key,
                        link,
                        route,
                        inbox,
                        stop,
                        deadline: a
                            .timeout_ms
                            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms)),
                        log,
                    };
                    let result = match &a.action {
                        WireAction::Upload {
                            from,
                            max_size,
                            mode,
                        } => upload(&mut t, &workdir, from, *max_size, *mode).await,
                        WireAction::Download {
                            from,
                            to,
                            max_size,
                            mode,
                        } => download(&mut t, &workdir, from, to, *max_size, *mode).await,
                        _ => Err(Fail::Failed("not a transfer step".into())),
                    };
                    match result {
                        Ok(()) => StepEnd::Exited { code: 0 },
                        Err(Fail::Stopped) => StepEnd::Stopped,
                        Err(Fail::TimedOut(after_ms)) => StepEnd::TimedOut { after_ms },
                        Err(Fail::Failed(error)) => {
                            t.log.line(&format!("transfer failed: {error}"));
                            StepEnd::TransferFailed { error }
                        }
                    }
                }
            }
        }
    };
    info!(build = key.0, step = key.1, ?end, "transfer step ended");
    progress.send_modify(|p| p.end = Some(end.clone()));
    end
}

impl Ctx {
    /// Queue a frame for the master; a closed queue is a lost link.
    async fn send(&mut self, msg: WorkerToMaster) -> Result<(), Fail> {
        let link = self.link.clone();
        tokio::select! {
            sent = link.send(Outgoing::plain(msg)) => sent.map_err(|_| Fail::Failed(LOST.into())),
            f = interrupted(&mut self.stop, &mut self.route, self.deadline) => Err(f),
        }
    }

    /// The next message from the master for this step.
    async fn next(&mut self) -> Result<FromMaster, Fail> {
        tokio::select! {
            msg = self.inbox.recv() => msg.ok_or_else(|| Fail::Failed(LOST.into())),
            f = interrupted(&mut self.stop, &mut self.route, self.deadline) => Err(f),
        }
    }

    /// See [`interrupted`].
    async fn interrupted(&mut self) -> Fail {
        interrupted(&mut self.stop, &mut self.route, self.deadline).await
    }
}

/// Resolves when the step must end early: a stop, its timeout, or its
/// link is gone (the route moves only when the link is lost).
async fn interrupted(
    stop: &mut StopSignal,
    route: &mut watch::Receiver<Route>,
    deadline: Option<(Instant, u64)>,
) -> Fail {
    let timeout = async move {
        match deadline {
            Some((at, ms)) => {
                tokio::time::sleep_until(at).await;
                ms
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop.stopped() => Fail::Stopped,
        ms = timeout => Fail::TimedOut(ms),
        _ = route.changed() => Fail::Failed(LOST.into()),
    }
}
