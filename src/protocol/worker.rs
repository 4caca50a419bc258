//! Messages between the master and its workers.
//!
//! Every message about a step names its build id and step index: the worker
//! holds no per-builder object that a reload could make stale (the bug of
//! the seed mail), and it reports every end of every step it started to
//! whichever connection is current.

use serde::{Deserialize, Serialize};

use super::{BuildId, StepIndex};

/// Master to worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterToWorker {
    /// Run this step now.
    StartStep(StepAssignment),
    /// Stop this step (TERM, then KILL, to its whole process group).
    StopStep {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
    },
    /// After a reconnect: the master re-adopts this step, which the worker
    /// listed in its Hello. Send its output again from `offset` (the bytes
    /// the master already has), then its end as usual.
    Resume {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Output bytes the master has kept; resend from here.
        offset: u64,
    },
    /// After a reconnect: the master no longer wants this step (its build
    /// was ended meanwhile). Stop it if it runs, and forget it: no report.
    Abandon {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
    },
    /// Keepalive probe; answer with [`WorkerToMaster::Pong`].
    Ping {
        /// Echoed in the answer.
        seq: u64,
    },
    /// Answer to [`WorkerToMaster::Ping`].
    Pong {
        /// The probe's sequence number.
        seq: u64,
    },
    /// The master is going away or no longer wants this worker.
    Goodbye {
        /// Why, for the worker's log.
        reason: String,
    },
}

/// Everything a worker needs to run one step; nothing refers back to
/// master-side objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAssignment {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
    /// The builder's name: the step runs in `<worker dir>/<builder>`.
    pub builder: String,
    /// The step's name, for the worker's log.
    pub name: String,
    /// What to run.
    pub action: WireAction,
    /// The complete environment additions (builder env, step env, BB_* vars).
    pub env: Vec<(String, String)>,
    /// Kill the step after this many milliseconds.
    pub timeout_ms: Option<u64>,
}

/// How to run a step's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireAction {
    /// Run with `/bin/sh -c`.
    Shell(String),
    /// Run this argv directly.
    Command(Vec<String>),
}

/// Worker to master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerToMaster {
    /// A piece of a step's output, in the order it was produced.
    Output {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Where `data` starts in the step's whole output: lets the master
        /// drop bytes it already has after a reconnect, so a log is never
        /// doubled nor gapped.
        #[serde(default)]
        offset: u64,
        /// The bytes, as produced (stdout and stderr interleaved).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A step the worker started has ended, whatever the way.
    StepEnded {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// How it ended.
        end: StepEnd,
    },
    /// Keepalive probe; answer with [`MasterToWorker::Pong`].
    Ping {
        /// Echoed in the answer.
        seq: u64,
    },
    /// Answer to [`MasterToWorker::Ping`].
    Pong {
        /// The probe's sequence number.
        seq: u64,
    },
}

/// How a step's process ended, as seen by the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEnd {
    /// Exited on its own with this status code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// Killed by a signal nobody on our side sent.
    Signalled {
        /// The signal number.
        signal: i32,
    },
    /// Killed because it ran past its timeout.
    TimedOut {
        /// The timeout that was exceeded, in milliseconds.
        after_ms: u64,
    },
    /// Killed because the master asked to stop it.
    Stopped,
    /// Could not be started at all.
    SpawnFailed {
        /// The operating system's reason.
        error: String,
    },
}

/// A step a reconnecting worker still holds: running, or ended with its
/// end not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningStep {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
}
