//! How long a worker waits between attempts to reach its master:
//! exponential delays with equal jitter, capped lower on the Unix socket
//! than over the network, and kept short for a while after a link that
//! worked was lost (the master is most likely restarting).

use std::time::Duration;

use tokio::time::Instant;

use super::address::MasterAddr;

/// First delay between connection attempts.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest delay between connection attempts to a master on this host
/// (its Unix socket): polling a local socket costs nothing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Longest delay between connection attempts over the network: a master
/// that stays away for long is not hammered by all its remote workers.
pub const BACKOFF_MAX_REMOTE: Duration = Duration::from_secs(60);

/// After a link that worked is lost, attempts come at least this often for
/// [`FAST_RECONNECT_FOR`]: the master is most likely restarting, and its
/// builds wait for this worker only `worker_grace`.
pub const FAST_RECONNECT_MAX: Duration = Duration::from_millis(250);

/// How long after losing a link that worked attempts stay frequent; then
/// the back-off doubles again up to [`BACKOFF_MAX`].
pub const FAST_RECONNECT_FOR: Duration = Duration::from_secs(10);

/// A link that lasted this long always resets the back-off when lost.
pub const STABLE_SESSION: Duration = Duration::from_secs(10);

/// A random number for the jitter, uniform over all `u64`s; injected so
/// that tests are deterministic.
pub(crate) type Random = Box<dyn FnMut() -> u64 + Send>;

/// The system's random numbers (`getrandom`), or the clock if that fails.
fn system_random() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Exponential delays between connection attempts, kept short for a while
/// after a link that worked was lost, with "equal jitter": each delay is
/// drawn between half and all of its exponential value, so that workers
/// cut off together (a master restart, a network outage) do not all come
/// back in the same instant, yet none comes back much sooner than planned.
pub(crate) struct Backoff {
    /// The next delay before jitter.
    next: Duration,
    /// The longest delay before jitter.
    max: Duration,
    /// Until then, no delay exceeds [`FAST_RECONNECT_MAX`].
    fast_until: Option<Instant>,
    random: Random,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("next", &self.next)
            .field("max", &self.max)
            .field("fast_until", &self.fast_until)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// Start at [`BACKOFF_MIN`], never above `max` ([`BACKOFF_MAX`] on the
    /// Unix socket, [`BACKOFF_MAX_REMOTE`] over the network).
    pub(crate) fn new(max: Duration) -> Self {
        Self::with_random(max, Box::new(system_random))
    }

    /// The same, drawing the jitter from `random`.
    pub(crate) fn with_random(max: Duration, random: Random) -> Self {
        Backoff {
            next: BACKOFF_MIN,
            max,
            fast_until: None,
            random,
        }
    }

    /// A back-off whose every delay is an hour: a test that sees a worker
    /// come back within its bound knows it did not wait.
    #[cfg(test)]
    pub(crate) fn hour_long() -> Self {
        let hour = Duration::from_secs(3600);
        Backoff {
            next: hour,
            max: hour,
            fast_until: None,
            random: Box::new(|| u64::MAX),
        }
    }

    /// The longest delay for a master at `addr`.
    pub(crate) fn max_for(addr: &MasterAddr) -> Duration {
        match addr {
            MasterAddr::Unix(_) => BACKOFF_MAX,
            MasterAddr::Tcp(_) | MasterAddr::Tls(_) => BACKOFF_MAX_REMOTE,
        }
    }

    /// The delay to wait now (at `now`): between half and all of the
    /// exponential value, which doubles for the following one, up to
    /// [`FAST_RECONNECT_MAX`] within the fast window, else the maximum.
    pub(crate) fn next_delay(&mut self, now: Instant) -> Duration {
        let cap = match self.fast_until {
            Some(until) if now < until => FAST_RECONNECT_MAX.min(self.max),
            _ => self.max,
        };
        let delay = self.next.min(cap);
        self.next = (delay * 2).min(cap);
        jitter(delay, (self.random)())
    }

    /// Back to the shortest delay, with frequent attempts for
    /// [`FAST_RECONNECT_FOR`] from `now`.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.next = BACKOFF_MIN;
        self.fast_until = Some(now + FAST_RECONNECT_FOR);
    }

    /// A welcomed link that lasted `session` was lost at `now`. Reset, so
    /// that the worker is back within a fraction of a second of a master
    /// that restarted, however short the link was; but a link lost within
    /// the fast window of the previous reset resets nothing unless it
    /// lasted [`STABLE_SESSION`]: a master that welcomes and drops us at
    /// once, again and again, meets the doubling back-off.
    pub(crate) fn link_lost(&mut self, now: Instant, session: Duration) {
        let in_window = self.fast_until.is_some_and(|until| now < until);
        if session >= STABLE_SESSION || !in_window {
            self.reset(now);
        }
    }
}

