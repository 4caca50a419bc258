//! Checks of what the time-driven and triggered schedulers need: the
//! `trigger` step, and the `periodic`/`cron` keys of `[[scheduler]]`
//! (`every`, `at`, `timezone`, `only_if_changed`, `catch_up`).

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::super::model::SchedulerKind;
use super::super::raw::{RawBuilder, RawEnv, RawScheduler, RawTrigger};
use super::super::schedule::{CatchUp, CronSpec, DEFAULT_TIMEZONE, TimedDef, Timing, TriggerSpec};
use super::Checker;

/// A key, the kinds it belongs to, and where it is set (if it is).
type KeyOwners<'a> = (&'a str, &'a [&'a str], Option<std::ops::Range<usize>>);

/// The shortest `every`: shorter is a busy loop, not a schedule.
const MIN_EVERY: Duration = Duration::from_secs(1);

/// The raw keys of a `periodic` or `cron` scheduler, as the scheduler
/// check hands them over.
pub(in crate::config) struct RawTimed<'r> {
    /// `every = "6h"` (periodic).
    pub every: Option<&'r Spanned<String>>,
    /// `at = "0 3 * * *"` (cron).
    pub at: Option<&'r Spanned<String>>,
    /// `timezone = "Europe/Berlin"` (cron).
    pub timezone: Option<&'r Spanned<String>>,
    /// `only_if_changed = true`.
    pub only_if_changed: Option<&'r Spanned<bool>>,
    /// `catch_up = "none" | "one"`.
    pub catch_up: Option<&'r Spanned<String>>,
}

/// Which of the two timed kinds is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::config) enum TimedKind {
    /// `kind = "periodic"`: needs `every`.
    Periodic,
    /// `kind = "cron"`: needs `at`.
    Cron,
}

