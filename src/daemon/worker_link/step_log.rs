//! The log of one step a link was given: opened on its first output (a new
//! build's log must not exist yet), and why output was lost, if it was.

use tracing::warn;

use crate::daemon::logs::{self, StepLogWriter};
use crate::protocol::{BuildId, StepIndex};

/// The log of one step given to a link.
#[derive(Default)]
pub(super) struct StepLog {
    /// Opened on the first output.
    pub(super) writer: Option<StepLogWriter>,
    /// Started by this master (not resumed): its log must not exist yet.
    pub(super) new: bool,
    /// Output lost before a writer could take it (the log cannot be
    /// opened): the step cannot end as a success.
    pub(super) lost: Option<String>,
}

impl StepLog {
    /// The open writer, opening the log on first use; `None` (and the
    /// loss recorded) if it cannot be opened.
    pub(super) fn writer(
        &mut self,
        dir: &std::path::Path,
        build: BuildId,
        step: StepIndex,
        cap: u64,
    ) -> Option<&mut StepLogWriter> {
        if self.writer.is_none() && self.lost.is_none() {
            let opened = if self.new {
                StepLogWriter::create_new(dir, build, step, cap)
            } else {
                StepLogWriter::open(dir, build, step, cap)
            };
            match opened {
                Ok(w) => {
                    // Room to record the end of a build whose log fills
                    // the disk; made again here once space came back.
                    logs::ensure_reserve(dir);
                    self.writer = Some(w);
                }
                Err(e) => {
                    warn!("cannot open the log of build {build} step {step}: {e}");
                    self.lost = Some(if e.kind() == std::io::ErrorKind::AlreadyExists {
                        e.to_string()
                    } else {
                        logs::write_failure(&e)
                    });
                }
            }
        }
        self.writer.as_mut()
    }

    /// Why output was lost, if it was.
    pub(super) fn lost(&self) -> Option<String> {
        self.lost.clone().or_else(|| {
            self.writer
                .as_ref()
                .and_then(|w| w.lost().map(str::to_string))
        })
    }
}
