//! The steps a worker holds, keyed by (build, step), across links.
//!
//! A step is *held* from its `StartStep` until the master says it has
//! stored its end (`EndKept`), or abandons it: while running, and after it
//! ended with its end not yet stored by a master. (A worker that leaves,
//! told Goodbye or signalled, lets a step go once its end is written.)
//! Each held step is one task running its process ([`run_step`]) and its
//! sender ([`send_step`]) side by side; the task deletes the spool and
//! returns the key when both are done. Keys come
//! from the messages themselves: the worker keeps no per-builder object
//! that a master reload could make stale.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::key::StepKey;
use super::runner::{StepContext, run_step};
use super::sender::{LinkTx, Route, send_step};
use super::spool::{Kept, Progress, SpoolReader, spool_path};
use super::stop::{StopHandle, stop_pair};
use super::transfer::{FromMaster, is_transfer, run_transfer};
use crate::protocol::{RunningStep, StepAssignment};

/// How long stopping every step may take before we abandon the stragglers.
/// A stopped step needs at most the stop grace plus the output drain limit.
pub(crate) const STOP_ALL_LIMIT: Duration = Duration::from_secs(15);

/// The session's handles on one held step.
struct Held {
    stop: StopHandle,
    route: watch::Sender<Route>,
    /// Set as soon as the end is delivered or the step forgotten, before
    /// the task finishes cleaning up: such a step is no longer listed.
    settled: Arc<AtomicBool>,
    /// Transfer steps only: where the master's transfer messages go.
    inbox: Option<mpsc::UnboundedSender<FromMaster>>,
    /// How much of the output the master has on its disk.
    kept: Kept,
    /// The step's progress: whether its process has ended.
    progress: watch::Receiver<Progress>,
}

/// What an `Abandon` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// The step was still running: its process group was killed.
    Killed,
    /// The step had ended (its end not yet stored by a master): forgotten.
    Ended,
    /// No such step is held.
    NotHeld,
}

/// The held steps and the tasks that run them.
pub(crate) struct Steps {
    ctx: Arc<StepContext>,
    held: HashMap<StepKey, Held>,
    tasks: JoinSet<StepKey>,
    /// Which step each task runs, so a task that panics is known by its id.
    task_keys: HashMap<tokio::task::Id, StepKey>,
    /// Set when the worker leaves (Goodbye, a signal): a step is then let
    /// go once its end is written, as nobody will be there for the receipt.
    closing: watch::Sender<bool>,
}

impl Steps {
    /// An empty table; steps run with `ctx`.
    pub(crate) fn new(ctx: StepContext) -> Self {
        Steps {
            ctx: Arc::new(ctx),
            held: HashMap::new(),
            tasks: JoinSet::new(),
            task_keys: HashMap::new(),
            closing: watch::Sender::new(false),
        }
    }

