//! An authenticated worker link: keepalive both ways, steps out, output
//! written to the steps' logs and ends passed on once it is all on disk,
//! and the file transfers of its steps.
//!
//! The core asks in its own words ([`WorkerCmd`]); this link says it in the
//! wire's ([`MasterToWorker`]) and fills in what only it knows: how much
//! of a resumed step's output its log already holds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::daemon::core::{LinkId, WorkerCmd};
use crate::daemon::handle::MasterHandle;
use crate::daemon::limits::{Limits, MAX_WORKER_FRAME, MAX_WORKER_TEXT, WORKER_QUEUE_BYTES};
use crate::daemon::logs;
use crate::daemon::messages::LinkCmd;
use crate::daemon::transfer::Transfers;
use crate::paths::now_ms;
use crate::protocol::{
    self, BuildId, FrameError, MasterToWorker, StepEnd, StepIndex, WorkerToMaster,
};
use crate::untrusted::{Escaped, capped};
use std::sync::atomic::{AtomicU64, Ordering};

use super::step_log::StepLog;
use super::wire::assignment;

/// Write one message, giving up after three keepalive intervals: a worker
/// that stops reading (stopped process, hung host) must not hold the link
/// task forever, or its silence would never be noticed.
async fn write_bounded<W: AsyncWrite + Unpin>(
    keepalive: Duration,
    wr: &mut W,
    msg: &MasterToWorker,
) -> Result<(), FrameError> {
    match tokio::time::timeout(keepalive * MISSED_INTERVALS, protocol::write_msg(wr, msg)).await {
        Ok(written) => written,
        Err(_) => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the worker stopped reading",
        ))),
    }
}

/// A worker silent for this many keepalive intervals is lost (the same
/// rule as the worker's for its master).
const MISSED_INTERVALS: u32 = crate::worker::MISSED_INTERVALS;

/// An authenticated worker connection.
pub(super) struct Link {
    pub(super) id: LinkId,
    pub(super) worker: String,
    pub(super) master: MasterHandle,
    pub(super) logs: PathBuf,
    /// Steps given to this link and not yet ended, with their open logs.
    pub(super) open: HashMap<(BuildId, StepIndex), StepLog>,
    /// Ping interval; a worker silent for three of them is lost.
    pub(super) keepalive: Duration,
    /// When we last heard from the worker, for `bbctl workers`.
    pub(super) last_seen: Arc<AtomicU64>,
    /// Frame and log limits.
    pub(super) limits: Arc<Limits>,
    /// `bbctl ping`s waiting for their pong, by sequence number.
    pub(super) pings: HashMap<u64, (tokio::time::Instant, oneshot::Sender<Duration>)>,
    /// Uploads and downloads of this link's steps (their file I/O).
    pub(super) transfers: Transfers,
    /// Frames `on_message` wants sent (transfer acks and refusals).
    pub(super) outbox: Vec<MasterToWorker>,
    /// The last keepalive round trip (µs), for `bbctl workers`.
    pub(super) rtt_us: Arc<AtomicU64>,
}

