//! The `periodic` and `cron` schedulers: one state machine, two timings
//! ([`super::timing`]).
//!
//! Durable state ([`TimedState`], kept as JSON by the framework's
//! `Record::SchedulerState`) is written in the same record batch as the
//! firing's requests, so a crash either keeps both or neither: the firing
//! happens once. After a restart, or a reload that changed the timing, due
//! times before that moment count as missed and `catch_up` decides.
//! `only_if_changed` keeps the changes seen since the last firing (also in
//! the state): a firing with none builds nothing but still counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{TimedDef, Timing};

use super::timing::{Wake, decide, next_look};

/// A change as a timed scheduler keeps it for `only_if_changed`: enough
/// for the source stamp of the firing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenChange {
    /// The change's id.
    pub id: u64,
    /// Its repository.
    pub repository: String,
    /// Its branch.
    pub branch: String,
    /// Its revision.
    pub revision: String,
}

/// What survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedState {
    /// The last firing, or when the scheduler appeared before its first:
    /// the next due time counts from here.
    pub since_ms: u64,
    /// The last firing itself, for status (`None` before the first).
    #[serde(default)]
    pub last_fired_ms: Option<u64>,
    /// Changes seen since the last firing (`only_if_changed` only).
    #[serde(default)]
    pub changes: Vec<SeenChange>,
}

/// One firing: what to queue, for each builder of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The request's reason, after `scheduler NAME: `.
    pub why: String,
    /// One request per source stamp: `(repository, branch, revision,
    /// change ids)`, or one request without a stamp (`None`). Empty: the
    /// firing builds nothing (`only_if_changed` with no change).
    pub sources: Vec<Option<StampParts>>,
}

/// A source stamp's parts, built into the framework's `SourceStamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampParts {
    /// The repository.
    pub repository: String,
    /// The branch.
    pub branch: String,
    /// The newest revision seen on it.
    pub revision: String,
    /// The changes, oldest first.
    pub changes: Vec<u64>,
}

/// A live `periodic` or `cron` scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    /// Its settings, as the config in force says.
    pub def: TimedDef,
    /// Its durable state.
    pub state: TimedState,
    /// Since when this timing has been running without a break: the
    /// master's start, or the reload that changed it.
    live_from_ms: u64,
}

impl Timed {
    /// A scheduler that just appeared (first start, or added by a
    /// reload): it counts from now.
    pub fn new(def: TimedDef, now_ms: u64) -> Self {
        Timed {
            def,
            state: TimedState {
                since_ms: now_ms,
                last_fired_ms: None,
                changes: Vec::new(),
            },
            live_from_ms: now_ms,
        }
    }

    /// A scheduler read back at a restart from its JSON (tests); the
    /// framework reads the JSON itself ([`Timed::restored`]).
    #[cfg(test)]
    pub fn restore(def: TimedDef, saved: &str, now_ms: u64) -> Self {
        match serde_json::from_str::<TimedState>(saved) {
            Ok(state) => Timed {
                def,
                state,
                live_from_ms: now_ms,
            },
            Err(_) => Self::new(def, now_ms),
        }
    }

    /// A scheduler read back at a start from its saved state.
    pub fn restored(def: TimedDef, state: TimedState, now_ms: u64) -> Self {
        Timed {
            def,
            state,
            live_from_ms: now_ms,
        }
    }

    /// The state as the framework stores it.
    pub fn saved(&self) -> String {
        serde_json::to_string(&self.state).expect("plain data serializes")
    }

    /// A reload: the last firing and the changes stay; a new timing (or a
    /// new `catch_up`) takes effect now, so due times before now that it
    /// would have had count as missed.
    pub fn reload(&mut self, def: TimedDef, now_ms: u64) {
        if def.timing != self.def.timing {
            self.live_from_ms = now_ms;
        }
        if !def.only_if_changed {
            self.state.changes.clear();
        }
        self.def = def;
    }

