//! The validated settings of the time-driven scheduler kinds (`periodic`,
//! `cron`) and of the `trigger` step: what `[[scheduler]]` and
//! `[[builder.step]]` say once checked.
//!
//! Time zones: a `cron` scheduler's `timezone` is looked up once, when the
//! config is loaded, in the system's time zone database
//! (`/usr/share/zoneinfo`, or `$TZDIR`) through `jiff`, and the loaded
//! zone rules travel in the config. We chose this over `chrono-tz`, which
//! embeds its own copy of the whole database in the binary: the system's
//! copy is kept current by the OS's tzdata updates (a reload picks up new
//! rules), costs nothing in the binary, and a zone the system does not
//! know is a config error naming the zone, before any scheduler runs. The
//! pure core never reads a file: it gets the zone with the config. `"UTC"`
//! needs no database. Tests use fixed POSIX rules
//! ([`CronSpec::with_zone`]) so that they do not depend on the host's
//! tzdata.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::tz::TimeZone;

/// When a `periodic` or `cron` scheduler fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    /// `every = "6h"`: counted from the last firing (or from when the
    /// scheduler first appeared, before its first firing).
    Every(Duration),
    /// `at = "0 3 * * 1-5"` in `timezone` (boxed: a parsed pattern is big).
    Cron(Box<CronSpec>),
}

/// What happens to firings missed while the master was down (or before a
/// reload that changed the timing): `catch_up = "none" | "one"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Missed firings are skipped; the next one is the next due time.
    None,
    /// However many were missed, one firing happens at once. The default:
    /// a nightly build missed during maintenance still happens once.
    #[default]
    One,
}

/// The settings shared by `periodic` and `cron` schedulers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedDef {
    /// When it fires.
    pub timing: Timing,
    /// `only_if_changed = true`: a firing with no change since the last
    /// one builds nothing (and still counts as a firing).
    pub only_if_changed: bool,
    /// Firings missed while the master was down.
    pub catch_up: CatchUp,
}

/// A cron pattern (five fields, minute granularity, `@daily` and the like)
/// and the zone whose wall clock it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// The pattern as written, for messages and status.
    pub at: String,
    /// The zone's name as written (`"UTC"` when not set).
    pub timezone: String,
    /// The zone's rules, loaded at config load.
    pub zone: TimeZone,
    /// The parsed pattern.
    pub cron: croner::Cron,
}

/// The time zone of a `cron` scheduler that sets none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

impl CronSpec {
    /// Parses `at` and looks `timezone` up in the system's database.
    pub fn parse(at: &str, timezone: &str) -> Result<Self, CronProblem> {
        let zone = load_zone(timezone)?;
        Self::with_zone(at, timezone, zone)
    }

    /// Parses `at` for a zone already loaded (tests give fixed rules).
    pub fn with_zone(at: &str, timezone: &str, zone: TimeZone) -> Result<Self, CronProblem> {
        let cron = parse_pattern(at)?;
        Ok(CronSpec {
            at: at.to_owned(),
            timezone: timezone.to_owned(),
            zone,
            cron,
        })
    }
}

/// Why `at` or `timezone` is refused, in words for a config message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronProblem {
    /// The pattern does not parse.
    #[error(
        "bad `at` {at:?}: {reason}; write five fields like \"0 3 * * 1-5\" (minute hour day month weekday) or \"@daily\""
    )]
    Pattern {
        /// As written.
        at: String,
        /// croner's reason.
        reason: String,
    },
    /// The zone is not known to the system's database.
    #[error(
        "unknown `timezone` {name:?} ({reason}); write an IANA name like \"Europe/Berlin\" or \"UTC\""
    )]
    Zone {
        /// As written.
        name: String,
        /// jiff's reason.
        reason: String,
    },
}

/// Parses a five-field pattern: no seconds, no year, so that `at` reads
/// like a crontab line.
fn parse_pattern(at: &str) -> Result<croner::Cron, CronProblem> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(at)
        .map_err(|e| CronProblem::Pattern {
            at: at.to_owned(),
            reason: e.to_string().trim_end_matches('.').to_owned(),
        })
}

/// Looks a zone up by name: `UTC` directly, others in the system database.
pub fn load_zone(name: &str) -> Result<TimeZone, CronProblem> {
    if name == DEFAULT_TIMEZONE {
        return Ok(TimeZone::UTC);
    }
    let problem = |reason: String| CronProblem::Zone {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err(problem("not a zone name".into()));
    }
    TimeZone::get(name).map_err(|e| {
        let reason = e.to_string();
        // jiff's message repeats the name; keep its gist short.
        problem(
            if reason.contains("not found") || reason.contains("failed to find") {
                "not in the system's time zone database".into()
            } else {
                reason
            },
        )
    })
}

