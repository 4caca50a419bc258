//! The master's side of `upload` and `download` steps: all their file I/O.
//!
//! One [`Transfers`] lives in each worker link task, beside the step logs:
//! file data never passes through the master loop. The link tells it which
//! steps it gave out (from the `StartStep` it sends), hands it the
//! worker's transfer frames, and writes the frames it returns.
//!
//! Split by job: this file holds the transfers of one link and what every
//! kind shares (starting, refusing, ending a step's transfer); [`upload`]
//! receives and stores artifacts; [`download`] streams a file of the
//! transfer dir to a worker; [`artifact`] streams a stored artifact to
//! `bbctl artifact`.
//!
//! Upload: each file goes to `<state_dir>/artifacts/<build>/.partial-…`,
//! hashed and size-checked as bytes arrive; at `FileEnd` the hash is
//! compared, the file fsynced and linked into place under its name (never
//! replacing a file already there), the artifact recorded in the store
//! (through the master loop), and only then is the whole size acked.
//! Download: the file is resolved inside the transfer dir and streamed
//! with the same window; the worker verifies and places it.
//!
//! Any failure refuses the step's transfer (`FileRefused`), deletes the
//! partial file and remembers the reason, so that the step's end is
//! reported as `transfer_failed` whatever the worker says. A link that
//! ends drops its `Transfers`, and with it every partial file.

mod artifact;
mod download;
mod upload;

use std::collections::HashMap;

use tokio::sync::mpsc;
use tracing::warn;

use crate::config::WorkerLimits;
use crate::daemon::handle::MasterHandle;
use crate::protocol::{BuildId, MasterToWorker, StepEnd, StepIndex, WireAction};
use crate::untrusted::Escaped;

pub use crate::daemon::dirs::Dirs;
pub use artifact::send_artifact;

/// Identifies a step.
type StepKey = (BuildId, StepIndex);

/// The transfers of one link.
pub struct Transfers {
    dirs: Dirs,
    limits: WorkerLimits,
    master: MasterHandle,
    uploads: HashMap<StepKey, upload::Upload>,
    downloads: HashMap<StepKey, download::Download>,
    /// Steps whose transfer failed on our side, with the reason.
    failed: HashMap<StepKey, String>,
    /// Uploaded files being verified, fsynced, placed and recorded, in
    /// tasks of their own (a big file's fsync must not stall the link):
    /// their outcomes come back here.
    stored_tx: mpsc::UnboundedSender<(StepKey, Result<u64, String>)>,
    stored_rx: mpsc::UnboundedReceiver<(StepKey, Result<u64, String>)>,
}

impl Transfers {
    /// No transfer yet.
    pub fn new(dirs: Dirs, master: MasterHandle, limits: WorkerLimits) -> Self {
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        Transfers {
            dirs,
            limits,
            master,
            uploads: HashMap::new(),
            downloads: HashMap::new(),
            failed: HashMap::new(),
            stored_tx,
            stored_rx,
        }
    }

    /// The next uploaded file whose storing finished: the frames to send
    /// (its ack, or the refusal). Cancel-safe.
    pub async fn next_stored(&mut self) -> Vec<MasterToWorker> {
        let Some((key, outcome)) = self.stored_rx.recv().await else {
            return Vec::new();
        };
        match outcome {
            Ok(size) => vec![MasterToWorker::FileAck {
                build: key.0,
                step: key.1,
                received: size,
            }],
            Err(reason) => self.refuse(key, reason),
        }
    }

    /// The link is about to send a `StartStep` with this action: remember
    /// an upload; for a download, the frames that must follow it.
    pub fn on_start(
        &mut self,
        build: BuildId,
        step: StepIndex,
        action: &WireAction,
    ) -> Vec<MasterToWorker> {
        let key = (build, step);
        match action {
            WireAction::Upload { max_size, mode, .. } => {
                self.start_upload(key, *max_size, *mode);
                Vec::new()
            }
            WireAction::Download {
                from,
                max_size,
                mode,
                ..
            } => self.start_download(key, from, *max_size, *mode),
            _ => Vec::new(),
        }
    }

    /// Give up on a step's transfer: forget its state (deleting any
    /// partial file), remember why, and tell the worker.
    fn refuse(&mut self, key: StepKey, reason: String) -> Vec<MasterToWorker> {
        warn!(
            build = key.0,
            step = key.1,
            "transfer failed: {}",
            Escaped(&reason)
        );
        if let Some(upload) = self.uploads.get_mut(&key) {
            upload.drop_current();
        }
        self.downloads.remove(&key);
        self.failed.insert(key, reason.clone());
        vec![MasterToWorker::FileRefused {
            build: key.0,
            step: key.1,
            reason,
        }]
    }

    /// The step ended: forget its transfer (deleting anything partial),
    /// and turn a success into `transfer_failed` if we refused it.
    pub fn on_step_end(&mut self, key: StepKey, end: StepEnd) -> StepEnd {
        self.uploads.remove(&key);
        self.downloads.remove(&key);
        match (self.failed.remove(&key), end) {
            (Some(error), StepEnd::Exited { code: 0 }) => StepEnd::TransferFailed { error },
            (_, end) => end,
        }
    }
}

#[cfg(test)]
mod tests;