    /// When the scheduler next needs the master's attention (possibly
    /// already past: then at once).
    pub fn deadline(&self) -> Option<u64> {
        next_look(
            &self.def.timing,
            self.def.catch_up,
            self.state.since_ms,
            self.live_from_ms,
        )
    }

    /// A change arrived that this scheduler takes; `true` when the state
    /// changed (and must be recorded).
    pub fn change(&mut self, change: SeenChange) -> bool {
        if !self.def.only_if_changed || self.state.changes.iter().any(|c| c.id == change.id) {
            return false;
        }
        self.state.changes.push(change);
        true
    }

    /// Time passed: fire if due. On `Some`, the caller records the new
    /// state with the firing's requests, in one batch.
    pub fn tick(&mut self, now_ms: u64) -> Option<Firing> {
        let Wake::Fire { due_ms, missed } = self.wake(now_ms) else {
            return None;
        };
        let what = match &self.def.timing {
            Timing::Every(every) => format!("every {}", humantime::format_duration(*every)),
            Timing::Cron(spec) => format!("at \"{}\" ({})", spec.at, spec.timezone),
        };
        let mut why = what;
        if missed {
            why.push_str(&format!(
                ", catching up a firing missed at {} while the master was down",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(due_ms)
                )
            ));
        }
        let sources = if self.def.only_if_changed {
            let stamps = stamps(std::mem::take(&mut self.state.changes));
            if stamps.is_empty() {
                why.push_str(", no change since the last firing: nothing to build");
            }
            stamps.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        self.state.since_ms = now_ms;
        self.state.last_fired_ms = Some(now_ms);
        Some(Firing { why, sources })
    }

    fn wake(&self, now_ms: u64) -> Wake {
        decide(
            &self.def.timing,
            self.def.catch_up,
            self.state.since_ms,
            self.live_from_ms,
            now_ms,
        )
    }
}

