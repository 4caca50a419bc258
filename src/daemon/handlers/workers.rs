//! Worker links as the loop sees them: a hello (authentication), a step's
//! end, silence, a link lost, and finding a worker's link for `ping`.

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::daemon::actor::{Deferred, LinkInfo, Master};
use crate::daemon::core::{CoreError, LinkId};
use crate::daemon::messages::{LinkCmd, LinkMeta, Refusal};
use crate::paths::now_ms;
use crate::protocol::proof::Proof;
use crate::protocol::{
    BuildId, ErrorReply, EventKind, RefusalKind, RunningStep, StepEnd, StepIndex,
};

impl Master {
    /// A worker's hello: attach it and remember its link, or refuse it.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::daemon) fn worker_hello(
        &mut self,
        name: String,
        proof: &Proof,
        held: &[RunningStep],
        meta: LinkMeta,
        link: LinkId,
        tx: mpsc::UnboundedSender<LinkCmd>,
        replaces: Option<LinkId>,
    ) -> Result<(), Refusal> {
        let answer = self.attach_worker(&name, proof, held, link, replaces);
        if answer.is_ok() {
            self.links.insert(
                link,
                LinkInfo {
                    tx,
                    worker: name.clone(),
                    meta,
                    connected_at_ms: now_ms(),
                },
            );
            info!(worker = %name, link, "worker connected");
            self.emit(EventKind::WorkerConnected { worker: name });
        }
        answer
    }

    /// A worker reported a step's end.
    pub(in crate::daemon) fn step_ended(
        &mut self,
        link: LinkId,
        build: BuildId,
        step: StepIndex,
        end: StepEnd,
    ) {
        if let Err(e) = self.core.step_ended(link, build, step, end, now_ms()) {
            warn!("ignored a step report: {e}");
        }
        // Acknowledged either way, after the batch's commit: a report the
        // core ignored will never be wanted, and a worker must not hold it.
        self.replies.push(Deferred::EndKept { link, build, step });
    }

    /// A link dropped for keepalive silence: a local worker is then frozen
    /// or hung, and is killed and restarted.
    pub(in crate::daemon) fn worker_silent(&mut self, link: LinkId) {
        if let Some(info) = self.links.get(&link)
            && self
                .core
                .config()
                .worker(&info.worker)
                .is_some_and(|def| def.local)
        {
            self.local.kill_frozen(&info.worker);
        }
    }

    /// A worker's connection ended.
    pub(in crate::daemon) fn worker_gone(&mut self, link: LinkId) {
        let known = self.links.remove(&link).is_some();
        if let Some(name) = self.core.link_worker(link).map(str::to_string)
            && known
        {
            info!(worker = %name, link, "worker disconnected");
            self.emit(EventKind::WorkerLost {
                worker: name,
                reason: "connection lost".into(),
            });
        }
        self.core.worker_lost(link, now_ms());
    }

    /// The connection task of a worker, for `bbctl ping`.
    pub(in crate::daemon) fn link_of(
        &self,
        worker: &str,
    ) -> Result<(LinkId, mpsc::UnboundedSender<LinkCmd>), ErrorReply> {
        match self.links.iter().find(|(_, l)| l.worker == worker) {
            Some((id, l)) => Ok((*id, l.tx.clone())),
            None if self.core.config().worker(worker).is_none() => {
                Err(self.explain(CoreError::UnknownWorker(worker.to_string())))
            }
            None => Err(ErrorReply::failed(format!(
                "worker `{worker}` is not connected"
            ))),
        }
    }

    pub(in crate::daemon) fn attach_worker(
        &mut self,
        name: &str,
        proof: &Proof,
        held: &[RunningStep],
        link: LinkId,
        replaces: Option<LinkId>,
    ) -> Result<(), Refusal> {
        let Some(def) = self.core.config().worker(name) else {
            return Err(Refusal::new(
                RefusalKind::UnknownWorker,
                format!("no worker named `{name}` in the master's config"),
            ));
        };
        let expected = if def.local {
            self.local.secret(name)
        } else {
            def.secret.as_ref().map(|s| s.0.clone())
        };
        let ok = expected.is_some_and(|secret| proof.verify(&secret, name));
        if !ok {
            return Err(Refusal::new(
                RefusalKind::WrongSecret,
                format!("wrong secret for worker `{name}`"),
            ));
        }
        // One worker, one link: the old link did not answer a ping, so it
        // goes (its builds wait for the worker as after any lost link, and
        // the new link's `running` list takes them back just below).
        if let Some(old) = replaces
            && self.links.get(&old).is_some_and(|l| l.worker == name)
        {
            if let Some(info) = self.links.remove(&old) {
                let _ = info.tx.send(LinkCmd::Close(
                    "replaced by a new connection of this worker".into(),
                ));
            }
            warn!(worker = %name, old, link, "worker's old link silent to a ping: replaced by the new one");
            self.emit(EventKind::WorkerLost {
                worker: name.to_string(),
                reason: "replaced by a new connection (the old link did not answer a ping)".into(),
            });
            self.core.worker_lost(old, now_ms());
        }
        self.core
            .worker_connected(name, link, held, now_ms())
            .map_err(|e| {
                let kind = match e {
                    CoreError::WorkerAlreadyConnected(_) => RefusalKind::AlreadyConnected,
                    CoreError::WorkerRemoved(_) => RefusalKind::Removed,
                    CoreError::UnknownWorker(_) => RefusalKind::UnknownWorker,
                    _ => RefusalKind::Other,
                };
                Refusal::new(kind, e.to_string())
            })
    }
}
