//! The loop's part of the history: whether a builder exists (for
//! `bbctl builds`, whose history is read off the loop), and recording an
//! uploaded file with the batch. The history itself is read off the loop
//! (`daemon/history.rs`), never here.

use tokio::sync::oneshot;

use crate::daemon::actor::{Master, PendingArtifact};
use crate::daemon::core::CoreError;
use crate::protocol::{ArtifactInfo, BuildId, ErrorReply};

impl Master {
    /// `bbctl builds` found no build of `name`: a builder that neither
    /// exists nor ever built is a typo (not found, with the closest names).
    pub(in crate::daemon) fn known_builder(&self, name: String) -> Result<(), ErrorReply> {
        if self.core.has_builder(&name) {
            Ok(())
        } else {
            Err(self.explain(CoreError::UnknownBuilder(name)))
        }
    }

    /// A worker link stored an uploaded file: record it in the batch's
    /// transaction, like the core's records; it hears back after the
    /// commit (see `Master::flush`).
    pub(in crate::daemon) fn record_artifact(
        &mut self,
        build: BuildId,
        artifact: ArtifactInfo,
        reply: oneshot::Sender<Result<(), String>>,
    ) {
        self.artifacts.push(PendingArtifact {
            build,
            artifact,
            reply,
        });
    }
}
