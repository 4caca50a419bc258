//! Worker logins are slowed for the whole master, not per connection:
//! guessing a worker's secret over many connections at once is no faster
//! than over one.
//!
//! Every login attempt takes a token before its secret is even looked at,
//! and a successful one gives it back. The bucket holds [`BURST`] tokens and
//! refills at one per [`REFILL`], so failed attempts, however parallel, run
//! at that rate once the burst is spent; workers that know their secret
//! (restarts, reconnects) never drain it. A token given back wakes one
//! waiting attempt at once, so that a reconnect storm (every worker back
//! after a master restart) goes through at the loop's pace, not at the
//! refill's.

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
    /// Wakes one waiting attempt when a success gives its token back.
    returned: tokio::sync::Notify,
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
        drop(st);
        self.gate.returned.notify_one();
    }
}

impl LoginGate {
    /// A gate of `burst` tokens refilled at one per `refill`.
    pub fn new(burst: f64, refill: Duration) -> Self {
        LoginGate {
            burst,
            refill,
            state: Mutex::new((burst, Instant::now())),
            returned: tokio::sync::Notify::new(),
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
            // A token comes back by the refill or by a success, whichever
            // is first; either way, look again.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.returned.notified() => {}
            }
        }
    }
}

/// The first delay after a failed proof from an address; it doubles with
/// each further failure, up to [`MAX_ADDRESS_DELAY`].
pub const ADDRESS_DELAY: Duration = Duration::from_secs(2);

/// The longest an address is kept waiting after failed proofs.
pub const MAX_ADDRESS_DELAY: Duration = Duration::from_secs(60);

/// Addresses remembered at once; beyond it the ones whose delay is over
/// are forgotten first, and a new one is not remembered (the shared
/// [`LoginGate`] still slows it).
const MAX_ADDRESSES: usize = 4096;

/// Failed proofs slowed per source address (TCP listeners): an address
/// that guessed wrong is turned away at once until its delay is over, so
/// one guessing address cannot spend the shared [`LoginGate`]'s tokens
/// that every other worker needs.
#[derive(Debug, Default)]
pub struct AddressGate {
    state: Mutex<std::collections::HashMap<std::net::IpAddr, (u32, Instant)>>,
}

impl AddressGate {
    /// How long `ip` must still wait before it may try again; `None`: now.
    pub fn wait_for(&self, ip: std::net::IpAddr) -> Option<Duration> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (_, until) = st.get(&ip)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// `ip` failed a proof: its delay starts (or doubles).
    pub fn failed(&self, ip: std::net::IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if st.len() >= MAX_ADDRESSES && !st.contains_key(&ip) {
            st.retain(|_, (_, until)| *until > now);
            if st.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let entry = st.entry(ip).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        let delay = ADDRESS_DELAY
            .saturating_mul(1u32 << (entry.0 - 1).min(16))
            .min(MAX_ADDRESS_DELAY);
        entry.1 = now + delay;
    }

    /// `ip` proved a secret: forgiven.
    pub fn succeeded(&self, ip: std::net::IpAddr) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_address_waits_longer_each_time_and_others_do_not() {
        let gate = AddressGate::default();
        let bad: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let good: std::net::IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(gate.wait_for(bad), None);
        gate.failed(bad);
        let first = gate.wait_for(bad).unwrap();
        assert!(first <= ADDRESS_DELAY && first > ADDRESS_DELAY / 2);
        gate.failed(bad);
        assert!(gate.wait_for(bad).unwrap() > ADDRESS_DELAY);
        assert_eq!(gate.wait_for(good), None);
        for _ in 0..40 {
            gate.failed(bad);
        }
        assert!(gate.wait_for(bad).unwrap() <= MAX_ADDRESS_DELAY);
        gate.succeeded(bad);
        assert_eq!(gate.wait_for(bad), None);
    }

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

    #[tokio::test]
    async fn a_token_given_back_lets_a_waiting_attempt_in_at_once() {
        // A refill so slow that only a returned token can explain an
        // admission within the test's bound.
        let gate = std::sync::Arc::new(LoginGate::new(2.0, Duration::from_secs(600)));
        let first = gate.admit().await;
        let second = gate.admit().await;
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let gate = std::sync::Arc::clone(&gate);
                tokio::spawn(async move { gate.admit().await.succeeded() })
            })
            .collect();
        // Let them all find the bucket empty and wait (a current-thread
        // runtime: they run only when this task yields).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(waiting.iter().all(|w| !w.is_finished()));
        // Successes give back two tokens; each waiting attempt that gets
        // one succeeds too and passes it on.
        first.succeeded();
        second.succeeded();
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("a waiting attempt was let in when a token came back")
                .unwrap();
        }
    }
}
