//! Schedulers: their kinds and branch filters.

use std::time::Duration;

/// One `[[scheduler]]`: what starts builds on its own, and for which
/// builders. Compared with `==` by a reload (changed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerDef {
    /// Unique among schedulers; keys its durable state.
    pub name: String,
    /// Old names whose state (pending changes, timers) this one takes over.
    pub previous_names: Vec<String>,
    /// The builders a firing queues a request for (current names).
    pub builders: Vec<String>,
    /// What makes it fire, by kind.
    pub kind: SchedulerKind,
}

/// The kinds of scheduler, each with its own settings. A new kind adds a
/// variant here, its name in [`SchedulerKind::KINDS`], its keys in the
/// config schema and a module in `daemon/core/schedulers/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerKind {
    /// `kind = "branch"`: changes matching a filter, once the tree is stable.
    Branch(BranchFilter),
    /// `kind = "periodic"`: `every`.
    Periodic(crate::config::TimedDef),
    /// `kind = "cron"`: `at` in `timezone`.
    Cron(crate::config::TimedDef),
    /// `kind = "triggerable"`: fired by `trigger` steps only.
    Triggerable,
    /// `kind = "dependent"`: fires when the builds of one firing of
    /// `upstream` all succeeded, with the same source stamp.
    Dependent {
        /// The upstream scheduler's name.
        upstream: String,
    },
}

impl SchedulerKind {
    /// The kinds' names as written in `kind = "..."`, for messages.
    pub const KINDS: &'static [&'static str] =
        &["branch", "periodic", "cron", "triggerable", "dependent"];

    /// The kind's name as written in `kind = "..."`.
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::Branch(_) => "branch",
            SchedulerKind::Periodic(_) => "periodic",
            SchedulerKind::Cron(_) => "cron",
            SchedulerKind::Triggerable => "triggerable",
            SchedulerKind::Dependent { .. } => "dependent",
        }
    }

    /// The timing of a `periodic` or `cron` scheduler.
    pub fn timed(&self) -> Option<&crate::config::TimedDef> {
        match self {
            SchedulerKind::Periodic(t) | SchedulerKind::Cron(t) => Some(t),
            _ => None,
        }
    }
}

/// A `branch` scheduler's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BranchFilter {
    /// Only changes of this repository (exactly as the source names it).
    pub repository: Option<String>,
    /// Branch globs (`*` within a path segment, `**` across); empty: all.
    pub branches: Vec<String>,
    /// File globs: a change touching none of them is not important (it is
    /// built with the next important one). Empty: every change is important.
    pub files: Vec<String>,
    /// How long no important change must arrive before it fires (0: at once).
    pub tree_stable: Duration,
}
