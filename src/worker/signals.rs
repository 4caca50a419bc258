//! SIGTERM and SIGINT, the two ways to ask a worker to stop cleanly.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both shutdown signals, installed once for the worker's lifetime.
pub(crate) struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    /// Install the handlers; from now on the signals no longer kill the
    /// process outright, so every exit path can stop its steps first.
    pub(crate) fn install() -> std::io::Result<Self> {
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Wait for either signal and name it. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
