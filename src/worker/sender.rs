//! Sending one step's spooled output, then its end, to whichever link the
//! step is attached to.
//!
//! A step's sender reads its spool from offset `sent` and sends `Output`
//! chunks while the step is attached to a link; when the spool is complete
//! (the end is known) and all of it is sent, it sends `StepEnded`, waits
//! until the writer says the frame was written and flushed, and then holds
//! the end until the master says it has stored it (`EndKept`). Only then
//! is the step done: an end written to a master that was killed before its
//! commit is still held, listed in the next Hello, and sent again when the
//! next master resumes the step; the step is never run again. The session
//! moves the step between links through its [`Route`]: detached while no
//! link has re-adopted it, attached from an offset (0 for a new step, the
//! master's count after `Resume`), kept (`EndKept`), or to be forgotten
//! (`Abandon`). Because all of a step's frames come from this one loop, its
//! output always precedes its end on any link.

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error};

use super::key::StepKey;
use super::output::CHUNK_SIZE;
use super::spool::{Progress, SpoolReader};
use crate::protocol::WorkerToMaster;

/// One frame for the link's writer, with an optional receipt.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The frame.
    pub(crate) msg: WorkerToMaster,
    /// Fired once the frame is written and flushed to the socket.
    pub(crate) written: Option<oneshot::Sender<()>>,
}

impl Outgoing {
    /// A frame nobody waits for.
    pub(crate) fn plain(msg: WorkerToMaster) -> Self {
        Outgoing { msg, written: None }
    }
}

/// The queue into one link's writer.
pub(crate) type LinkTx = mpsc::Sender<Outgoing>;

/// Where a step's frames go now.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// Nowhere: no link has adopted the step (yet).
    Detached,
    /// To this link, starting again from byte `from` of the output.
    Attached {
        /// The link's queue.
        link: LinkTx,
        /// The output offset the master has.
        from: u64,
    },
    /// Nowhere, ever: the master abandoned the step.
    Forget,
    /// Nowhere, ever: the master has stored the step's end.
    Kept,
}

/// How a sender finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The master has stored the step's end.
    Kept,
    /// The end was written to a link while the worker was leaving: its
    /// receipt can no longer matter.
    Written,
    /// The step was forgotten without a report.
    Forgotten,
}

/// Follow `progress` and `route` until the master has stored the step's
/// end, or the step is forgotten; with `closing` set (the worker leaves), a
/// written end is enough.
pub(crate) async fn send_step(
    key: StepKey,
    mut spool: SpoolReader,
    mut progress: watch::Receiver<Progress>,
    mut route: watch::Receiver<Route>,
    mut closing: watch::Receiver<bool>,
) -> Sent {
    let (build, step) = key;
    let mut current = route.borrow_and_update().clone();
    let mut sent = from(&current);
    loop {
        let link = match &current {
            Route::Forget => return Sent::Forgotten,
            Route::Kept => return Sent::Kept,
            Route::Detached => {
                current = next_route(&mut route).await;
                sent = from(&current);
                continue;
            }
            Route::Attached { link, .. } => link.clone(),
        };
        let now = progress.borrow_and_update().clone();
        let frame = if sent < now.written {
            let max = usize::try_from(now.written - sent)
                .unwrap_or(CHUNK_SIZE)
                .min(CHUNK_SIZE);
            match spool.read_at(sent, max).await {
                Ok(data) if !data.is_empty() => {
                    let len = data.len() as u64;
                    let msg = WorkerToMaster::Output {
                        build,
                        step,
                        offset: sent,
                        data,
                    };
                    Frame::Output(msg, len)
                }
                read => {
                    // The spool lost bytes it said it had: resending is
                    // impossible, so skip them rather than stall the step.
                    let why = match read {
                        Ok(_) => "the file is shorter".to_string(),
                        Err(e) => e.to_string(),
                    };
                    error!(
                        build,
                        step,
                        "cannot read the step's spool at offset {sent} ({why}); skipping to {}",
                        now.written
                    );
                    sent = now.written;
                    continue;
                }
            }
        } else if let Some(end) = now.end {
            Frame::End(WorkerToMaster::StepEnded { build, step, end })
        } else {
            // Nothing to send until the spool grows, ends, or we move.
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        // The runner is gone without an end (it panicked):
                        // wait for the step to be forgotten.
                        current = next_route(&mut route).await;
                        sent = from(&current);
                    }
                }
                moved = next_route(&mut route) => {
                    current = moved;
                    sent = from(&current);
                }
            }
            continue;
        };
        tokio::select! {
            done = deliver(&link, frame) => match done {
                Delivery::Output(len) => sent += len,
                Delivery::End => {
                    debug!(build, step, "end written; holding it until the master has stored it");
                    match after_end(&mut route, &mut closing).await {
                        AfterEnd::Kept => return Sent::Kept,
                        AfterEnd::Closing => return Sent::Written,
                        AfterEnd::Moved(moved) => {
                            current = moved;
                            sent = from(&current);
                        }
                    }
                }
                Delivery::LinkGone => {
                    debug!(build, step, "link gone; waiting to be adopted again");
                    current = next_route(&mut route).await;
                    sent = from(&current);
                }
            },
            moved = next_route(&mut route) => {
                current = moved;
                sent = from(&current);
            }
        }
    }
}

