//! One authenticated link: read the master's orders, start steps, carry
//! their frames, keep the link alive, and re-attach the steps listed in the
//! Hello as the master resumes or abandons them.
//!
//! Frames are read in their own task (`read_msg` is not cancel-safe, so it
//! must never sit in a `select!` branch) and written by one writer task fed
//! by a bounded queue, which gives the step senders backpressure. When the
//! link is lost the steps are only detached: they keep running and
//! spooling, and wait for the next link.

use std::collections::HashSet;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::connection::Link;
use super::keepalive::{Keepalive, MISSED_INTERVALS, Tick};
use super::key::StepKey;
use super::sender::{LinkTx, Outgoing};
use super::signals::ShutdownSignals;
use super::steps::{Abandoned, STOP_ALL_LIMIT, Steps};
use crate::net::BoxConn;
use crate::protocol::{MAX_FRAME, MasterToWorker, StepEnd, WorkerToMaster, read_msg, write_msg};

/// Frames queued for the master before step senders have to wait.
pub const OUTGOING_QUEUE: usize = 256;

/// How long the master has, after its Welcome, to say `Resume` or
/// `Abandon` for each step listed in the Hello; past it they are abandoned.
pub const RESUME_WAIT: Duration = Duration::from_secs(30);

/// How long queued frames may take to go out when the session closes.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The master said Goodbye; every step was stopped and reported.
    Goodbye,
    /// The link broke, the master hung up or went silent; the steps are
    /// held, detached, for the next link.
    Lost,
    /// We got SIGTERM or SIGINT; every step was stopped and reported.
    Signalled,
}

/// Serve one link until it ends. `listed` are the steps named in the
/// Hello: they wait for `Resume` or `Abandon`.
pub(crate) async fn serve(
    link: Link,
    steps: &mut Steps,
    signals: &mut ShutdownSignals,
    listed: Vec<StepKey>,
) -> SessionEnd {
    let welcomed = Instant::now();
    let mut keepalive = Keepalive::new(link.keepalive_ms, welcomed);
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let write_limit = keepalive.interval() * MISSED_INTERVALS;
    let mut writer = tokio::spawn(write_loop(link.writer, out_rx, write_limit));
    let (in_tx, mut in_rx) = mpsc::channel(16);
    let reader = tokio::spawn(read_loop(link.reader, in_tx));
    let mut waiting: HashSet<StepKey> = listed.into_iter().collect();
    let resume_deadline = welcomed + RESUME_WAIT;
    let mut writer_done = false;

    let end = loop {
        tokio::select! {
            incoming = in_rx.recv() => {
                let Some(msg) = incoming else { break SessionEnd::Lost };
                keepalive.heard(Instant::now());
                if let Some(end) = handle(msg, steps, &out_tx, &mut waiting) {
                    break end;
                }
            }
            () = steps.next_done() => {}
            () = tokio::time::sleep_until(keepalive.wake_at()) => {
                match keepalive.tick(Instant::now()) {
                    Tick::Ping(seq) => queue(&out_tx, WorkerToMaster::Ping { seq }),
                    Tick::Silent => {
                        warn!(
                            "nothing from the master for {} ms ({MISSED_INTERVALS} keepalive intervals); dropping the link",
                            (keepalive.interval() * MISSED_INTERVALS).as_millis()
                        );
                        break SessionEnd::Lost;
                    }
                    Tick::Nothing => {}
                }
            }
            () = tokio::time::sleep_until(resume_deadline), if !waiting.is_empty() => {
                warn!(
                    steps = ?waiting,
                    "the master neither resumed nor abandoned these steps within {} s; abandoning them",
                    RESUME_WAIT.as_secs()
                );
                for key in waiting.drain() {
                    steps.abandon(key);
                }
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break SessionEnd::Lost;
            }
            name = signals.recv() => {
                info!("{name} received; stopping");
                break SessionEnd::Signalled;
            }
        }
    };

    reader.abort();
    if end == SessionEnd::Lost {
        writer.abort();
        steps.detach_all();
        return end;
    }
    // Goodbye or a signal: stop everything; report what the link can carry.
    if !steps.is_empty() {
        info!("stopping every step");
    }
    steps.closing();
    steps.abandon_detached();
    steps.stop_all();
    let reported = tokio::time::timeout(STOP_ALL_LIMIT, async {
        tokio::select! {
            () = steps.drain() => {}
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                // The link died on the way out: nothing can be reported.
                steps.abandon_all();
                steps.drain().await;
            }
        }
    })
    .await;
    if reported.is_err() {
        steps.abort_all();
    }
    drop(out_tx);
    if !writer_done
        && tokio::time::timeout(FLUSH_LIMIT, &mut writer)
            .await
            .is_err()
    {
        warn!("could not send the last messages to the master in time");
        writer.abort();
    }
    end
}