    /// Start a step that reports on `link`. A step already held is not
    /// started again: that would give two ends for one key.
    pub(crate) fn start(&mut self, assignment: StepAssignment, link: LinkTx) {
        let key = (assignment.build, assignment.step);
        if self.held.contains_key(&key) {
            warn!(
                build = key.0,
                step = key.1,
                "master started a step this worker already holds; ignoring the duplicate"
            );
            return;
        }
        let (stop, signal) = stop_pair();
        let (route, route_rx) = watch::channel(Route::Attached { link, from: 0 });
        let settled = Arc::new(AtomicBool::new(false));
        let settled_in_task = Arc::clone(&settled);
        let (inbox, inbox_rx) = if is_transfer(&assignment) {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some((rx, route_rx.clone())))
        } else {
            (None, None)
        };
        let kept = Kept::default();
        let kept_in_task = kept.clone();
        let (progress, progress_rx) = watch::channel(Progress::default());
        self.held.insert(
            key,
            Held {
                stop,
                route,
                settled,
                inbox,
                kept,
                progress: progress_rx.clone(),
            },
        );
        let ctx = Arc::clone(&self.ctx);
        let closing = self.closing.subscribe();
        let handle = self.tasks.spawn(async move {
            let path = spool_path(&ctx.dir, key.0, key.1);
            let progress = Arc::new(progress);
            let runner = async {
                match inbox_rx {
                    Some((inbox, route)) => {
                        run_transfer(&assignment, &ctx, progress, signal, route, inbox).await
                    }
                    None => run_step(&assignment, &ctx, progress, signal, kept_in_task).await,
                }
            };
            let sender = async {
                let spool = SpoolReader::new(path.clone());
                let sent = send_step(key, spool, progress_rx, route_rx, closing).await;
                settled_in_task.store(true, Ordering::SeqCst);
                sent
            };
            let (_, sent) = tokio::join!(runner, sender);
            debug!(build = key.0, step = key.1, ?sent, "step forgotten");
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!("cannot remove the spool file {}: {e}", path.display());
            }
            key
        });
        self.task_keys.insert(handle.id(), key);
    }

    /// Hand a transfer message to its step; messages for steps not held
    /// (or done with their transfer) are dropped.
    pub(crate) fn to_transfer(&self, key: StepKey, msg: FromMaster) {
        match self.held.get(&key).and_then(|h| h.inbox.as_ref()) {
            Some(inbox) => {
                let _ = inbox.send(msg);
            }
            None => debug!(
                build = key.0,
                step = key.1,
                "transfer message for a step not held"
            ),
        }
    }

    /// The master has the step's output up to byte `kept` on its disk:
    /// the spool below it need not wait to be sent (`--spool-limit`).
    pub(crate) fn output_kept(&self, key: StepKey, kept: u64) {
        if let Some(held) = self.held.get(&key) {
            held.kept.fetch_max(kept, Ordering::SeqCst);
        }
    }

    /// Ask one step to stop; unknown steps are ignored.
    pub(crate) fn stop(&self, key: StepKey) {
        match self.held.get(&key) {
            Some(held) => held.stop.stop(),
            None => debug!(build = key.0, step = key.1, "stop for a step not held"),
        }
    }

    /// Send the step's output again from `from` on `link`, then its end.
    /// False if the step is not held.
    pub(crate) fn resume(&self, key: StepKey, link: LinkTx, from: u64) -> bool {
        let Some(held) = self.held.get(&key) else {
            return false;
        };
        // A step already abandoned (its sender has gone) or settled is not
        // held any more, even while its task still cleans up: resuming it
        // would leave the master waiting for an end nobody sends.
        if matches!(*held.route.borrow(), Route::Forget | Route::Kept)
            || held.settled.load(Ordering::SeqCst)
        {
            return false;
        }
        held.kept.fetch_max(from, Ordering::SeqCst);
        held.route.send_replace(Route::Attached { link, from });
        true
    }

    /// The master has stored the step's end: forget it. False if the
    /// step is not held.
    pub(crate) fn end_kept(&self, key: StepKey) -> bool {
        let Some(held) = self.held.get(&key) else {
            return false;
        };
        held.route.send_replace(Route::Kept);
        true
    }

    /// The master's `Abandon`: kill the step's process group at once if it
    /// runs (no grace period: the master has given up on it, and its build
    /// ended or runs again elsewhere, so its side effects must end now),
    /// and forget it without a report. A step that had ended is only
    /// forgotten: the master stored its end before it lost our receipt.
    pub(crate) fn kill_abandoned(&self, key: StepKey) -> Abandoned {
        let Some(held) = self.held.get(&key) else {
            return Abandoned::NotHeld;
        };
        let ended = held.progress.borrow().end.is_some();
        if !ended {
            held.stop.kill();
        }
        self.abandon(key);
        if ended {
            Abandoned::Ended
        } else {
            Abandoned::Killed
        }
    }

    /// Stop the step if it runs and forget it without a report. False if
    /// the step is not held.
    pub(crate) fn abandon(&self, key: StepKey) -> bool {
        let Some(held) = self.held.get(&key) else {
            return false;
        };
        held.stop.stop();
        held.route.send_replace(Route::Forget);
        true
    }

    /// The link is gone: every step attached to it waits to be adopted
    /// again. A step already kept or forgotten stays so: its sender may not
    /// have seen that yet, and a detach must not undo it.
    pub(crate) fn detach_all(&self) {
        for held in self.held.values() {
            held.route.send_if_modified(|route| {
                let attached = matches!(route, Route::Attached { .. });
                if attached {
                    *route = Route::Detached;
                }
                attached
            });
        }
    }

    /// Abandon every step not attached to a link.
    pub(crate) fn abandon_detached(&self) {
        for (&key, held) in &self.held {
            if matches!(*held.route.borrow(), Route::Detached) {
                self.abandon(key);
            }
        }
    }

    /// Abandon every step.
    pub(crate) fn abandon_all(&self) {
        for &key in self.held.keys() {
            self.abandon(key);
        }
    }

    /// The worker is leaving: from now on a step is let go once its end is
    /// written, without waiting for the master's receipt.
    pub(crate) fn closing(&self) {
        self.closing.send_replace(true);
    }

    /// Ask every step to stop; their ends are still reported.
    pub(crate) fn stop_all(&self) {
        for held in self.held.values() {
            held.stop.stop();
        }
    }

    /// Every held step, for the Hello, in a stable order: those whose end
    /// no master has stored yet and that the master has not abandoned.
    pub(crate) fn held(&self) -> Vec<RunningStep> {
        let mut keys: Vec<_> = self
            .held
            .iter()
            .filter(|(_, h)| {
                !h.settled.load(Ordering::SeqCst)
                    && !matches!(*h.route.borrow(), Route::Forget | Route::Kept)
            })
            .map(|(&key, _)| key)
            .collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|(build, step)| RunningStep { build, step })
            .collect()
    }

    /// True when no step is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Wait for the next step to be done and forget it. Pending forever
    /// when none is held, so it can sit in a `select!`. Cancel-safe.
    pub(crate) async fn next_done(&mut self) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, key))) => {
                self.task_keys.remove(&id);
                self.held.remove(&key);
            }
            Some(Err(e)) => {
                // A panicked step task: forget that step only (its end can
                // no longer be sent; the master's lost-step rules apply).
                let key = self.task_keys.remove(&e.id());
                warn!(?key, "a step task failed: {e}");
                if let Some(key) = key {
                    self.held.remove(&key);
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Wait until every held step is done. Cancel-safe.
    pub(crate) async fn drain(&mut self) {
        while !self.is_empty() {
            self.next_done().await;
        }
    }

    /// Give up on steps that are still not done (after bounded waits).
    pub(crate) fn abort_all(&mut self) {
        if !self.is_empty() {
            warn!(
                left = self.tasks.len(),
                "steps still not done {} s after being stopped; abandoning them",
                STOP_ALL_LIMIT.as_secs()
            );
        }
        self.tasks.abort_all();
        self.held.clear();
    }
}