impl Link {
    pub(super) async fn run<R, W>(
        &mut self,
        rd: R,
        wr: &mut W,
        cmds: &mut mpsc::UnboundedReceiver<LinkCmd>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        // Frames are read in their own task: reading is not cancel-safe.
        // What it reads ahead is bounded in bytes, not frames: each frame
        // holds permits for its size until the link task takes it,
        // so a worker that floods us is pushed back after
        // WORKER_QUEUE_BYTES, whatever the size of its frames.
        let (frames_tx, mut frames) = mpsc::unbounded_channel::<(
            Result<WorkerToMaster, FrameError>,
            Option<tokio::sync::OwnedSemaphorePermit>,
        )>();
        let max_frame = self.limits.max_frame.min(MAX_WORKER_FRAME);
        let budget = Arc::new(tokio::sync::Semaphore::new(WORKER_QUEUE_BYTES));
        let reader = tokio::spawn(async move {
            let mut rd = rd;
            loop {
                let (msg, permit) = match protocol::frame::read_frame(&mut rd, max_frame).await {
                    Ok(body) => {
                        // A frame's envelope counts too, so that empty
                        // frames are not free.
                        let cost = (body.len() + 64).min(WORKER_QUEUE_BYTES) as u32;
                        let Ok(permit) = Arc::clone(&budget).acquire_many_owned(cost).await else {
                            return;
                        };
                        (protocol::frame::decode(&body), Some(permit))
                    }
                    Err(e) => (Err(e), None),
                };
                let stop = msg.is_err();
                if frames_tx.send((msg, permit)).is_err() || stop {
                    return;
                }
            }
        });
        let mut pings = tokio::time::interval(self.keepalive);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = tokio::time::Instant::now();
        let mut seq = 0u64;
        let master = self.master.clone();
        let shutting_down = master.shutting_down();
        tokio::pin!(shutting_down);
        // The keepalive ping in flight, timed for `rtt_us`.
        let mut timed: Option<(u64, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                // The master is going away: what its loop queued for this
                // link goes out first (a step just started, a drain's
                // goodbye), then the link closes, without a goodbye of its
                // own: Goodbye tells a worker to stop its steps and exit,
                // while a master that merely stops leaves them running for
                // the next one, which the worker reconnects to.
                () = &mut shutting_down => {
                    while let Ok(cmd) = cmds.try_recv() {
                        if !self.on_cmd(cmd, wr, &mut seq).await {
                            break;
                        }
                    }
                    debug!(link = self.id, worker = %self.worker, "the master is shutting down; closing the link");
                    let _ = tokio::time::timeout(self.keepalive, wr.shutdown()).await;
                    break;
                }
                // Checked on its own deadline, not at the next ping tick:
                // a link silent for three intervals is lost then, not up
                // to an interval later.
                () = tokio::time::sleep_until(last_heard + self.keepalive * MISSED_INTERVALS) => {
                    warn!(link = self.id, worker = %self.worker, "worker silent for {:?}; link lost", last_heard.elapsed());
                    // A timer that fires an interval or more late means the
                    // master itself was not running (stopped, starved): the
                    // silence may be ours, so the worker is not called frozen.
                    let late = last_heard.elapsed().saturating_sub(self.keepalive * MISSED_INTERVALS);
                    if late < self.keepalive {
                        self.master.worker_silent(self.id).await;
                    }
                    break;
                }
                _ = pings.tick() => {
                    // `bbctl ping`s that gave up long ago.
                    self.pings.retain(|_, (sent, _)| sent.elapsed() < Duration::from_secs(60));
                    seq += 1;
                    timed = Some((seq, tokio::time::Instant::now()));
                    if write_bounded(self.keepalive, wr, &MasterToWorker::Ping { seq }).await.is_err() {
                        break;
                    }
                }
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => {
                        if !self.on_cmd(cmd, wr, &mut seq).await {
                            break;
                        }
                    }
                    None => break,
                },
                stored = self.transfers.next_stored() => {
                    if self.write_all(wr, stored).await.is_err() {
                        break;
                    }
                }
                () = std::future::ready(()), if self.transfers.can_send() => {
                    let frames = self.transfers.pump();
                    if self.write_all(wr, frames).await.is_err() {
                        break;
                    }
                }
                frame = frames.recv() => match frame.map(|(msg, _permit)| msg) {
                    Some(Ok(WorkerToMaster::Pong { seq })) => {
                        last_heard = tokio::time::Instant::now();
                        self.last_seen.store(now_ms(), Ordering::Relaxed);
                        if let Some((sent, reply)) = self.pings.remove(&seq) {
                            let _ = reply.send(sent.elapsed());
                        }
                        if let Some((_, sent)) = timed.take_if(|(s, _)| *s == seq) {
                            self.rtt_us.store(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(WorkerToMaster::Ping { seq })) => {
                        last_heard = tokio::time::Instant::now();
                        self.last_seen.store(now_ms(), Ordering::Relaxed);
                        if write_bounded(self.keepalive, wr, &MasterToWorker::Pong { seq }).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) if !self.master.may_write_files() => {
                        // A leader paused past its lease: what its worker
                        // sent meanwhile is the next leader's to write.
                        // No goodbye: the worker keeps its steps for it.
                        warn!(link = self.id, worker = %self.worker, "this master's lease may have run out: writing nothing more; closing the link");
                        break;
                    }
                    Some(Ok(msg)) => {
                        last_heard = tokio::time::Instant::now();
                        self.last_seen.store(now_ms(), Ordering::Relaxed);
                        if let Err(reason) = self.on_message(msg).await {
                            warn!(link = self.id, worker = %self.worker, "{}; closing the link", Escaped(&reason));
                            let _ = write_bounded(self.keepalive, wr, &MasterToWorker::Goodbye { reason }).await;
                            break;
                        }
                        let replies = std::mem::take(&mut self.outbox);
                        if self.write_all(wr, replies).await.is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        if !e.is_disconnect() {
                            warn!(link = self.id, worker = %self.worker, "protocol error: {}", Escaped(&capped(&e.to_string(), MAX_WORKER_TEXT)));
                            let _ = write_bounded(self.keepalive, wr, &MasterToWorker::Goodbye { reason: format!("protocol error: {e}") }).await;
                        }
                        break;
                    }
                    None => break,
                },
            }
        }
        reader.abort();
    }

