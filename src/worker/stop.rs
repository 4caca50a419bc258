//! A one-way "please stop" flag between the `StopStep` handler and a step,
//! with a harder level, "kill now", for a step the master has abandoned.
//!
//! A `watch` channel is used rather than a oneshot so that dropping the
//! handle does not look like a stop request: a step whose handle is gone
//! simply runs to its own end.

use tokio::sync::watch;

/// Held by whoever may ask a step to stop (the worker's step table, tests).
#[derive(Debug)]
pub struct StopHandle(watch::Sender<u8>);

/// Held by the step; resolves once a stop was asked for.
#[derive(Debug)]
pub struct StopSignal(watch::Receiver<u8>);

/// Not asked to stop.
const RUN: u8 = 0;
/// Stop: SIGTERM to the group, a grace period, then SIGKILL.
const STOP: u8 = 1;
/// Kill: SIGKILL to the group at once, no grace period.
const KILL: u8 = 2;

/// A connected handle and signal for one step.
pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(RUN);
    (StopHandle(tx), StopSignal(rx))
}

impl StopHandle {
    /// Ask the step to stop; asking twice is harmless.
    pub fn stop(&self) {
        self.0.send_if_modified(|level| {
            let more = *level < STOP;
            if more {
                *level = STOP;
            }
            more
        });
    }

    /// Kill the step's process group at once, without the grace period of
    /// [`StopHandle::stop`] (also while that grace period runs): for a step
    /// the master has given up on, whose build ended or was retried
    /// elsewhere, so that its side effects end now.
    pub fn kill(&self) {
        self.0.send_replace(KILL);
    }
}

impl StopSignal {
    /// Wait until a stop is asked for. Never resolves if the handle is
    /// dropped without asking, so the step then runs to its own end.
    pub async fn stopped(&mut self) {
        if self.0.wait_for(|level| *level >= STOP).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Wait until a kill is asked for; like [`StopSignal::stopped`], never
    /// resolves if the handle is dropped without asking.
    pub async fn killed(&mut self) {
        if self.0.wait_for(|level| *level >= KILL).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
