//! What a standby answers while it waits for the leadership.
//!
//! A standby binds the same sockets as a leader and serves them through
//! the same adapters (control connections, worker door, `MasterHandle`);
//! only the loop behind the handle differs: [`serve`] answers the
//! handle's commands read-only. `status` and `queue` come from the
//! database (the state a takeover would restore, read into a core that
//! is never run); everything that would change state is refused naming
//! the leader (`bbctl` exit 5), and workers are refused with
//! `NotLeader` and the leader's address. `shutdown` (and SIGTERM) stop
//! the standby.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::{LeaderRow, registry};
use crate::config::Config;
use crate::daemon::core::{Core, Restored};
use crate::daemon::messages::{Command, Refusal};
use crate::protocol::{
    ErrorReply, RefusalKind, Reply, Request, ShutdownMode, StatusFilter, StatusReply,
};

/// Reads the state a takeover would restore, without writing (blocking:
/// run off the async threads).
pub type ReadState = Arc<dyn Fn() -> Result<Restored, String> + Send + Sync>;

/// What a standby needs to answer.
pub struct Standby {
    /// The config file as read at start (re-read at takeover).
    pub config: Arc<Config>,
    /// A connection for reading `bb_leader` (the heartbeat connection).
    pub db: Arc<Client>,
    /// The stored state, for `status` and `queue`.
    pub read_state: ReadState,
    /// When this process started (ms since the Unix epoch).
    pub started_at_ms: u64,
}

/// How a standby's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StandbyEnd {
    /// `bbctl shutdown`, SIGTERM or SIGINT: stop the process.
    Shutdown,
    /// Every handle is gone.
    Closed,
}

/// Answer the handle's commands until told to stop.
pub async fn serve(standby: Standby, mut rx: mpsc::Receiver<Command>) -> StandbyEnd {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Client { request, reply } => {
                let _ = reply.send(standby.client(request).await);
            }
            Command::AddChanges { reply, .. } => {
                let _ = reply.send(Err(standby.refusal().await));
            }
            Command::Config { reply } => {
                let _ = reply.send(Arc::clone(&standby.config));
            }
            Command::KnownBuilder { name, reply } => {
                let known = standby.config.builders.iter().any(|b| b.name == name);
                let _ = reply.send(if known {
                    Ok(())
                } else {
                    Err(ErrorReply::not_found(format!("no builder {name:?}")))
                });
            }
            Command::WorkerHello { reply, .. } => {
                let leader = standby.leader().await;
                let words = leader
                    .as_ref()
                    .map(LeaderRow::refusal)
                    .unwrap_or_else(|e| format!("this master is a standby ({e})"));
                let address = leader.ok().and_then(|l| l.address);
                let _ = reply.send(Err(
                    Refusal::new(RefusalKind::NotLeader, words).with_leader(address)
                ));
            }
            Command::LinkOf { reply, .. } => {
                let _ = reply.send(Err(standby.refusal().await));
            }
            Command::Artifact { reply, .. } => {
                let _ = reply.send(Err("this master is a standby".into()));
            }
            Command::StepEnded { .. }
            | Command::WorkerGone { .. }
            | Command::WorkerSilent { .. } => {}
            Command::Reload { reply, .. } | Command::ReloadRead { reply, .. } => match reply {
                Some(reply) => {
                    let _ = reply.send(Err(standby.refusal().await));
                }
                None => info!(
                    "SIGHUP on a standby: nothing to reload; the config file is read again when this master takes over"
                ),
            },
            Command::Shutdown { mode, reply } => {
                if mode == ShutdownMode::Now {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(Reply::Done {
                            message: "the standby is stopping".into(),
                        }));
                    }
                    return StandbyEnd::Shutdown;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err(standby.refusal().await));
                }
            }
        }
    }
    StandbyEnd::Closed
}

impl Standby {
    async fn leader(&self) -> Result<LeaderRow, String> {
        registry::leader(&self.db).await.map_err(|e| e.to_string())
    }

    /// The refusal of a state-changing request: who leads, or why we
    /// cannot tell.
    async fn refusal(&self) -> ErrorReply {
        match self.leader().await {
            Ok(row) => ErrorReply::rejected(row.refusal()),
            Err(e) => ErrorReply::rejected(format!(
                "this master is a standby; the leader cannot be read from the database: {e}"
            )),
        }
    }

    async fn client(&self, request: Request) -> Result<Reply, ErrorReply> {
        match request {
            Request::Status(filter) => {
                let core = self.core().await?;
                Ok(Reply::Status(self.status(&core, &filter)))
            }
            Request::Queue { builder } => {
                let core = self.core().await?;
                if let Some(b) = &builder
                    && !self.config.builders.iter().any(|d| &d.name == b)
                {
                    return Err(ErrorReply::not_found(format!("no builder {b:?}")));
                }
                Ok(Reply::Queue(core.queue_status(builder.as_deref())))
            }
            _ => Err(self.refusal().await),
        }
    }

    /// A core restored from the database, as a takeover would have it,
    /// never run: it only answers questions.
    async fn core(&self) -> Result<Core, ErrorReply> {
        let read = Arc::clone(&self.read_state);
        let restored = tokio::task::spawn_blocking(move || read())
            .await
            .map_err(|e| ErrorReply::failed(format!("reading the state failed: {e}")))?
            .map_err(|e| {
                warn!("a standby cannot read the stored state: {e}");
                ErrorReply::failed(format!("cannot read the state from the database: {e}"))
            })?;
        let now = crate::paths::now_ms();
        Ok(Core::new(Arc::clone(&self.config), restored, now))
    }

    fn status(&self, core: &Core, filter: &StatusFilter) -> StatusReply {
        let now = crate::paths::now_ms();
        let all = core.builder_status();
        let builders_total = all.len() as u32;
        let queued_total = all.iter().map(|b| b.queued).sum();
        let mut builders: Vec<_> = all
            .into_iter()
            .filter(|b| filter.admits(&b.name, &b.state))
            .collect();
        if let Some(limit) = filter.limit {
            builders.truncate(limit as usize);
        }
        let mut running = core.running_status();
        if !filter.is_empty() {
            let shown: std::collections::HashSet<&str> =
                builders.iter().map(|b| b.name.as_str()).collect();
            running.retain(|r| shown.contains(r.builder.as_str()));
        }
        StatusReply {
            master_pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            now_ms: now,
            generation: core.generation(),
            config_hash: core.config().hash.clone(),
            config_origin: self.config.origin.clone(),
            builders,
            // Workers are connected to the leader: a standby knows none.
            workers: Vec::new(),
            running,
            draining: false,
            drain_mode: None,
            builders_total,
            queued_total,
            disk: None,
            tls: None,
            pollers: Vec::new(),
            lock_waits: Vec::new(),
            irc: None,
            // Filled in by the handle.
            leadership: None,
        }
    }
}
