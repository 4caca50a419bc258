//! Keepalive timing for one link: when to ping, when to give up.
//!
//! TCP-like silence detection is far too slow for a half-open connection
//! or a frozen master (the issue reports an hour), so the worker pings at
//! the interval the master chose and drops a link from which nothing at
//! all has arrived for [`MISSED_INTERVALS`] intervals. Pure logic over
//! instants, driven by the session's timer.

use std::time::Duration;

use tokio::time::Instant;

/// Used when the master's Welcome names no interval.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

/// A link silent for this many intervals is lost.
pub const MISSED_INTERVALS: u32 = 3;

/// The shortest interval honoured, so a zero from the master cannot turn
/// the timer into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What the timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Send `Ping { seq }`.
    Ping(u64),
    /// Nothing heard for too long: the link is lost.
    Silent,
    /// Woken early; nothing to do.
    Nothing,
}

/// The keepalive state of one link.
#[derive(Debug)]
pub(crate) struct Keepalive {
    interval: Duration,
    last_heard: Instant,
    next_ping: Instant,
    seq: u64,
}

impl Keepalive {
    /// Start timing a link that has just been welcomed at `now`.
    pub(crate) fn new(keepalive_ms: Option<u64>, now: Instant) -> Self {
        let interval = keepalive_ms
            .map_or(DEFAULT_KEEPALIVE, Duration::from_millis)
            .max(MIN_INTERVAL);
        Keepalive {
            interval,
            last_heard: now,
            next_ping: now + interval,
            seq: 0,
        }
    }

    /// The interval in use.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// A frame arrived.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When the timer must fire next.
    pub(crate) fn wake_at(&self) -> Instant {
        self.next_ping.min(self.deadline())
    }

    /// The timer fired at `now`.
    pub(crate) fn tick(&mut self, now: Instant) -> Tick {
        if now >= self.deadline() {
            return Tick::Silent;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            self.seq += 1;
            return Tick::Ping(self.seq);
        }
        Tick::Nothing
    }

    fn deadline(&self) -> Instant {
        self.last_heard + self.interval * MISSED_INTERVALS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_each_interval_and_gives_up_after_three_silent_ones() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = Keepalive::new(Some(100), t0);
        assert_eq!(k.wake_at(), t0 + ms(100));
        assert_eq!(k.tick(t0 + ms(50)), Tick::Nothing);
        assert_eq!(k.tick(t0 + ms(100)), Tick::Ping(1));
        assert_eq!(k.tick(t0 + ms(200)), Tick::Ping(2));
        k.heard(t0 + ms(250));
        assert_eq!(k.tick(t0 + ms(300)), Tick::Ping(3));
        assert_eq!(k.tick(t0 + ms(400)), Tick::Ping(4));
        assert_eq!(k.tick(t0 + ms(500)), Tick::Ping(5));
        assert_eq!(k.wake_at(), t0 + ms(550));
        assert_eq!(k.tick(t0 + ms(550)), Tick::Silent);
    }

    #[test]
    fn default_and_floor() {
        let t0 = Instant::now();
        assert_eq!(Keepalive::new(None, t0).interval(), DEFAULT_KEEPALIVE);
        assert_eq!(Keepalive::new(Some(0), t0).interval(), MIN_INTERVAL);
    }
}
