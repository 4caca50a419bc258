//! Worker logins are slowed for the whole master, not per connection:
//! guessing a worker's secret over many connections at once is no faster
//! than over one.
//!
//! Every login attempt takes a token before its secret is even looked at,
//! and a successful one gives it back. The bucket holds [`BURST`] tokens and
//! refills at one per [`REFILL`], so failed attempts, however parallel, run
//! at that rate once the burst is spent; workers that know their secret
//! (restarts, reconnects) never drain it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Attempts that may fail in a row before the gate slows down.
pub const BURST: f64 = 10.0;

/// One more failed attempt is allowed per this much time.
pub const REFILL: Duration = Duration::from_secs(1);

/// The token bucket shared by every connection on the worker socket.
#[derive(Debug)]
pub struct LoginGate {
    burst: f64,
    refill: Duration,
    state: Mutex<(f64, Instant)>,
}

impl Default for LoginGate {
    fn default() -> Self {
        LoginGate::new(BURST, REFILL)
    }
}

/// An admitted attempt; unless [`Admitted::succeeded`] is called its
/// token stays spent.
#[derive(Debug)]
pub struct Admitted<'a> {
    gate: &'a LoginGate,
}

impl Admitted<'_> {
    /// The worker proved its secret: give the token back.
    pub fn succeeded(self) {
        let mut st = self.gate.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = (st.0 + 1.0).min(self.gate.burst);
    }
}

impl LoginGate {
    /// A gate of `burst` tokens refilled at one per `refill`.
    pub fn new(burst: f64, refill: Duration) -> Self {
        LoginGate {
            burst,
            refill,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Wait until an attempt may be checked, and take its token.
    pub async fn admit(&self) -> Admitted<'_> {
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let refilled = now.duration_since(st.1).as_secs_f64() / self.refill.as_secs_f64();
                st.0 = (st.0 + refilled).min(self.burst);
                st.1 = now;
                if st.0 >= 1.0 {
                    st.0 -= 1.0;
                    return Admitted { gate: self };
                }
                self.refill.mul_f64(1.0 - st.0)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_slowed_for_everyone_and_successes_are_not() {
        let refill = Duration::from_millis(50);
        let gate = std::sync::Arc::new(LoginGate::new(4.0, refill));
        let start = Instant::now();
        for _ in 0..4 {
            let _spent = gate.admit().await;
        }
        assert!(start.elapsed() < refill);
        // The burst is spent: six parallel failures take six refills.
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let gate = std::sync::Arc::clone(&gate);
                tokio::spawn(async move {
                    let _spent = gate.admit().await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(start.elapsed() >= refill * 6 - Duration::from_millis(5));
        // A success gives its token back: the next attempt does not wait.
        tokio::time::sleep(refill).await;
        gate.admit().await.succeeded();
        let at = Instant::now();
        gate.admit().await.succeeded();
        assert!(at.elapsed() < refill / 2);
    }
}
