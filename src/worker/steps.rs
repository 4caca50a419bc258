//! The table of steps a worker is running, keyed by (build, step).
//!
//! Keys come from the messages themselves: the worker keeps no per-builder
//! object that a master reload could make stale.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::runner::run_step;
use super::stop::{StopHandle, stop_pair};
use crate::protocol::{BuildId, StepAssignment, StepIndex, WorkerToMaster};

/// Identifies a running step.
pub(crate) type StepKey = (BuildId, StepIndex);

/// How long stopping every step may take before we abandon the stragglers.
/// A stopped step needs at most the stop grace plus the output drain limit.
const STOP_ALL_LIMIT: Duration = Duration::from_secs(15);

/// The running steps and the tasks that run them.
pub(crate) struct Steps {
    dir: PathBuf,
    stops: HashMap<StepKey, StopHandle>,
    tasks: JoinSet<StepKey>,
}

impl Steps {
    /// An empty table for steps that run under `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Steps {
            dir,
            stops: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Start a step that reports on `tx`. A second start of a step that is
    /// still running is refused: it would give two ends for one key.
    pub(crate) fn start(&mut self, assignment: StepAssignment, tx: mpsc::Sender<WorkerToMaster>) {
        let key = (assignment.build, assignment.step);
        if self.stops.contains_key(&key) {
            warn!(
                build = key.0,
                step = key.1,
                "master started a step that is already running; ignoring the duplicate"
            );
            return;
        }
        let (handle, signal) = stop_pair();
        self.stops.insert(key, handle);
        let dir = self.dir.clone();
        self.tasks.spawn(async move {
            run_step(assignment, &dir, tx, signal).await;
            key
        });
    }

    /// Ask one step to stop; unknown steps (already ended) are ignored.
    pub(crate) fn stop(&mut self, key: StepKey) {
        match self.stops.get(&key) {
            Some(handle) => handle.stop(),
            None => debug!(build = key.0, step = key.1, "stop for a step not running"),
        }
    }

    /// True when no step is running.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Wait for the next step to end and forget it. Pending forever when
    /// nothing runs, so it can sit in a `select!`. Cancel-safe.
    pub(crate) async fn next_ended(&mut self) {
        match self.tasks.join_next().await {
            Some(Ok(key)) => {
                self.stops.remove(&key);
            }
            Some(Err(e)) => {
                // A panicked step task: its key is lost with it, so sweep
                // handles whose step can no longer be stopped anyway.
                warn!("a step task failed: {e}");
                self.stops.retain(|_, h| !h.is_closed());
            }
            None => std::future::pending().await,
        }
    }

    /// Stop every step and wait (bounded) until each has reported its end.
    pub(crate) async fn stop_all(&mut self) {
        if self.is_empty() {
            return;
        }
        for handle in self.stops.values() {
            handle.stop();
        }
        let drained = tokio::time::timeout(STOP_ALL_LIMIT, async {
            while !self.tasks.is_empty() {
                self.next_ended().await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                left = self.tasks.len(),
                "steps still not ended {} s after being stopped; abandoning them",
                STOP_ALL_LIMIT.as_secs()
            );
            self.tasks.abort_all();
        }
        self.stops.clear();
    }
}