/// Act on one message from the master; `Some` ends the session.
fn handle(
    msg: MasterToWorker,
    steps: &mut Steps,
    out_tx: &LinkTx,
    waiting: &mut HashSet<StepKey>,
) -> Option<SessionEnd> {
    match msg {
        MasterToWorker::StartStep(assignment) => steps.start(assignment, out_tx.clone()),
        MasterToWorker::StopStep { build, step } => steps.stop((build, step)),
        MasterToWorker::Resume {
            build,
            step,
            offset,
        } => {
            waiting.remove(&(build, step));
            if steps.resume((build, step), out_tx.clone(), offset) {
                info!(build, step, offset, "the master resumed a step");
            } else {
                // The master waits for an end that will never come: say
                // that the step is gone rather than leave it stuck.
                warn!(
                    build,
                    step, "the master resumed a step this worker does not hold"
                );
                let end = StepEnd::SpawnFailed {
                    error: "the worker does not hold this step (anymore)".to_string(),
                };
                // This end must not be dropped when the queue is full (it
                // often is right after a reconnect): wait for room.
                let tx = out_tx.clone();
                tokio::spawn(async move {
                    let msg = WorkerToMaster::StepEnded { build, step, end };
                    let _ = tx.send(Outgoing::plain(msg)).await;
                });
            }
        }
        MasterToWorker::Abandon { build, step } => {
            waiting.remove(&(build, step));
            match steps.kill_abandoned((build, step)) {
                Abandoned::Killed => warn!(
                    build,
                    step,
                    "the master abandoned this step (its build ended or was retried elsewhere while this worker was away): killing its process group now"
                ),
                Abandoned::Ended => info!(
                    build,
                    step,
                    "the master no longer waits for this step's end (it had stored it, or its build ended meanwhile): forgetting the step"
                ),
                Abandoned::NotHeld => debug!(build, step, "abandon for a step not held"),
            }
        }
        MasterToWorker::OutputKept { build, step, kept } => steps.output_kept((build, step), kept),
        MasterToWorker::EndKept { build, step } => {
            if !steps.end_kept((build, step)) {
                debug!(build, step, "end kept for a step not held");
            }
        }
        MasterToWorker::Ping { seq } => queue(out_tx, WorkerToMaster::Pong { seq }),
        MasterToWorker::Pong { .. } => {}
        MasterToWorker::Goodbye { reason } => {
            info!("the master said goodbye: {reason}");
            return Some(SessionEnd::Goodbye);
        }
        msg @ (MasterToWorker::FileAck { .. }
        | MasterToWorker::FileRefused { .. }
        | MasterToWorker::FileBegin(_)
        | MasterToWorker::FileChunk(_)
        | MasterToWorker::FileEnd(_)) => {
            if let Some((key, msg)) = super::transfer::from_master(msg) {
                steps.to_transfer(key, msg);
            }
        }
    }
    None
}

/// Queue a small control frame without waiting: if the queue is full, the
/// link is busy with output, which proves we are alive just as well.
fn queue(out_tx: &LinkTx, msg: WorkerToMaster) {
    if let Err(e) = out_tx.try_send(Outgoing::plain(msg)) {
        debug!("not queueing a control frame: {e}");
    }
}

/// Feed the master's messages to the session until the link ends.
async fn read_loop(mut reader: ReadHalf<BoxConn>, tx: mpsc::Sender<MasterToWorker>) {
    loop {
        match read_msg::<_, MasterToWorker>(&mut reader, MAX_FRAME).await {
            Ok(msg) => {
                debug!(?msg, "from master");
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            Err(e) if e.is_disconnect() => {
                info!("the master closed the connection");
                return;
            }
            Err(e) => {
                warn!("bad message from the master, dropping the connection: {e}");
                return;
            }
        }
    }
}

/// Write queued frames in order, confirming those that ask for it once
/// written and flushed; stop at the first failure, which drops the queue
/// so that senders notice the link is gone. A frame that cannot be
/// written within `limit` (the keepalive window: a peer that stopped
/// reading, a path that died without a FIN, while the master may still be
/// heard from) is a failure too: the session then sees the link lost.
pub(crate) async fn write_loop(
    mut writer: WriteHalf<BoxConn>,
    mut rx: mpsc::Receiver<Outgoing>,
    limit: Duration,
) {
    while let Some(Outgoing { msg, written }) = rx.recv().await {
        match tokio::time::timeout(limit, write_msg(&mut writer, &msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if e.is_disconnect() {
                    info!("the connection to the master is gone");
                } else {
                    warn!("cannot send to the master: {e}");
                }
                return;
            }
            Err(_) => {
                warn!(
                    "a frame could not be sent to the master within {} ms (the keepalive window); dropping the link",
                    limit.as_millis()
                );
                return;
            }
        }
        if let Some(done) = written {
            // The sender may have moved on (re-attached): nothing to do.
            let _ = done.send(());
        }
    }
    if let Err(e) = writer.shutdown().await {
        debug!("closing the connection: {e}");
    }
}