/// One stamp per repository and branch, with its newest revision (the
/// last change seen) and every change, oldest first.
fn stamps(changes: Vec<SeenChange>) -> Vec<StampParts> {
    let mut by_branch: BTreeMap<(String, String), StampParts> = BTreeMap::new();
    for c in changes {
        let entry = by_branch
            .entry((c.repository.clone(), c.branch.clone()))
            .or_insert_with(|| StampParts {
                repository: c.repository.clone(),
                branch: c.branch.clone(),
                revision: String::new(),
                changes: Vec::new(),
            });
        entry.revision = c.revision;
        entry.changes.push(c.id);
    }
    by_branch.into_values().collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{CatchUp, CronSpec};

    const HOUR: u64 = 3_600_000;

    fn every(hours: u64, catch_up: CatchUp, only_if_changed: bool) -> TimedDef {
        TimedDef {
            timing: Timing::Every(Duration::from_secs(hours * 3600)),
            only_if_changed,
            catch_up,
        }
    }

    fn change(id: u64, branch: &str) -> SeenChange {
        SeenChange {
            id,
            repository: "r".into(),
            branch: branch.into(),
            revision: format!("rev{id}"),
        }
    }

    #[test]
    fn fires_when_due_and_counts_from_the_firing() {
        let mut t = Timed::new(every(6, CatchUp::One, false), 0);
        assert_eq!(t.deadline(), Some(6 * HOUR));
        assert_eq!(t.tick(6 * HOUR - 1), None);
        let f = t.tick(6 * HOUR + 10).expect("due");
        assert_eq!(f.sources, vec![None]);
        assert!(f.why.starts_with("every 6h"), "{}", f.why);
        assert_eq!(t.state.last_fired_ms, Some(6 * HOUR + 10));
        assert_eq!(t.deadline(), Some(12 * HOUR + 10));
        assert_eq!(t.tick(6 * HOUR + 20), None, "never twice for one due time");
    }

    #[test]
    fn a_restart_resumes_from_the_saved_state_once() {
        let mut t = Timed::new(every(1, CatchUp::One, false), 0);
        t.tick(HOUR).unwrap();
        let saved = t.saved();
        // Down from 1h30 to 4h: catch up once, then back on the hour grid
        // of the new firing.
        let mut back = Timed::restore(every(1, CatchUp::One, false), &saved, 4 * HOUR);
        let f = back.tick(4 * HOUR).expect("caught up");
        assert!(f.why.contains("catching up"), "{}", f.why);
        assert_eq!(back.tick(4 * HOUR + 1), None);
        // A crash before the catch-up was stored: the saved state still
        // says 1h, so the next start catches up once again, not more.
        let mut again = Timed::restore(every(1, CatchUp::One, false), &saved, 4 * HOUR + 5);
        assert!(again.tick(4 * HOUR + 5).is_some());
        assert_eq!(again.tick(4 * HOUR + 6), None);
        // catch_up = "none": nothing until the grid's next point.
        let mut none = Timed::restore(every(1, CatchUp::None, false), &saved, 4 * HOUR + 30);
        assert_eq!(none.tick(4 * HOUR + 30), None);
        assert_eq!(none.deadline(), Some(5 * HOUR));
        assert!(none.tick(5 * HOUR).is_some());
    }

    #[test]
    fn a_reload_keeps_the_last_firing() {
        let mut t = Timed::new(every(6, CatchUp::None, false), 0);
        t.tick(6 * HOUR).unwrap();
        // Same timing: untouched.
        t.reload(every(6, CatchUp::None, false), 7 * HOUR);
        assert_eq!(t.deadline(), Some(12 * HOUR));
        // Shorter: counted from the last firing; 7h is past, and with
        // catch_up = "none" the grid's next point after the reload is 8h.
        t.reload(every(1, CatchUp::None, false), 7 * HOUR + 30 * 60_000);
        assert_eq!(t.deadline(), Some(8 * HOUR));
    }

    #[test]
    fn only_if_changed_builds_the_changes_since_the_last_firing() {
        let mut t = Timed::new(every(1, CatchUp::One, true), 0);
        let f = t.tick(HOUR).unwrap();
        assert!(f.sources.is_empty(), "no change: nothing to build");
        assert!(t.change(change(1, "main")));
        assert!(t.change(change(2, "dev")));
        assert!(t.change(change(3, "main")));
        assert!(!t.change(change(3, "main")), "one change once");
        // The changes are durable with the state.
        let saved = t.saved();
        let mut t = Timed::restore(every(1, CatchUp::One, true), &saved, HOUR + 1);
        let f = t.tick(2 * HOUR).unwrap();
        assert_eq!(
            f.sources,
            vec![
                Some(StampParts {
                    repository: "r".into(),
                    branch: "dev".into(),
                    revision: "rev2".into(),
                    changes: vec![2],
                }),
                Some(StampParts {
                    repository: "r".into(),
                    branch: "main".into(),
                    revision: "rev3".into(),
                    changes: vec![1, 3],
                }),
            ]
        );
        assert!(t.tick(3 * HOUR).unwrap().sources.is_empty(), "built once");
    }

    #[test]
    fn without_only_if_changed_changes_are_not_kept() {
        let mut t = Timed::new(every(1, CatchUp::One, false), 0);
        assert!(!t.change(change(1, "main")));
        assert!(t.state.changes.is_empty());
    }

    #[test]
    fn a_cron_reason_names_the_pattern_and_zone() {
        let spec = CronSpec::parse("0 3 * * *", "UTC").unwrap();
        let def = TimedDef {
            timing: Timing::Cron(Box::new(spec)),
            only_if_changed: false,
            catch_up: CatchUp::One,
        };
        let mut t = Timed::new(def, 0);
        assert_eq!(t.deadline(), Some(3 * HOUR));
        let f = t.tick(3 * HOUR).unwrap();
        assert_eq!(f.why, "at \"0 3 * * *\" (UTC)");
    }

    #[test]
    fn unreadable_state_starts_afresh() {
        let t = Timed::restore(every(1, CatchUp::One, false), "{not json", 5 * HOUR);
        assert_eq!(t.deadline(), Some(6 * HOUR));
    }
}
