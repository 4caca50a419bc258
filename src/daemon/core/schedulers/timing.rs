//! When a `periodic` or `cron` scheduler fires: pure arithmetic on
//! milliseconds since the Unix epoch, with no clock of its own.
//!
//! A timed scheduler remembers one instant, `since`: its last firing, or,
//! before the first, when it appeared. Its next due time is the first
//! instant of its timing strictly after `since` ([`next_after`]). The
//! master also knows `live_from`: since when it has been running this
//! timing without a break (its start, or the reload that gave the
//! scheduler its current timing). A due time before `live_from` was
//! missed (the master was down, or the timing was different), and
//! [`CatchUp`] decides: `one` fires once at once however many were
//! missed, `none` skips them and waits for the first due time at or after
//! `live_from`. This is what makes a restart safe: the decision depends
//! only on the durable `since` and on times the master is given, so it
//! comes out the same after any number of crashes, and a firing moves
//! `since` past every due time up to now, so none fires twice.
//!
//! `cron` reads the wall clock of its zone through `croner`, which moves a
//! time that a spring-forward skips to the first instant after the gap
//! (fires once) and fires a time that a fall-back repeats only at its
//! first pass (once, not twice). `every` is elapsed time: daylight saving
//! does not touch it.

use crate::config::{CatchUp, CronSpec, Timing};

/// What a timed scheduler does when the master looks at it at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Fire now. `due_ms` is the due time this firing stands for;
    /// `missed` says it was missed and is fired by `catch_up = "one"`.
    Fire {
        /// The due time the firing stands for.
        due_ms: u64,
        /// Whether it was missed while the master was down.
        missed: bool,
    },
    /// Nothing to do before this instant.
    WaitUntil(u64),
    /// The timing has no instant after `since` (a cron pattern that never
    /// matches again): the scheduler never fires.
    Never,
}

/// The first instant of `timing` strictly after `after_ms`.
pub fn next_after(timing: &Timing, after_ms: u64) -> Option<u64> {
    match timing {
        Timing::Every(every) => {
            let every_ms = u64::try_from(every.as_millis()).ok()?.max(1);
            after_ms.checked_add(every_ms)
        }
        Timing::Cron(spec) => cron_after(spec, after_ms),
    }
}

/// The first instant of `timing` at or after `from_ms`, counted from
/// `since_ms` (for `every`, the grid `since + k * every`).
fn first_at_or_after(timing: &Timing, since_ms: u64, from_ms: u64) -> Option<u64> {
    match timing {
        Timing::Every(every) => {
            let every_ms = u64::try_from(every.as_millis()).ok()?.max(1);
            if from_ms <= since_ms {
                return since_ms.checked_add(every_ms);
            }
            let steps = (from_ms - since_ms).div_ceil(every_ms).max(1);
            since_ms.checked_add(steps.checked_mul(every_ms)?)
        }
        Timing::Cron(spec) => cron_after(spec, from_ms.saturating_sub(1)),
    }
}

/// What to do at `now_ms` for a scheduler whose last firing (or start) is
/// `since_ms` and whose timing has been live since `live_from_ms`.
pub fn decide(
    timing: &Timing,
    catch_up: CatchUp,
    since_ms: u64,
    live_from_ms: u64,
    now_ms: u64,
) -> Wake {
    let Some(due) = next_after(timing, since_ms) else {
        return Wake::Never;
    };
    if due > now_ms {
        return Wake::WaitUntil(due);
    }
    if due >= live_from_ms {
        return Wake::Fire {
            due_ms: due,
            missed: false,
        };
    }
    match catch_up {
        CatchUp::One => Wake::Fire {
            due_ms: due,
            missed: true,
        },
        CatchUp::None => match first_at_or_after(timing, since_ms, live_from_ms) {
            None => Wake::Never,
            Some(next) if next <= now_ms => Wake::Fire {
                due_ms: next,
                missed: false,
            },
            Some(next) => Wake::WaitUntil(next),
        },
    }
}

/// When [`decide`] next has something to do, whatever `now` is: the
/// instant at which it would first say [`Wake::Fire`] (possibly already
/// past), or `None` if never.
pub fn next_look(
    timing: &Timing,
    catch_up: CatchUp,
    since_ms: u64,
    live_from_ms: u64,
) -> Option<u64> {
    let due = next_after(timing, since_ms)?;
    if due >= live_from_ms || catch_up == CatchUp::One {
        return Some(due);
    }
    first_at_or_after(timing, since_ms, live_from_ms)
}

