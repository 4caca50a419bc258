//! A one-way "please stop" flag between the `StopStep` handler and a step.
//!
//! A `watch` channel is used rather than a oneshot so that dropping the
//! handle does not look like a stop request: a step whose handle is gone
//! simply runs to its own end.

use tokio::sync::watch;

/// Held by whoever may ask a step to stop (the worker's step table, tests).
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

/// Held by the step; resolves once a stop was asked for.
#[derive(Debug)]
pub struct StopSignal(watch::Receiver<bool>);

/// A connected handle and signal for one step.
pub fn stop_pair() -> (StopHandle, StopSignal) {
    let (tx, rx) = watch::channel(false);
    (StopHandle(tx), StopSignal(rx))
}

impl StopHandle {
    /// Ask the step to stop; asking twice is harmless.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

impl StopSignal {
    /// Wait until a stop is asked for. Never resolves if the handle is
    /// dropped without asking, so the step then runs to its own end.
    pub async fn stopped(&mut self) {
        if self.0.wait_for(|asked| *asked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
