//! Messages between the master and its workers.
//!
//! Every message about a step names its build id and step index: the worker
//! holds no per-builder object that a reload could make stale (the bug of
//! the seed mail), and it reports every end of every step it started to
//! whichever connection is current.

use serde::{Deserialize, Serialize};

use super::{BuildId, StepIndex};

/// Every frame a master sends its worker after the handshake: step
/// assignments, stops, resumes and abandons, keepalives, goodbye, and the
/// master's side of transfers.
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
    /// The master has the step's output up to byte `kept` on its disk:
    /// the worker's spool below it no longer waits to be sent (it counts
    /// against `--spool-limit` no more, and its disk may be freed).
    OutputKept {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Output bytes the master has kept.
        kept: u64,
    },
    /// The master has stored the step's end (committed with the build's
    /// next state): the worker may forget the step. Until then it holds
    /// the end and lists the step in its next Hello, so that an end that
    /// reached a master killed before its commit is sent again, not run
    /// again (protocol version 5).
    EndKept {
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
    /// Upload flow control: the master has written this many bytes of the
    /// file being uploaded by this step.
    FileAck {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Bytes of the current file received and written.
        received: u64,
    },
    /// The transfer of this step failed on the master's side (too big,
    /// hash mismatch, missing source, disk error): stop sending, delete
    /// partial files, and end the step with `transfer_failed`.
    FileRefused {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Why, for the step's result.
        reason: String,
    },
    /// Download: a file for this step begins (see [`FileBegin`]).
    FileBegin(FileBegin),
    /// Download: a piece of the current file.
    FileChunk(FileChunk),
    /// Download: the current file is complete; verify its hash.
    FileEnd(FileEnd),
}

/// The start of one file of a transfer, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBegin {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
    /// The file's name at the receiving end: for uploads a relative path
    /// under the build's artifacts (`a.tar.gz`, `sub/b.bin`); for
    /// downloads the source path, for logs.
    pub name: String,
    /// The file's size in bytes, as the sender saw it when it began.
    pub size: u64,
    /// The permission bits the sender asks for.
    pub mode: u32,
}

/// A piece of the current file (at most [`super::transfer::FILE_CHUNK`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
    /// Where `data` starts in the file: chunks come in order, with no gap.
    pub offset: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The end of the current file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEnd {
    /// The build the step belongs to.
    pub build: BuildId,
    /// The step's index within the build.
    pub step: StepIndex,
    /// SHA-256 of the whole file, 64 lowercase hex digits.
    pub sha256: String,
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
    /// Names of the worker's own environment variables the step may see,
    /// beyond the worker's fixed allow-list (the builder's `pass_env`).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Kill the step after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// The master keeps at most this much of the step's output
    /// (`max_log_size`): the worker need not spool more.
    #[serde(default)]
    pub max_output: Option<u64>,
}

/// How to run a step's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireAction {
    /// Run with `/bin/sh -c`.
    Shell(String),
    /// Run this argv directly.
    Command(Vec<String>),
    /// Send the files `from` matches (a glob or a directory, relative to
    /// the step's work dir) to the master, one after another.
    Upload {
        /// The glob or directory.
        from: String,
        /// Largest file the master accepts, in bytes.
        max_size: Option<u64>,
        /// Permission bits the master gives the stored files.
        mode: u32,
    },
    /// Receive one file from the master and put it at `to` (relative to
    /// the step's work dir); the master sends it right after this message.
    Download {
        /// The source, relative to the master's transfer dir (for logs).
        from: String,
        /// The destination, relative to the step's work dir.
        to: String,
        /// Largest file accepted, in bytes.
        max_size: Option<u64>,
        /// Permission bits of the written file.
        mode: u32,
    },
    /// Check the build's revision (`BB_REVISION`, else the head of
    /// `BB_BRANCH`, else the remote's default branch) out into the step's
    /// work dir with the `git` command line (protocol version 4).
    Git {
        /// A URL or a path the worker's `git` can fetch from.
        repository: String,
        /// What happens to files an earlier build left.
        mode: GitMode,
        /// Also check out the submodules, recursively.
        submodules: bool,
    },
}

/// Every frame a worker sends its master after the handshake: output,
/// step ends, keepalives and the worker's side of transfers.
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
    /// Upload: a file of this step begins.
    FileBegin(FileBegin),
    /// Upload: a piece of the current file.
    FileChunk(FileChunk),
    /// Upload: the current file is complete.
    FileEnd(FileEnd),
    /// Download flow control: the worker has written this many bytes of
    /// the file being downloaded.
    FileAck {
        /// The build the step belongs to.
        build: BuildId,
        /// The step's index within the build.
        step: StepIndex,
        /// Bytes of the current file received and written.
        received: u64,
    },
}

/// How a `git` step treats the checkout an earlier build left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitMode {
    /// Fetch and check out; untracked and ignored files stay.
    Incremental,
    /// Fetch, check out, then remove every untracked and ignored file.
    Full,
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
    /// An upload or download step failed: nothing partial was left, files
    /// stored before the failure stay.
    TransferFailed {
        /// Why, in words.
        error: String,
    },
    /// Output was lost on the way to the log (the worker's spool or the
    /// master's log could not be written: disk full, I/O error). The step
    /// may have run to its end, but its build cannot be a success with a
    /// log shorter than what the step printed.
    OutputLost {
        /// Why, naming the cause ("disk full ...", "I/O error ...").
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
