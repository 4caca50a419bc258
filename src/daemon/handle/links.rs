//! The front door's side for worker links: a hello to authenticate, a
//! step's end, silence, a link gone, an uploaded file to record, and
//! finding a worker's link.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{GONE, MasterHandle};
use crate::daemon::core::LinkId;
use crate::daemon::messages::{Command, LinkCmd, LinkMeta, Notice, Refusal};
use crate::protocol::proof::Proof;
use crate::protocol::{ArtifactInfo, BuildId, RunningStep, StepEnd, StepIndex};

impl MasterHandle {
    /// Tell followers that a step's log grew (no one listening is fine).
    pub fn log_grew(&self, build: BuildId, step: StepIndex) {
        let _ = self.notices.send(Arc::new(Notice::Output { build, step }));
    }

    /// Record an uploaded file; `Err(reason)` if it could not be.
    pub async fn record_artifact(
        &self,
        build: BuildId,
        artifact: ArtifactInfo,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Artifact {
            build,
            artifact,
            reply,
        };
        self.round_trip(cmd, rx)
            .await
            .unwrap_or_else(|| Err(GONE.into()))
    }

    /// A worker finished its handshake: attach it (or say why not).
    /// `None` when the loop is gone.
    #[allow(clippy::too_many_arguments)]
    pub async fn worker_hello(
        &self,
        name: String,
        proof: Proof,
        held: Vec<RunningStep>,
        meta: LinkMeta,
        link: LinkId,
        tx: mpsc::UnboundedSender<LinkCmd>,
        replaces: Option<LinkId>,
    ) -> Option<Result<(), Refusal>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::WorkerHello {
            name,
            proof,
            held,
            meta: Box::new(meta),
            link,
            tx,
            replaces,
            reply,
        };
        self.round_trip(cmd, rx).await
    }

    /// The current link of worker `name` and a way to reach it (for
    /// pinging it when a second connection claims the name); `None` when
    /// it has none or the loop is gone.
    pub async fn link_of(&self, worker: &str) -> Option<(LinkId, mpsc::UnboundedSender<LinkCmd>)> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::LinkOf {
            worker: worker.to_string(),
            reply,
        };
        self.round_trip(cmd, rx).await?.ok()
    }

    /// A worker reported a step's end; false when the loop is gone.
    pub async fn step_ended(
        &self,
        link: LinkId,
        build: BuildId,
        step: StepIndex,
        end: StepEnd,
    ) -> bool {
        let cmd = Command::StepEnded {
            link,
            build,
            step,
            end,
        };
        self.tx.send(cmd).await.is_ok()
    }

    /// A worker link went silent (keepalive): a local worker is killed and
    /// restarted.
    pub async fn worker_silent(&self, link: LinkId) {
        let _ = self.tx.send(Command::WorkerSilent { link }).await;
    }

    /// A worker link ended. Callable from `Drop`: sent at once if the
    /// queue has room, else from a task.
    pub fn worker_gone(&self, link: LinkId) {
        let gone = Command::WorkerGone { link };
        if let Err(mpsc::error::TrySendError::Full(gone)) = self.tx.try_send(gone) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(gone).await;
            });
        }
    }
}