/// The first whole second matching the pattern, in the spec's zone,
/// strictly after `after_ms`.
fn cron_after(spec: &CronSpec, after_ms: u64) -> Option<u64> {
    // croner works in whole seconds; a search strictly after the second
    // that holds `after_ms` finds an instant strictly after `after_ms`.
    let second = i64::try_from(after_ms / 1000).ok()?;
    let start = jiff::Timestamp::from_second(second)
        .ok()?
        .to_zoned(spec.zone.clone());
    let next = spec.cron.find_next_occurrence(&start, false).ok()?;
    u64::try_from(next.timestamp().as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::tz::TimeZone;

    use super::*;

    const HOUR: u64 = 3_600_000;
    const MINUTE: u64 = 60_000;

    /// Europe/Berlin's rules as a fixed POSIX string (CET/CEST, changes on
    /// the last Sundays of March and October), independent of the host.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn cron(at: &str) -> Timing {
        Timing::Cron(Box::new(
            CronSpec::with_zone(at, "Europe/Berlin", berlin()).unwrap(),
        ))
    }

    /// Milliseconds of a UTC instant written like `2026-03-29T01:00:00Z`.
    fn ms(utc: &str) -> u64 {
        let t: jiff::Timestamp = utc.parse().unwrap();
        u64::try_from(t.as_millisecond()).unwrap()
    }

    /// Every firing in `[from, to)` when the master runs without a break
    /// and looks at the scheduler at each due time exactly.
    fn firings(timing: &Timing, from: u64, to: u64) -> Vec<u64> {
        let mut since = from;
        let mut out = Vec::new();
        loop {
            match decide(timing, CatchUp::None, since, from, since) {
                Wake::WaitUntil(due) if due < to => {
                    assert_eq!(
                        decide(timing, CatchUp::None, since, from, due),
                        Wake::Fire {
                            due_ms: due,
                            missed: false
                        }
                    );
                    out.push(due);
                    since = due;
                }
                Wake::WaitUntil(_) | Wake::Never => return out,
                Wake::Fire { .. } => panic!("nothing is due at `since` itself"),
            }
        }
    }

    #[test]
    fn spring_forward_fires_a_skipped_time_once_just_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
        let got = firings(
            &cron("30 2 * * *"),
            ms("2026-03-27T12:00:00Z"),
            ms("2026-03-31T12:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                ms("2026-03-28T01:30:00Z"), // 02:30 CET
                ms("2026-03-29T01:00:00Z"), // 03:00 CEST, the first instant after the gap
                ms("2026-03-30T00:30:00Z"), // 02:30 CEST
                ms("2026-03-31T00:30:00Z"),
            ]
        );
    }

    #[test]
    fn fall_back_fires_a_repeated_time_once() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let got = firings(
            &cron("30 2 * * *"),
            ms("2026-10-24T12:00:00Z"),
            ms("2026-10-26T12:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                ms("2026-10-25T00:30:00Z"), // 02:30 CEST, the first pass only
                ms("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
    }

    #[test]
    fn an_hourly_pattern_fires_once_per_real_hour_at_fall_back() {
        let got = firings(
            &cron("0 * * * *"),
            ms("2026-10-24T22:30:00Z"),
            ms("2026-10-25T03:30:00Z"),
        );
        // One firing per real hour: the wall clock reads 02:00 twice and
        // each is a different hour (as cron does for a wildcard hour).
        let want: Vec<u64> = (0..5)
            .map(|h| ms("2026-10-24T23:00:00Z") + h * HOUR)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn weekdays_in_the_zone_not_in_utc() {
        // Monday 2026-03-02 03:00 CET is 02:00 UTC; Saturday and Sunday skipped.
        let got = firings(
            &cron("0 3 * * 1-5"),
            ms("2026-02-27T12:00:00Z"), // a Friday
            ms("2026-03-04T12:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                ms("2026-03-02T02:00:00Z"),
                ms("2026-03-03T02:00:00Z"),
                ms("2026-03-04T02:00:00Z"),
            ]
        );
    }

    #[test]
    fn every_counts_from_the_last_firing_in_elapsed_time() {
        let every = Timing::Every(Duration::from_secs(6 * 3600));
        let start = ms("2026-03-28T22:00:00Z");
        assert_eq!(next_after(&every, start), Some(start + 6 * HOUR));
        // Fired late (the master was busy): the next one counts from then.
        let late = start + 6 * HOUR + 5 * MINUTE;
        assert_eq!(next_after(&every, late), Some(late + 6 * HOUR));
        // Across the spring-forward night: six real hours.
        let got = firings(&every, start, start + 13 * HOUR);
        assert_eq!(got, vec![start + 6 * HOUR, start + 12 * HOUR]);
    }

    #[test]
    fn a_due_time_is_strictly_after_since() {
        let daily = cron("0 3 * * *");
        let at = ms("2026-06-01T01:00:00Z"); // 03:00 CEST
        assert_eq!(next_after(&daily, at - 1), Some(at));
        assert_eq!(next_after(&daily, at), Some(at + 24 * HOUR));
        assert_eq!(next_after(&daily, at + 999), Some(at + 24 * HOUR));
    }

    #[test]
    fn missed_while_down_catch_up_one_fires_once() {
        let daily = cron("0 3 * * *");
        let last = ms("2026-06-01T01:00:00Z");
        // Down from June 1 12:00 to June 4 10:00: three 03:00s missed.
        let restart = ms("2026-06-04T08:00:00Z");
        let wake = decide(&daily, CatchUp::One, last, restart, restart);
        assert_eq!(
            wake,
            Wake::Fire {
                due_ms: last + 24 * HOUR,
                missed: true
            }
        );
        // The firing moves `since` to now: the other missed ones are gone
        // and the next is tomorrow's, not a second catch-up.
        assert_eq!(
            decide(&daily, CatchUp::One, restart, restart, restart),
            Wake::WaitUntil(ms("2026-06-05T01:00:00Z"))
        );
    }

    #[test]
    fn missed_while_down_catch_up_none_skips_to_the_next() {
        let daily = cron("0 3 * * *");
        let last = ms("2026-06-01T01:00:00Z");
        let restart = ms("2026-06-04T08:00:00Z");
        assert_eq!(
            decide(&daily, CatchUp::None, last, restart, restart),
            Wake::WaitUntil(ms("2026-06-05T01:00:00Z"))
        );
        // Woken at that time (nothing recorded meanwhile), it fires, as
        // not missed.
        let next = ms("2026-06-05T01:00:00Z");
        assert_eq!(
            decide(&daily, CatchUp::None, last, restart, next),
            Wake::Fire {
                due_ms: next,
                missed: false
            }
        );
        // Periodic: the grid of the last firing, first point after the start.
        let every = Timing::Every(Duration::from_secs(3600));
        let last = 10 * HOUR;
        let restart = 13 * HOUR + 20 * MINUTE;
        assert_eq!(
            decide(&every, CatchUp::None, last, restart, restart),
            Wake::WaitUntil(14 * HOUR)
        );
    }

    #[test]
    fn a_restart_before_the_due_time_misses_nothing() {
        let every = Timing::Every(Duration::from_secs(3600));
        let last = 10 * HOUR;
        let restart = 10 * HOUR + 30 * MINUTE;
        for catch_up in [CatchUp::None, CatchUp::One] {
            assert_eq!(
                decide(&every, catch_up, last, restart, restart),
                Wake::WaitUntil(11 * HOUR)
            );
            assert_eq!(
                decide(&every, catch_up, last, restart, 11 * HOUR + 7),
                Wake::Fire {
                    due_ms: 11 * HOUR,
                    missed: false
                }
            );
        }
    }

    #[test]
    fn a_repeated_crash_neither_loses_nor_doubles() {
        // The master fires (records since = fired) or crashes before the
        // record: either way one firing stands for the due time.
        let every = Timing::Every(Duration::from_secs(3600));
        let last = 10 * HOUR;
        // Crash before recording the 11:00 firing, restart at 11:30.
        let restart = 11 * HOUR + 30 * MINUTE;
        let wake = decide(&every, CatchUp::One, last, restart, restart);
        assert!(matches!(wake, Wake::Fire { missed: true, .. }));
        // Recorded at 11:30: a second restart at 11:40 does not fire again.
        let again = 11 * HOUR + 40 * MINUTE;
        assert_eq!(
            decide(&every, CatchUp::One, restart, again, again),
            Wake::WaitUntil(12 * HOUR + 30 * MINUTE)
        );
    }

    #[test]
    fn a_pattern_that_never_matches_never_fires() {
        let never = cron("0 0 30 2 *");
        assert_eq!(
            decide(&never, CatchUp::One, 0, 0, ms("2026-01-01T00:00:00Z")),
            Wake::Never
        );
    }
}