    /// Carry out one command of the master loop; false once the link is
    /// to close (told to, or the worker cannot be written to).
    async fn on_cmd<W: AsyncWrite + Unpin>(
        &mut self,
        cmd: LinkCmd,
        wr: &mut W,
        seq: &mut u64,
    ) -> bool {
        match cmd {
            LinkCmd::Send(cmd) => {
                let (msg, follow) = self.wire(cmd);
                if let Err(e) = write_bounded(self.keepalive, wr, &msg).await {
                    debug!(link = self.id, "write to worker failed: {e}");
                    return false;
                }
                self.write_all(wr, follow).await.is_ok()
            }
            LinkCmd::Ping(reply) => {
                *seq += 1;
                self.pings
                    .insert(*seq, (tokio::time::Instant::now(), reply));
                write_bounded(self.keepalive, wr, &MasterToWorker::Ping { seq: *seq })
                    .await
                    .is_ok()
            }
            LinkCmd::EndKept { build, step } => {
                write_bounded(self.keepalive, wr, &MasterToWorker::EndKept { build, step })
                    .await
                    .is_ok()
            }
            LinkCmd::Close(reason) => {
                let _ =
                    write_bounded(self.keepalive, wr, &MasterToWorker::Goodbye { reason }).await;
                false
            }
        }
    }

    /// What the core asked, in the wire's words, and the frames that
    /// follow it (a download's first ones); the link's own books (which
    /// steps it was given, their transfers) are kept here.
    fn wire(&mut self, cmd: WorkerCmd) -> (MasterToWorker, Vec<MasterToWorker>) {
        match cmd {
            WorkerCmd::Start(start) => {
                let a = assignment(*start);
                self.open.insert(
                    (a.build, a.step),
                    StepLog {
                        new: true,
                        ..StepLog::default()
                    },
                );
                let follow = self.transfers.on_start(a.build, a.step, &a.action);
                (MasterToWorker::StartStep(a), follow)
            }
            WorkerCmd::Stop { build, step } => (MasterToWorker::StopStep { build, step }, vec![]),
            WorkerCmd::Resume { build, step } => {
                // The output the master already keeps: the worker resends
                // from there, so the log is neither doubled nor gapped.
                let offset = logs::log_len(&logs::step_log_path(&self.logs, build, step));
                self.open.insert((build, step), StepLog::default());
                (
                    MasterToWorker::Resume {
                        build,
                        step,
                        offset,
                    },
                    vec![],
                )
            }
            WorkerCmd::Abandon { build, step } => {
                warn!(
                    worker = %self.worker,
                    build,
                    step,
                    "worker came back still running build {build} step {step}, which ended or was retried elsewhere meanwhile: told it to kill the step's process group now"
                );
                // The master gave up on this step (its worker did not end
                // it in time): anything more the worker says about it
                // closes the link.
                let key = (build, step);
                if self.open.remove(&key).is_some() {
                    self.transfers.on_step_end(key, StepEnd::Stopped);
                }
                (MasterToWorker::Abandon { build, step }, vec![])
            }
        }
    }