/// `trigger = { schedulers = [...], wait = true, properties = {...} }`:
/// a step that fires `triggerable` schedulers instead of running a command
/// on a worker. Stored with the build like every step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerSpec {
    /// The `triggerable` schedulers to fire; never empty.
    pub schedulers: Vec<String>,
    /// Whether the step waits for the builds it starts and takes the worst
    /// of their results; otherwise it succeeds once they are queued.
    pub wait: bool,
    /// Properties given to the triggered requests, over the build's own.
    pub properties: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_five_fields_and_nicknames() {
        assert!(CronSpec::parse("0 3 * * 1-5", "UTC").is_ok());
        assert!(CronSpec::parse("@daily", "UTC").is_ok());
        assert!(CronSpec::parse("30 2 * * SUN", "UTC").is_ok());
    }

    #[test]
    fn refuses_seconds_bad_fields_and_unknown_zones() {
        let six = CronSpec::parse("0 0 3 * * *", "UTC").unwrap_err();
        assert!(matches!(six, CronProblem::Pattern { .. }), "{six}");
        let bad = CronSpec::parse("61 3 * * *", "UTC").unwrap_err();
        assert!(
            bad.to_string().starts_with("bad `at` \"61 3 * * *\""),
            "{bad}"
        );
        let zone = CronSpec::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(matches!(zone, CronProblem::Zone { .. }), "{zone}");
        assert!(load_zone("../../etc/passwd").is_err());
        assert!(load_zone("/etc/localtime").is_err());
    }

    #[test]
    fn a_named_zone_comes_from_the_system_database() {
        let spec = CronSpec::parse("30 2 * * *", "Europe/Berlin").expect("tzdata installed");
        assert_eq!(spec.zone.iana_name(), Some("Europe/Berlin"));
    }

    #[test]
    fn a_valid_file_yields_the_schedulers() {
        let text = r#"
[[worker]]
name = "w"
local = true
max_builds = 2
[[builder]]
name = "app"
workers = ["w"]
  [[builder.step]]
  name = "fan"
  trigger = { schedulers = ["t"], wait = true, properties = { suite = "all" } }
[[builder]]
name = "kid"
workers = ["w"]
  [[builder.step]]
  name = "s"
  shell = "true"
[[scheduler]]
name = "six"
kind = "periodic"
builders = ["app"]
every = "6h"
only_if_changed = true
[[scheduler]]
name = "nightly"
kind = "cron"
builders = ["app"]
at = "0 3 * * 1-5"
catch_up = "none"
[[scheduler]]
name = "t"
kind = "triggerable"
builders = ["kid"]
[[scheduler]]
name = "after"
kind = "dependent"
builders = ["app"]
upstream = "nightly"
previous_names = ["old-after"]
"#;
        let c = crate::config::parse_str(text, "t.toml", std::path::Path::new("/")).unwrap();
        let kinds: Vec<&str> = c.schedulers.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["periodic", "cron", "triggerable", "dependent"]);
        let six = c.scheduler("six").unwrap().kind.timed().unwrap();
        assert_eq!(six.timing, Timing::Every(Duration::from_secs(6 * 3600)));
        assert!(six.only_if_changed);
        assert_eq!(six.catch_up, CatchUp::One);
        let nightly = c.scheduler("nightly").unwrap().kind.timed().unwrap();
        assert_eq!(nightly.catch_up, CatchUp::None);
        assert!(matches!(&nightly.timing, Timing::Cron(s) if s.timezone == "UTC"));
        assert_eq!(
            c.scheduler("after").unwrap().kind,
            crate::config::SchedulerKind::Dependent {
                upstream: "nightly".into()
            }
        );
        assert_eq!(c.scheduler("after").unwrap().previous_names, ["old-after"]);
        let crate::config::StepAction::Trigger(t) = &c.builders[0].steps[0].action else {
            panic!("a trigger step");
        };
        assert_eq!(t.schedulers, ["t"]);
        assert!(t.wait);
        assert_eq!(t.properties["suite"], "all");
    }

    #[test]
    fn the_default_zone_needs_no_database() {
        assert_eq!(load_zone("UTC").unwrap(), TimeZone::UTC);
    }
}
