//! `bbctl shutdown` (now, `--drain`, `--cancel`) and signals that stop the
//! master.

use tokio::sync::oneshot;
use tracing::info;

use crate::daemon::actor::Master;
use crate::paths::now_ms;
use crate::protocol::{DrainMode, ErrorReply, EventKind, Reply, ShutdownMode};

impl Master {
    /// `bbctl shutdown` in its three modes; true when the loop must end now.
    pub(in crate::daemon) fn shutdown(
        &mut self,
        mode: ShutdownMode,
        reply: Option<oneshot::Sender<Result<Reply, ErrorReply>>>,
        exit_after_drain: &mut bool,
    ) -> bool {
        let answer = match mode {
            ShutdownMode::Now => Ok(Reply::Done {
                message: "the master is shutting down; running steps stay with their workers for the next master".into(),
            }),
            ShutdownMode::Drain => {
                self.core.set_drain(DrainMode::Shutdown, true, now_ms());
                self.emit(EventKind::MasterDraining {
                    draining: true,
                    mode: DrainMode::Shutdown,
                });
                *exit_after_drain = true;
                let running = self.core.running_builds().count();
                info!("draining for shutdown: {running} build(s) still running");
                Ok(Reply::Done {
                    message: format!(
                        "draining: no new builds start; {} (`bbctl shutdown --cancel` to stop draining)",
                        drain_exit_words(running)
                    ),
                })
            }
            ShutdownMode::Cancel => {
                let was = std::mem::replace(exit_after_drain, false);
                if was {
                    self.core.set_drain(DrainMode::Shutdown, false, now_ms());
                    self.emit(EventKind::MasterDraining {
                        draining: false,
                        mode: DrainMode::Shutdown,
                    });
                    let message = if self.core.is_draining() {
                        "drain for shutdown cancelled; the master goes on, still draining for maintenance (`bbctl undrain` to start builds)"
                    } else {
                        "drain cancelled; the master goes on"
                    };
                    Ok(Reply::Done {
                        message: message.into(),
                    })
                } else {
                    Err(ErrorReply::rejected("the master is not draining"))
                }
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
        mode == ShutdownMode::Now
    }
}

/// When a `shutdown --drain` master exits, in words for 0, 1 or n builds.
fn drain_exit_words(running: usize) -> String {
    match running {
        0 => "no build is running, so the master exits now".into(),
        1 => "the master exits once the running build finishes".into(),
        n => format!("the master exits once the {n} running builds finish"),
    }
}

#[cfg(test)]
mod drain_words_tests {
    #[test]
    fn drain_exit_reads_right_for_0_1_n() {
        assert_eq!(
            super::drain_exit_words(0),
            "no build is running, so the master exits now"
        );
        assert_eq!(
            super::drain_exit_words(1),
            "the master exits once the running build finishes"
        );
        assert_eq!(
            super::drain_exit_words(3),
            "the master exits once the 3 running builds finish"
        );
    }
}