/// A frame ready to go.
enum Frame {
    /// Output, and its length.
    Output(WorkerToMaster, u64),
    /// The step's end.
    End(WorkerToMaster),
}

/// What became of a frame.
enum Delivery {
    /// Queued for the writer; this many bytes more are sent.
    Output(u64),
    /// The end was written and flushed.
    End,
    /// The link closed first.
    LinkGone,
}

/// Queue the frame; for the end, also wait for the writer's receipt.
/// Cancel-safe in the sense that matters: a cancelled end is sent again.
async fn deliver(link: &LinkTx, frame: Frame) -> Delivery {
    match frame {
        Frame::Output(msg, len) => match link.send(Outgoing::plain(msg)).await {
            Ok(()) => Delivery::Output(len),
            Err(_) => Delivery::LinkGone,
        },
        Frame::End(msg) => {
            let (tx, rx) = oneshot::channel();
            let queued = link
                .send(Outgoing {
                    msg,
                    written: Some(tx),
                })
                .await;
            match (queued, rx.await) {
                (Ok(()), Ok(())) => Delivery::End,
                _ => Delivery::LinkGone,
            }
        }
    }
}

/// What happened to a step whose end is written.
enum AfterEnd {
    /// The master has stored it.
    Kept,
    /// The worker is leaving.
    Closing,
    /// The session moved the step (a lost link, a resume on the next one,
    /// an abandon): the loop takes it from there.
    Moved(Route),
}

/// Wait for the master's receipt of a written end, or for the step to move.
async fn after_end(
    route: &mut watch::Receiver<Route>,
    closing: &mut watch::Receiver<bool>,
) -> AfterEnd {
    if *closing.borrow() {
        return AfterEnd::Closing;
    }
    tokio::select! {
        moved = next_route(route) => match moved {
            Route::Kept => AfterEnd::Kept,
            other => AfterEnd::Moved(other),
        },
        // An error means the step table is gone: so is the worker.
        _ = closing.wait_for(|c| *c) => AfterEnd::Closing,
    }
}

/// Where the step's frames go from now on; its sender starts again at.
fn from(route: &Route) -> u64 {
    match route {
        Route::Attached { from, .. } => *from,
        Route::Detached | Route::Forget | Route::Kept => 0,
    }
}

/// Wait for the session to move the step. A step table that is gone can
/// never move it again: that is a forget.
async fn next_route(route: &mut watch::Receiver<Route>) -> Route {
    match route.changed().await {
        Ok(()) => route.borrow_and_update().clone(),
        Err(_) => Route::Forget,
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
