//! `bbctl drain` and `undrain`, for the whole master or one worker.

use crate::daemon::actor::Master;
use crate::protocol::{DrainMode, ErrorReply, EventKind, Reply};

impl Master {
    /// `bbctl drain` / `undrain`, for the master or one worker.
    pub(in crate::daemon) fn drain(
        &mut self,
        worker: Option<String>,
        drain: bool,
        now: u64,
    ) -> Result<Reply, ErrorReply> {
        let verb = if drain {
            "draining"
        } else {
            "no longer draining"
        };
        match worker {
            Some(name) => {
                self.core
                    .set_worker_paused(&name, drain, now)
                    .map_err(|e| self.explain(e))?;
                self.emit(if drain {
                    EventKind::WorkerDraining {
                        worker: name.clone(),
                    }
                } else {
                    EventKind::WorkerUndrained {
                        worker: name.clone(),
                    }
                });
                Ok(Reply::Done {
                    message: format!(
                        "worker {name} is {verb} ({} build(s) running on it)",
                        self.core.builds_on(&name)
                    ),
                })
            }
            None => {
                // `undrain` ends a maintenance drain only: a drain for
                // shutdown is ended by `shutdown --cancel`, so that the
                // master never stays set to exit while it starts builds.
                if !drain && self.core.drain_mode() == Some(DrainMode::Shutdown) {
                    return Err(ErrorReply::rejected(
                        "the master is draining for shutdown; `bbctl shutdown --cancel` stops that",
                    ));
                }
                self.core.set_drain(DrainMode::Maintenance, drain, now);
                self.emit(EventKind::MasterDraining {
                    draining: drain,
                    mode: DrainMode::Maintenance,
                });
                let running = self.core.running_builds().count();
                let message = if drain && self.core.drain_mode() == Some(DrainMode::Shutdown) {
                    format!(
                        "the master is draining for maintenance and for shutdown ({running} build(s) running)"
                    )
                } else if drain {
                    format!(
                        "the master is draining for maintenance ({running} build(s) running): requests are queued, none starts until `bbctl undrain`"
                    )
                } else {
                    format!("the master is no longer draining ({running} build(s) running)")
                };
                Ok(Reply::Done { message })
            }
        }
    }
}
