//! The master's signals: SIGHUP reloads, SIGTERM and SIGINT stop.
//!
//! A signal's default action kills the process, so the handlers must be in
//! place before anyone can know the master exists: `bbmaster`'s main blocks
//! the three signals first thing ([`block_early`]), a blocked signal stays
//! pending, and [`MasterSignals::install`] registers the handlers and only
//! then unblocks them, before the state dir is locked or a socket bound.
//! A SIGHUP sent the instant the lock file or `control.sock` appears is
//! therefore a reload (or, before the master loop runs, queued for it),
//! never a death.

use nix::sys::signal::{SigSet, Signal};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::daemon::handle::MasterHandle;

/// The signals the master handles.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Block SIGHUP, SIGTERM and SIGINT in the calling thread (and every thread
/// it starts later): call it first in `main`, before the runtime exists.
/// Children get an empty mask from `std::process::Command` anyway.
pub fn block_early() -> std::io::Result<()> {
    handled().thread_block().map_err(std::io::Error::from)
}

/// The installed handlers, waiting to be forwarded to the master loop.
pub struct MasterSignals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl MasterSignals {
    /// Register the handlers, then unblock the signals in this thread (the
    /// one that polls `block_on`'s future, which stays alive as long as the
    /// master does): one that arrived while blocked is delivered now, to
    /// the handler.
    pub fn install() -> std::io::Result<Self> {
        let signals = MasterSignals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        };
        handled().thread_unblock().map_err(std::io::Error::from)?;
        Ok(signals)
    }

    /// Turn signals into commands for the master loop, until it is gone.
    pub async fn forward(mut self, master: MasterHandle) {
        self.forward_to(&master).await
    }

    /// [`Self::forward`], keeping the handlers: a standby forwards to
    /// its own loop, then, once it leads, to the master loop.
    pub async fn forward_to(&mut self, master: &MasterHandle) {
        loop {
            let sent = tokio::select! {
                _ = self.hup.recv() => {
                    info!("SIGHUP: reloading the config");
                    master.reload_unanswered().await
                }
                _ = self.term.recv() => {
                    info!("SIGTERM: shutting down");
                    master.shutdown_unanswered().await
                }
                _ = self.int.recv() => {
                    info!("SIGINT: shutting down");
                    master.shutdown_unanswered().await
                }
            };
            if !sent {
                return;
            }
        }
    }
}