impl Checker<'_> {
    /// The checks across schedulers that this module's kinds need: every
    /// `upstream` names another scheduler, and every `trigger` step names
    /// `triggerable` ones.
    pub(super) fn timer_links(&mut self, raw: &[RawScheduler], raw_builders: &[RawBuilder]) {
        let current: Vec<&str> = raw.iter().map(|s| s.name.get_ref().as_str()).collect();
        for s in raw {
            let me = s.name.get_ref().as_str();
            let Some(up) = &s.upstream else { continue };
            if s.kind.as_ref().is_none_or(|k| k.get_ref() != "dependent") {
                continue;
            }
            let name = up.get_ref().as_str();
            if name == me {
                self.report(
                    &up.span(),
                    format!("scheduler `{me}`: `upstream` names itself"),
                );
            } else if !current.contains(&name) {
                let hint = crate::suggest::did_you_mean(name, current.iter().copied());
                self.report(
                    &up.span(),
                    format!("scheduler `{me}`: `upstream` names unknown scheduler `{name}`{hint}"),
                );
            }
        }
        self.trigger_targets(raw, raw_builders);
    }

    /// The kinds of this module: `None` if `kind` is not one of them.
    /// `Some(None)` when it is but something is wrong (reported).
    pub(super) fn timer_kind(
        &mut self,
        raw: &RawScheduler,
        kind: &Spanned<String>,
    ) -> Option<Option<SchedulerKind>> {
        let owner = format!("scheduler `{}`", raw.name.get_ref());
        let timed = RawTimed {
            every: raw.every.as_ref(),
            at: raw.at.as_ref(),
            timezone: raw.timezone.as_ref(),
            only_if_changed: raw.only_if_changed.as_ref(),
            catch_up: raw.catch_up.as_ref(),
        };
        let entry = raw.name.span();
        Some(match kind.get_ref().as_str() {
            "periodic" => self
                .timed(&owner, TimedKind::Periodic, &entry, &timed)
                .map(SchedulerKind::Periodic),
            "cron" => self
                .timed(&owner, TimedKind::Cron, &entry, &timed)
                .map(SchedulerKind::Cron),
            "triggerable" => Some(SchedulerKind::Triggerable),
            "dependent" => match &raw.upstream {
                Some(up) => Some(SchedulerKind::Dependent {
                    upstream: up.get_ref().clone(),
                }),
                None => {
                    self.report(
                        &kind.span(),
                        format!("{owner}: a dependent scheduler needs `upstream` (the scheduler whose builds it follows)"),
                    );
                    None
                }
            },
            _ => return None,
        })
    }

    /// Keys of this module's kinds set on a scheduler of another kind.
    pub(super) fn timer_foreign_keys(&mut self, raw: &RawScheduler, kind: &str) {
        let name = raw.name.get_ref();
        let keyed: [KeyOwners<'_>; 6] = [
            ("every", &["periodic"], raw.every.as_ref().map(|v| v.span())),
            ("at", &["cron"], raw.at.as_ref().map(|v| v.span())),
            (
                "timezone",
                &["cron"],
                raw.timezone.as_ref().map(|v| v.span()),
            ),
            (
                "only_if_changed",
                &["periodic", "cron"],
                raw.only_if_changed.as_ref().map(|v| v.span()),
            ),
            (
                "catch_up",
                &["periodic", "cron"],
                raw.catch_up.as_ref().map(|v| v.span()),
            ),
            (
                "upstream",
                &["dependent"],
                raw.upstream.as_ref().map(|v| v.span()),
            ),
        ];
        if !crate::config::SchedulerKind::KINDS.contains(&kind) {
            return;
        }
        for (key, owners, at) in keyed {
            if let Some(at) = at
                && !owners.contains(&kind)
            {
                let owners = owners
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                self.report(
                    &at,
                    format!(
                        "scheduler `{name}`: `{key}` is a key of kind {owners}, not of `{kind}`"
                    ),
                );
            }
        }
    }

    /// Every `trigger` step names schedulers of kind `triggerable`.
    fn trigger_targets(&mut self, raw: &[RawScheduler], raw_builders: &[RawBuilder]) {
        let kind_of = |name: &str| {
            raw.iter()
                .find(|s| s.name.get_ref() == name)
                .map(|s| s.kind.as_ref().map_or("", |k| k.get_ref().as_str()))
        };
        let triggerable: Vec<&str> = raw
            .iter()
            .filter(|s| {
                s.kind
                    .as_ref()
                    .is_some_and(|k| k.get_ref() == "triggerable")
            })
            .map(|s| s.name.get_ref().as_str())
            .collect();
        for b in raw_builders {
            let Some(steps) = &b.step else { continue };
            for step in steps.get_ref() {
                let Some(list) = step
                    .trigger
                    .as_ref()
                    .and_then(|t| t.get_ref().schedulers.as_ref())
                else {
                    continue;
                };
                let owner = format!(
                    "builder `{}`, step `{}`, `trigger`",
                    b.name.get_ref(),
                    step.name.get_ref()
                );
                for name in list.get_ref() {
                    let message = match kind_of(name.get_ref()) {
                        Some("triggerable") => continue,
                        Some(kind) => format!(
                            "{owner}: scheduler `{}` is of kind \"{kind}\"; a trigger step fires only kind = \"triggerable\"",
                            name.get_ref()
                        ),
                        None => format!(
                            "{owner}: no scheduler is named `{}`{}",
                            name.get_ref(),
                            crate::suggest::did_you_mean(
                                name.get_ref(),
                                triggerable.iter().copied()
                            )
                        ),
                    };
                    self.report(&name.span(), message);
                }
            }
        }
    }

    /// `trigger = { schedulers, wait, properties }`. That each scheduler
    /// exists and is `triggerable` is checked with the schedulers.
    pub(super) fn trigger(&mut self, owner: &str, raw: &Spanned<RawTrigger>) -> TriggerSpec {
        let table = raw.get_ref();
        let owner = format!("{owner}, `trigger`");
        let mut schedulers = Vec::new();
        match &table.schedulers {
            None => self.report(
                &raw.span(),
                format!("{owner} needs `schedulers` (the triggerable schedulers to fire)"),
            ),
            Some(list) if list.get_ref().is_empty() => self.report(
                &list.span(),
                format!("{owner}: `schedulers` must name at least one scheduler"),
            ),
            Some(list) => {
                for name in list.get_ref() {
                    self.name("scheduler", name);
                }
                self.duplicates(list.get_ref(), |n| {
                    format!("{owner}: scheduler `{n}` is named twice")
                });
                schedulers = list.get_ref().iter().map(|n| n.get_ref().clone()).collect();
            }
        }
        TriggerSpec {
            schedulers,
            wait: table.wait.as_ref().is_some_and(|w| *w.get_ref()),
            properties: self.properties(&owner, &table.properties),
        }
    }

    /// A table of build properties: names as `bbctl force-build` takes them.
    fn properties(&mut self, owner: &str, raw: &RawEnv) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            if !is_property_name(key.get_ref()) {
                self.report(
                    &key.span(),
                    format!(
                        "{owner}: property `{}` is not a valid name (letters, digits and '_', \
                         not starting with a digit, at most 128 characters)",
                        key.get_ref()
                    ),
                );
            }
            out.insert(key.get_ref().clone(), value.get_ref().clone());
        }
        out
    }

    /// The keys of a `periodic` or `cron` scheduler named in `owner`;
    /// `entry` is where the scheduler starts, for a missing key. `None`
    /// when something is wrong (reported).
    pub(in crate::config) fn timed(
        &mut self,
        owner: &str,
        kind: TimedKind,
        entry: &std::ops::Range<usize>,
        raw: &RawTimed<'_>,
    ) -> Option<TimedDef> {
        let catch_up = match raw.catch_up {
            None => CatchUp::default(),
            Some(c) => match c.get_ref().as_str() {
                "none" => CatchUp::None,
                "one" => CatchUp::One,
                other => {
                    self.report(
                        &c.span(),
                        format!("{owner}: `catch_up` must be \"none\" or \"one\", not {other:?}"),
                    );
                    CatchUp::default()
                }
            },
        };
        let timing = match kind {
            TimedKind::Periodic => {
                let Some(every) = raw.every else {
                    self.report(
                        entry,
                        format!("{owner}: a periodic scheduler needs `every` (like \"6h\")"),
                    );
                    return None;
                };
                let d = self.duration(owner, "every", every)?;
                if d < MIN_EVERY {
                    self.report(
                        &every.span(),
                        format!(
                            "{owner}: `every` must be at least 1s, not {:?}",
                            every.get_ref()
                        ),
                    );
                    return None;
                }
                Timing::Every(d)
            }
            TimedKind::Cron => {
                let Some(at) = raw.at else {
                    self.report(
                        entry,
                        format!("{owner}: a cron scheduler needs `at` (like \"0 3 * * 1-5\")"),
                    );
                    return None;
                };
                let zone = raw
                    .timezone
                    .map_or(DEFAULT_TIMEZONE, |z| z.get_ref().as_str());
                match CronSpec::parse(at.get_ref(), zone) {
                    Ok(spec) => Timing::Cron(Box::new(spec)),
                    Err(problem) => {
                        let span = match (&problem, raw.timezone) {
                            (super::super::schedule::CronProblem::Zone { .. }, Some(z)) => z.span(),
                            _ => at.span(),
                        };
                        self.report(&span, format!("{owner}: {problem}"));
                        return None;
                    }
                }
            }
        };
        Some(TimedDef {
            timing,
            only_if_changed: raw.only_if_changed.is_some_and(|o| *o.get_ref()),
            catch_up,
        })
    }
}

/// A build property's name, by the rule of the core's
/// `valid_property_name` (which the config, a leaf, cannot import).
fn is_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