    /// Write `msgs` in order.
    async fn write_all<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        msgs: Vec<MasterToWorker>,
    ) -> Result<(), FrameError> {
        for msg in msgs {
            if let Err(e) = write_bounded(self.keepalive, wr, &msg).await {
                debug!(link = self.id, "write to worker failed: {e}");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Transfer frames are accepted only for steps given to this link.
    fn check_given(&self, build: BuildId, step: StepIndex, what: &str) -> Result<(), String> {
        if self.open.contains_key(&(build, step)) {
            Ok(())
        } else {
            Err(format!(
                "{what} for build {build} step {step}, which this worker was not given"
            ))
        }
    }

    async fn on_message(&mut self, msg: WorkerToMaster) -> Result<(), String> {
        match msg {
            WorkerToMaster::FileBegin(b) => {
                self.check_given(b.build, b.step, "file")?;
                let out = self.transfers.on_begin(b);
                self.outbox.extend(out);
                Ok(())
            }
            WorkerToMaster::FileChunk(c) => {
                self.check_given(c.build, c.step, "file data")?;
                let out = self.transfers.on_chunk(c);
                self.outbox.extend(out);
                Ok(())
            }
            WorkerToMaster::FileEnd(e) => {
                self.check_given(e.build, e.step, "file end")?;
                let out = self.transfers.on_end(e);
                self.outbox.extend(out);
                Ok(())
            }
            WorkerToMaster::FileAck {
                build,
                step,
                received,
            } => {
                self.check_given(build, step, "file ack")?;
                let out = self.transfers.on_ack((build, step), received);
                self.outbox.extend(out);
                Ok(())
            }
            WorkerToMaster::Ping { .. } | WorkerToMaster::Pong { .. } => Ok(()),
            WorkerToMaster::Output {
                build,
                step,
                offset,
                data,
            } => {
                let Some(slot) = self.open.get_mut(&(build, step)) else {
                    return Err(format!(
                        "output for build {build} step {step}, which this worker was not given"
                    ));
                };
                let end = offset.saturating_add(data.len() as u64);
                if let Some(writer) = slot.writer(&self.logs, build, step, self.limits.max_log_size)
                {
                    match writer.append_at(offset, &data) {
                        // A gap (or an absurd offset) is the worker's fault:
                        // one reason to close the link, not a warning a frame.
                        Err(e)
                            if e.kind() == std::io::ErrorKind::InvalidData
                                && writer.lost().is_none() =>
                        {
                            return Err(format!("build {build} step {step}: {e}"));
                        }
                        Err(e) => warn!("cannot write the log of build {build} step {step}: {e}"),
                        // What the log holds (all of it, once past the
                        // cap): the worker's spool need not keep it.
                        Ok(()) if writer.lost().is_none() => {
                            let kept = if writer.is_truncated() {
                                end
                            } else {
                                writer.len()
                            };
                            self.outbox
                                .push(MasterToWorker::OutputKept { build, step, kept });
                        }
                        Ok(()) => {}
                    }
                }
                self.master.log_grew(build, step);
                Ok(())
            }
            WorkerToMaster::StepEnded { build, step, end } => {
                let Some(mut log) = self.open.remove(&(build, step)) else {
                    return Err(format!(
                        "end of build {build} step {step}, which this worker was not given"
                    ));
                };
                let mut end = sanitize_end(self.transfers.on_step_end((build, step), end));
                if let StepEnd::OutputLost { error } = &end {
                    // Lost on the worker's side: the log says where.
                    if let Some(writer) =
                        log.writer(&self.logs, build, step, self.limits.max_log_size)
                    {
                        writer.lose(&format!("on the worker: {error}"));
                    }
                } else if let Some(error) = log.lost() {
                    // The marker again, in case there was no room for it
                    // then (a no-op once it is in).
                    if let Some(writer) = log.writer.as_mut() {
                        writer.lose(&error);
                    }
                    end = StepEnd::OutputLost {
                        error: format!("cannot write the log on the master: {error}"),
                    };
                }
                if let StepEnd::OutputLost { error } = &end {
                    warn!(build, step, "the step's output was lost: {error}");
                    self.master.log_grew(build, step);
                }
                self.master.step_ended(self.id, build, step, end).await;
                Ok(())
            }
        }
    }
}

/// A step end with its error text capped and escaped: a worker's strings
/// reach the core, the store and every `bbctl build` after this.
fn sanitize_end(end: StepEnd) -> StepEnd {
    match end {
        StepEnd::SpawnFailed { error } => StepEnd::SpawnFailed {
            error: capped(&error, MAX_WORKER_TEXT),
        },
        StepEnd::TransferFailed { error } => StepEnd::TransferFailed {
            error: capped(&error, MAX_WORKER_TEXT),
        },
        StepEnd::OutputLost { error } => StepEnd::OutputLost {
            error: capped(&error, MAX_WORKER_TEXT),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
