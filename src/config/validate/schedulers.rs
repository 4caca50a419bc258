//! Checks of `[[scheduler]]` entries: names, previous names, kind, the
//! builders they start, and each kind's own keys (`branch` here; a new
//! kind adds an arm to [`Checker::scheduler_kind`] and its keys to
//! [`Checker::foreign_keys`]).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::model::{BranchFilter, SchedulerDef, SchedulerKind};
use super::super::raw::{RawBuilder, RawScheduler};
use super::Checker;

impl Checker<'_> {
    /// All schedulers, then the checks across them.
    pub(super) fn schedulers(
        &mut self,
        raw: &[RawScheduler],
        builders: &[RawBuilder],
    ) -> Vec<SchedulerDef> {
        let known: Vec<&str> = builders.iter().map(|b| b.name.get_ref().as_str()).collect();
        let defs = raw
            .iter()
            .filter_map(|s| self.scheduler(s, &known))
            .collect();
        self.duplicates(raw.iter().map(|s| &s.name), |n| {
            format!("duplicate scheduler name `{n}`")
        });
        self.scheduler_previous_names(raw);
        self.timer_links(raw, builders);
        defs
    }

    /// A previous name must not be any scheduler's current name, nor be
    /// claimed twice.
    fn scheduler_previous_names(&mut self, raw: &[RawScheduler]) {
        let current: Vec<&str> = raw.iter().map(|s| s.name.get_ref().as_str()).collect();
        let mut claimed: HashMap<&str, (&str, Range<usize>)> = HashMap::new();
        for s in raw {
            let me = s.name.get_ref().as_str();
            for old in &s.previous_names {
                let old_name = old.get_ref().as_str();
                let message = if current.contains(&old_name) {
                    format!(
                        "scheduler `{me}`: previous name `{old_name}` is the current name of a scheduler"
                    )
                } else if let Some((owner, at)) = claimed.get(old_name) {
                    let line = self.line_of(at);
                    format!(
                        "scheduler `{me}`: previous name `{old_name}` is already claimed by \
                         scheduler `{owner}` (line {line})"
                    )
                } else {
                    claimed.insert(old_name, (me, old.span()));
                    continue;
                };
                self.report(&old.span(), message);
            }
        }
    }

    /// One scheduler; `None` when its kind is missing or unknown (reported).
    fn scheduler(&mut self, raw: &RawScheduler, known: &[&str]) -> Option<SchedulerDef> {
        self.name("scheduler", &raw.name);
        for old in &raw.previous_names {
            self.name("previous", old);
        }
        let name = raw.name.get_ref().clone();
        let builders = self.scheduler_builders(raw, known);
        let kind = self.scheduler_kind(raw)?;
        Some(SchedulerDef {
            name,
            previous_names: raw
                .previous_names
                .iter()
                .map(|p| p.get_ref().clone())
                .collect(),
            builders,
            kind,
        })
    }

    /// `builders`: present, non-empty, known, no repeats.
    fn scheduler_builders(&mut self, raw: &RawScheduler, known: &[&str]) -> Vec<String> {
        let name = raw.name.get_ref();
        let Some(list) = &raw.builders else {
            self.report(
                &raw.name.span(),
                format!("scheduler `{name}` needs `builders`, the builders it starts"),
            );
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(
                &list.span(),
                format!("scheduler `{name}`: `builders` must not be empty"),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for builder in list.get_ref() {
            let b = builder.get_ref().as_str();
            if seen.contains(&b) {
                self.report(
                    &builder.span(),
                    format!("scheduler `{name}` lists builder `{b}` twice"),
                );
                continue;
            }
            seen.push(b);
            if !known.contains(&b) {
                let hint = crate::suggest::did_you_mean(b, known.iter().copied());
                self.report(
                    &builder.span(),
                    format!("scheduler `{name}` lists unknown builder `{b}`{hint}"),
                );
            }
        }
        seen.into_iter().map(str::to_owned).collect()
    }

    /// `kind`, and the keys of that kind.
    fn scheduler_kind(&mut self, raw: &RawScheduler) -> Option<SchedulerKind> {
        let name = raw.name.get_ref();
        let Some(kind) = &raw.kind else {
            self.report(
                &raw.name.span(),
                format!(
                    "scheduler `{name}` needs `kind` (one of: {})",
                    SchedulerKind::KINDS.join(", ")
                ),
            );
            return None;
        };
        self.foreign_keys(raw, kind.get_ref());
        self.timer_foreign_keys(raw, kind.get_ref());
        if let Some(timer) = self.timer_kind(raw, kind) {
            return timer;
        }
        match kind.get_ref().as_str() {
            "branch" => Some(SchedulerKind::Branch(self.branch_filter(raw))),
            other => {
                let hint =
                    crate::suggest::did_you_mean(other, SchedulerKind::KINDS.iter().copied());
                let hint = if hint.is_empty() {
                    format!(" (one of: {})", SchedulerKind::KINDS.join(", "))
                } else {
                    hint
                };
                self.report(
                    &kind.span(),
                    format!("scheduler `{name}`: unknown kind `{other}`{hint}"),
                );
                None
            }
        }
    }

    /// Keys set that belong to another kind than `kind`.
    fn foreign_keys(&mut self, raw: &RawScheduler, kind: &str) {
        let name = raw.name.get_ref();
        let keyed: [(&str, &str, Option<Range<usize>>); 4] = [
            (
                "repository",
                "branch",
                raw.repository.as_ref().map(|v| v.span()),
            ),
            (
                "branches",
                "branch",
                raw.branches.as_ref().map(|v| v.span()),
            ),
            ("files", "branch", raw.files.as_ref().map(|v| v.span())),
            (
                "tree_stable",
                "branch",
                raw.tree_stable.as_ref().map(|v| v.span()),
            ),
        ];
        if !SchedulerKind::KINDS.contains(&kind) {
            return;
        }
        for (key, owner, at) in keyed {
            if let Some(at) = at
                && owner != kind
            {
                self.report(
                    &at,
                    format!(
                        "scheduler `{name}`: `{key}` is a key of kind `{owner}`, not of `{kind}`"
                    ),
                );
            }
        }
    }

    /// A `branch` scheduler's filter and timer.
    fn branch_filter(&mut self, raw: &RawScheduler) -> BranchFilter {
        let name = raw.name.get_ref();
        let owner = format!("scheduler `{name}`");
        if let Some(r) = &raw.repository
            && r.get_ref().is_empty()
        {
            self.report(
                &r.span(),
                format!("{owner}: `repository` must not be empty"),
            );
        }
        let branches = self.globs(&owner, "branches", &raw.branches);
        let files = self.globs(&owner, "files", &raw.files);
        let tree_stable = raw
            .tree_stable
            .as_ref()
            .and_then(|t| self.duration_or_zero(&owner, "tree_stable", t))
            .unwrap_or(Duration::ZERO);
        BranchFilter {
            repository: raw.repository.as_ref().map(|r| r.get_ref().clone()),
            branches,
            files,
            tree_stable,
        }
    }

    /// A list of globs: each non-empty; an empty list is refused (leave the
    /// key out to take everything).
    fn globs(
        &mut self,
        owner: &str,
        key: &str,
        raw: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Vec<String> {
        let Some(list) = raw else {
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(
                &list.span(),
                format!("{owner}: `{key}` must not be empty (leave it out to take every one)"),
            );
        }
        for g in list.get_ref() {
            if g.get_ref().is_empty() {
                self.report(&g.span(), format!("{owner}: a pattern of `{key}` is empty"));
            }
        }
        list.get_ref().iter().map(|g| g.get_ref().clone()).collect()
    }

    /// A duration that may be zero (`tree_stable = "0s"`: at once).
    fn duration_or_zero(
        &mut self,
        owner: &str,
        key: &str,
        raw: &Spanned<String>,
    ) -> Option<Duration> {
        if let Ok(d) = humantime::parse_duration(raw.get_ref()) {
            return Some(d);
        }
        if raw.get_ref().trim() == "0" {
            return Some(Duration::ZERO);
        }
        // Same words as every other duration's error.
        self.duration(owner, key, raw)
    }
}
