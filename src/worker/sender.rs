//! Sending one step's spooled output, then its end, to whichever link the
//! step is attached to.
//!
//! A step's sender reads its spool from offset `sent` and sends `Output`
//! chunks while the step is attached to a link; when the spool is complete
//! (the end is known) and all of it is sent, it sends `StepEnded` and waits
//! until the writer says the frame was written and flushed. Only then is
//! the step done. The session moves the step between links through its
//! [`Route`]: detached while no link has re-adopted it, attached from an
//! offset (0 for a new step, the master's count after `Resume`), or to be
//! forgotten (`Abandon`). Because all of a step's frames come from this one
//! loop, its output always precedes its end on any link.

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
}

/// How a sender finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The end was written to a link: the master has everything.
    Delivered,
    /// The step was forgotten without a report.
    Forgotten,
}

/// Follow `progress` and `route` until the step's end is written to a link
/// or the step is forgotten.
pub(crate) async fn send_step(
    key: StepKey,
    mut spool: SpoolReader,
    mut progress: watch::Receiver<Progress>,
    mut route: watch::Receiver<Route>,
) -> Sent {
    let (build, step) = key;
    let mut current = route.borrow_and_update().clone();
    let mut sent = from(&current);
    loop {
        let link = match &current {
            Route::Forget => return Sent::Forgotten,
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
                Delivery::End => return Sent::Delivered,
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

/// Where the step's frames go from now on; its sender starts again at.
fn from(route: &Route) -> u64 {
    match route {
        Route::Attached { from, .. } => *from,
        Route::Detached | Route::Forget => 0,
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
