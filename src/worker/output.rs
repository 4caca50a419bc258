//! Forwarding a step's combined stdout/stderr pipe to the master.
//!
//! The pipe is read on a blocking thread (plain `std::io::PipeReader`), and
//! each chunk goes to the connection's writer with `blocking_send`, so a
//! slow master slows the step down instead of filling our memory.

use std::io::{ErrorKind, PipeReader, Read};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::protocol::{BuildId, StepIndex, WorkerToMaster};

/// Largest piece of output sent in one `Output` message.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The reading side of one step's output, running on a blocking thread.
pub(crate) struct OutputPump {
    task: JoinHandle<()>,
    /// Set once we give up on the pump; checked (under the lock) before
    /// every send, so no `Output` can follow the step's `StepEnded`.
    abandoned: Arc<Mutex<bool>>,
    build: BuildId,
    step: StepIndex,
}

impl OutputPump {
    /// Start forwarding `pipe` as `Output` messages of (`build`, `step`).
    pub(crate) fn start(
        pipe: PipeReader,
        build: BuildId,
        step: StepIndex,
        tx: mpsc::Sender<WorkerToMaster>,
    ) -> Self {
        let abandoned = Arc::new(Mutex::new(false));
        let gate = Arc::clone(&abandoned);
        let task = tokio::task::spawn_blocking(move || pump(pipe, build, step, &tx, &gate));
        OutputPump {
            task,
            abandoned,
            build,
            step,
        }
    }

    /// Wait for the end of the output (every writer closed the pipe), at
    /// most `limit`. Past that a process that escaped the step's group
    /// still holds the pipe: we stop forwarding and leave it behind.
    pub(crate) async fn finish(self, limit: Duration) {
        let OutputPump {
            task,
            abandoned,
            build,
            step,
        } = self;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(build, step, "output reader failed: {e}"),
            Err(_) => {
                warn!(
                    build,
                    step,
                    "a process outside the step's group still holds its output pipe {} s after the step ended; not waiting for more output",
                    limit.as_secs()
                );
                *abandoned.lock().await = true;
            }
        }
    }
}

/// The blocking loop: read until EOF, forward while the connection works.
fn pump(
    mut pipe: PipeReader,
    build: BuildId,
    step: StepIndex,
    tx: &mpsc::Sender<WorkerToMaster>,
    abandoned: &Mutex<bool>,
) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut forwarding = true;
    let mut offset = 0u64;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(build, step, "cannot read the step's output: {e}");
                return;
            }
        };
        if !forwarding {
            // Keep draining so the step never blocks on a full pipe.
            continue;
        }
        let gate = abandoned.blocking_lock();
        if *gate {
            return;
        }
        let msg = WorkerToMaster::Output {
            build,
            step,
            offset,
            data: buf[..n].to_vec(),
        };
        offset += n as u64;
        if tx.blocking_send(msg).is_err() {
            debug!(build, step, "link gone; discarding further output");
            forwarding = false;
        }
        drop(gate);
    }
}
