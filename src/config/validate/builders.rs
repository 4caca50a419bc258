//! Checks of `[[builder]]` entries: names, previous names, workers, env.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::super::model::BuilderDef;
use super::super::raw::{RawBuilder, RawWorker};
use super::Checker;
use toml::Spanned;

impl Checker<'_> {
    /// All builders, then the checks that look across builders.
    pub(super) fn builders(
        &mut self,
        raw: &[RawBuilder],
        raw_workers: &[RawWorker],
    ) -> Vec<BuilderDef> {
        let known: Vec<&str> = raw_workers
            .iter()
            .map(|w| w.name.get_ref().as_str())
            .collect();
        let builders = raw
            .iter()
            .map(|b| self.builder(b, &known, raw_workers))
            .collect();
        self.duplicates(raw.iter().map(|b| &b.name), |n| {
            format!("duplicate builder name `{n}`")
        });
        self.previous_names(raw);
        builders
    }

    /// A previous name must not be anyone's current name, nor be claimed twice.
    fn previous_names(&mut self, raw: &[RawBuilder]) {
        let current: HashSet<&str> = raw.iter().map(|b| b.name.get_ref().as_str()).collect();
        let mut claimed: HashMap<&str, (&str, Range<usize>)> = HashMap::new();
        for builder in raw {
            let me = builder.name.get_ref().as_str();
            for old in &builder.previous_names {
                let old_name = old.get_ref().as_str();
                let message = if current.contains(old_name) {
                    if old_name == me {
                        format!(
                            "builder `{me}`: previous name `{old_name}` is its own current name"
                        )
                    } else {
                        format!(
                            "builder `{me}`: previous name `{old_name}` is the current name \
                             of another builder"
                        )
                    }
                } else if let Some((owner, at)) = claimed.get(old_name) {
                    let line = self.line_of(at);
                    if *owner == me {
                        format!("builder `{me}` lists previous name `{old_name}` twice")
                    } else {
                        format!(
                            "builder `{me}`: previous name `{old_name}` is already claimed by \
                             builder `{owner}` (line {line})"
                        )
                    }
                } else {
                    claimed.insert(old_name, (me, old.span()));
                    continue;
                };
                self.report(&old.span(), message);
            }
        }
    }

    /// One builder on its own; `known` are the defined worker names.
    fn builder(
        &mut self,
        raw: &RawBuilder,
        known: &[&str],
        raw_workers: &[RawWorker],
    ) -> BuilderDef {
        self.name("builder", &raw.name);
        let name = raw.name.get_ref();
        for old in &raw.previous_names {
            self.name("previous", old);
        }
        let workers = self.builder_workers(raw, known);
        let env = self.env(&format!("builder `{name}`"), &raw.env);
        let pass_env = self.pass_env(name, &raw.pass_env);
        let steps = match &raw.step {
            Some(steps) if !steps.get_ref().is_empty() => {
                let defs = steps.get_ref().iter().map(|s| self.step(name, s)).collect();
                self.duplicates(steps.get_ref().iter().map(|s| &s.name), |n| {
                    format!("builder `{name}`: duplicate step name `{n}`")
                });
                defs
            }
            other => {
                let at = other.as_ref().map_or(raw.name.span(), |s| s.span());
                self.report(
                    &at,
                    format!("builder `{name}` has no steps; add at least one [[builder.step]]"),
                );
                Vec::new()
            }
        };
        BuilderDef {
            name: name.clone(),
            previous_names: raw
                .previous_names
                .iter()
                .map(|p| p.get_ref().clone())
                .collect(),
            workers,
            env,
            pass_env,
            steps,
            collapse: raw.collapse.as_ref().is_some_and(|c| *c.get_ref()),
            retry: raw.retry.as_ref().is_none_or(|r| *r.get_ref()),
            force_properties: self.force_properties(name, &raw.force_properties),
            locks: {
                let locks = self.locks.clone();
                self.claims(&format!("builder `{name}`"), &raw.locks, &locks)
            },
            worker_tags: self.worker_tags(raw, raw_workers),
            worker_choice: self.worker_choice(name, raw),
            max_running: self.max_running(name, raw),
        }
    }

    /// A builder's `pass_env`: valid variable names, no repeats.
    fn pass_env(&mut self, builder: &str, raw: &[Spanned<String>]) -> Vec<String> {
        for key in raw {
            if !super::is_env_name(key.get_ref()) {
                self.report(
                    &key.span(),
                    format!(
                        "builder `{builder}`: pass_env entry `{}` is not a valid variable name \
                         (letters, digits and '_', not starting with a digit)",
                        key.get_ref()
                    ),
                );
            }
        }
        self.duplicates(raw.iter(), |n| {
            format!("builder `{builder}`: `{n}` is listed twice in pass_env")
        });
        raw.iter().map(|k| k.get_ref().clone()).collect()
    }

    /// A builder's `workers`: present, non-empty, known, no repeats.
    fn builder_workers(&mut self, raw: &RawBuilder, known: &[&str]) -> Vec<String> {
        let name = raw.name.get_ref();
        let Some(list) = &raw.workers else {
            if raw.worker_tags.is_none() {
                self.report(
                    &raw.name.span(),
                    format!(
                        "builder `{name}` needs `workers` (the list of workers that may run it) \
                         or `worker_tags` (the tags they must carry)"
                    ),
                );
            }
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(
                &list.span(),
                format!("builder `{name}`: `workers` must not be empty"),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for worker in list.get_ref() {
            let w = worker.get_ref().as_str();
            if seen.contains(&w) {
                self.report(
                    &worker.span(),
                    format!("builder `{name}` lists worker `{w}` twice"),
                );
                continue;
            }
            seen.push(w);
            if !known.contains(&w) {
                let known_list = if known.is_empty() {
                    "no workers are defined".to_owned()
                } else {
                    format!("known workers: {}", known.join(", "))
                };
                self.report(
                    &worker.span(),
                    format!("builder `{name}` lists unknown worker `{w}` ({known_list})"),
                );
            }
        }
        seen.into_iter().map(str::to_owned).collect()
    }
}