/// Between half of `delay` and all of it, as `random` falls between 0
/// and `u64::MAX`.
fn jitter(delay: Duration, random: u64) -> Duration {
    let total = delay.as_nanos();
    let half = total / 2;
    let extra = (total - half) * u128::from(random) / u128::from(u64::MAX);
    Duration::from_nanos(u64::try_from(half + extra).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A back-off whose jitter always picks the full delay.
    fn exact(max: Duration) -> Backoff {
        Backoff::with_random(max, Box::new(|| u64::MAX))
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_delay() {
        let ms = Duration::from_millis;
        assert_eq!(jitter(ms(1000), 0), ms(500));
        assert_eq!(jitter(ms(1000), u64::MAX), ms(1000));
        let mid = jitter(ms(1000), u64::MAX / 2);
        assert!(mid.abs_diff(ms(750)) < ms(1), "{mid:?}");
        assert_eq!(jitter(Duration::ZERO, 12345), Duration::ZERO);
        // A cheap deterministic sequence: every delay in its band, and
        // not all the same.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let random = Box::new(move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        });
        let t0 = Instant::now();
        let mut b = Backoff::with_random(BACKOFF_MAX_REMOTE, random);
        let mut seen = Vec::new();
        let mut planned = BACKOFF_MIN;
        for _ in 0..20 {
            let d = b.next_delay(t0);
            assert!(d >= planned / 2 && d <= planned, "{d:?} for {planned:?}");
            seen.push(d);
            planned = (planned * 2).min(BACKOFF_MAX_REMOTE);
        }
        assert!(seen.windows(2).any(|w| w[0] * 2 != w[1]), "{seen:?}");
        assert!(seen.iter().all(|d| *d <= BACKOFF_MAX_REMOTE));
        assert!(seen.last().unwrap() >= &(BACKOFF_MAX_REMOTE / 2));
    }

    #[test]
    fn remote_masters_get_the_longer_cap() {
        let t0 = Instant::now();
        let addr: MasterAddr = "tls://m.example:9989".parse().unwrap();
        let mut b = exact(Backoff::max_for(&addr));
        let last = (0..20).map(|_| b.next_delay(t0)).last().unwrap();
        assert_eq!(last, BACKOFF_MAX_REMOTE);
        assert_eq!(BACKOFF_MAX_REMOTE, Duration::from_secs(60));
        let local: MasterAddr = "/run/bbmaster/worker.sock".parse().unwrap();
        assert_eq!(Backoff::max_for(&local), BACKOFF_MAX);
    }

    #[test]
    fn backoff_doubles_up_to_the_max_and_resets() {
        let t0 = Instant::now();
        let mut b = exact(BACKOFF_MAX);
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay(t0).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        b.reset(t0);
        assert_eq!(b.next_delay(t0), BACKOFF_MIN);
    }

    #[test]
    fn after_a_lost_link_attempts_stay_frequent_for_a_while() {
        let t0 = Instant::now();
        let mut b = exact(BACKOFF_MAX);
        for _ in 0..10 {
            b.next_delay(t0);
        }
        b.reset(t0);
        let soon = t0 + FAST_RECONNECT_FOR - Duration::from_millis(1);
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay(soon).as_millis()).collect();
        assert_eq!(delays, [100, 200, 250, 250, 250, 250]);
        let later = t0 + FAST_RECONNECT_FOR;
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay(later).as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000]);
    }

    #[test]
    fn short_links_lost_again_and_again_meet_the_back_off() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = exact(BACKOFF_MAX);
        // A first short link: reset.
        b.link_lost(t0, ms(50));
        assert_eq!(b.next_delay(t0), ms(100));
        assert_eq!(b.next_delay(t0), ms(200));
        // Another one lost in the window: no reset; the window still caps.
        b.link_lost(t0 + ms(400), ms(50));
        assert_eq!(b.next_delay(t0 + ms(400)), ms(250));
        // Past the window the delays double again.
        let later = t0 + FAST_RECONNECT_FOR + ms(1);
        assert_eq!(b.next_delay(later), ms(250));
        assert_eq!(b.next_delay(later), ms(500));
        // A long link resets even in a window.
        b.reset(later);
        b.link_lost(later + ms(1), STABLE_SESSION);
        assert_eq!(b.next_delay(later + ms(1)), ms(100));
    }
}
