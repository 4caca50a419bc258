//! Draining a step's combined stdout/stderr pipe into its spool file.
//!
//! The pipe is read on a blocking thread (plain `std::io::PipeReader`) and
//! written to the spool, never to the link: a slow or absent master must
//! neither block the step nor lose its output. Each append is announced on
//! the step's [`Progress`] watch, which wakes the step's sender.

use std::io::{ErrorKind, PipeReader, Read};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use super::spool::{Progress, SpoolWriter};
use crate::protocol::{BuildId, StepIndex};

/// Largest piece of output read at once, and sent in one `Output` message:
/// with its envelope it still fits the smallest allowed `max_frame` (64 KiB).
pub const CHUNK_SIZE: usize = 60 * 1024;

/// The reading side of one step's output, running on a blocking thread.
pub(crate) struct OutputPump {
    task: JoinHandle<()>,
    /// Set once we give up on the pump; checked (under the lock) before
    /// every append, so nothing is spooled after the step's end is set.
    abandoned: Arc<Mutex<bool>>,
    build: BuildId,
    step: StepIndex,
}

impl OutputPump {
    /// Start spooling `pipe` into `spool`, announcing growth on `progress`.
    pub(crate) fn start(
        pipe: PipeReader,
        spool: SpoolWriter,
        progress: Arc<watch::Sender<Progress>>,
        build: BuildId,
        step: StepIndex,
    ) -> Self {
        let abandoned = Arc::new(Mutex::new(false));
        let gate = Arc::clone(&abandoned);
        let task =
            tokio::task::spawn_blocking(move || pump(pipe, spool, &progress, build, step, &gate));
        OutputPump {
            task,
            abandoned,
            build,
            step,
        }
    }

    /// Wait for the end of the output (every writer closed the pipe), at
    /// most `limit`. Past that a process that escaped the step's group
    /// still holds the pipe: we stop spooling and leave it behind.
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

/// How often a pump waiting for output checks whether it was given up on.
const ABANDON_CHECK_MS: u16 = 250;

/// The blocking loop: read until EOF, spool every chunk. The pipe is always
/// drained, so the step never blocks on it, whatever the spool does.
fn pump(
    mut pipe: PipeReader,
    mut spool: SpoolWriter,
    progress: &watch::Sender<Progress>,
    build: BuildId,
    step: StepIndex,
    abandoned: &Mutex<bool>,
) {
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        // Wait for data with a bound, so that once the step's end gave up
        // on this pipe (a process outside the group holds it), the thread
        // notices and returns instead of blocking in read() for as long as
        // that process lives (the blocking pool is not endless).
        let mut ready = [nix::poll::PollFd::new(
            pipe.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut ready, nix::poll::PollTimeout::from(ABANDON_CHECK_MS)) {
            Ok(0) => {
                if *abandoned.blocking_lock() {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!(build, step, "cannot wait for the step's output: {e}");
                return;
            }
        }
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(build, step, "cannot read the step's output: {e}");
                return;
            }
        };
        let gate = abandoned.blocking_lock();
        if *gate {
            return;
        }
        let written = spool.append(&buf[..n]);
        let lost = spool.lost();
        progress.send_if_modified(|p| {
            let changed = p.written != written || (p.lost.is_none() && lost.is_some());
            p.written = written;
            if p.lost.is_none() {
                p.lost = lost.map(str::to_string);
            }
            changed
        });
        drop(gate);
    }
}
