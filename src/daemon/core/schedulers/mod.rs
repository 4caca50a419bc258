//! Schedulers: what starts builds on its own (changes, clocks, other
//! builds), inside the pure core.
//!
//! # The framework
//!
//! Each `[[scheduler]]` of the config is a [`Scheduler`]: its definition
//! and its kind's state ([`KindState`]). The core feeds every scheduler
//! the events it may care about through the [`Kind`] trait (a change
//! arrived, time passed), and a kind answers with [`Firing`]s, which this
//! module turns into requests through the same path as a force-build
//! (`Core::queue_request`: the collapse rules, a record per request).
//!
//! Durability: a kind's state that must survive a restart (pending
//! changes, due times, last firing) is its own serde type, saved as JSON
//! in a [`Record::SchedulerState`] emitted for every scheduler whose state
//! changed during the event, at the end of that event: the same record
//! batch as the changes that caused it and the requests its firing
//! created. So a crash can neither lose nor double a firing. At a start
//! the saved JSON is handed back to the kind ([`KindState::restore`]).
//!
//! Timers are deadlines: [`Kind::next_deadline`] says when the kind wants
//! [`Kind::tick`]; `Core::next_deadline` includes the earliest, and the
//! shell calls `Core::tick` then (no clock here).
//!
//! Reload (`docs/reload.md`): an unchanged scheduler is untouched; a
//! changed one keeps its state (its kind decides what survives:
//! [`Kind::reconfigured`]); one renamed through `previous_names` carries
//! its state over; a removed one's pending changes are listed as dropped
//! in the reload report. A change of kind starts afresh (the old pending
//! changes are listed as dropped).
//!
//! Adding a kind: a variant of `config::SchedulerKind` (and its keys in
//! the config), a module here with a state type implementing [`Kind`]
//! (plus `Serialize`/`Deserialize`), and one arm in each `match` of
//! [`KindState`]. Nothing else in the core changes; a kind that needs a
//! new kind of event adds a method with a default body to [`Kind`] and
//! calls it from where the core sees that event.

mod branch;
pub(super) mod dependent;
mod glob;
pub(super) mod timed;
pub(super) mod timers;
pub(super) mod timing;
pub(super) mod triggerable;

use std::collections::BTreeMap;

use crate::config::{Config, SchedulerDef, SchedulerKind};
use crate::protocol::{
    BuildResult, Change, ChangeId, DroppedChanges, ReloadReport, RequestId, SourceStamp,
};

use super::{Core, Record, SavedScheduler};

pub(crate) use glob::glob_match;

/// What a scheduler asks for when it fires: a request for each of its
/// builders (or those named), with this reason and source stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Firing {
    /// Only these builders; `None`: every builder of the scheduler.
    pub builders: Option<Vec<String>>,
    /// Why, after `scheduler NAME: `.
    pub reason: String,
    /// What to build.
    pub source: Option<SourceStamp>,
    /// Properties of the requests.
    pub properties: BTreeMap<String, String>,
}

/// The behaviour of one kind of scheduler, on its own state. Every method
/// but [`Kind::save`] has a default that ignores the event.
pub(super) trait Kind {
    /// The durable state as JSON (what [`KindState::restore`] reads back).
    fn save(&self) -> String;

    /// A change was stored: remember it if it matters. True if the state
    /// changed (it is then saved at the end of the event).
    fn on_change(&mut self, def: &SchedulerDef, change: &Change, now_ms: u64) -> bool {
        let _ = (def, change, now_ms);
        false
    }

    /// When the kind next wants [`Kind::tick`], if ever.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Time passed (called when `now_ms` reached [`Kind::next_deadline`],
    /// and maybe more often): the firings now due. A kind that fires must
    /// also change its state so that it does not fire again for the same
    /// thing (the framework saves it).
    fn tick(&mut self, def: &SchedulerDef, now_ms: u64) -> Vec<Firing> {
        let _ = (def, now_ms);
        Vec::new()
    }

    /// The changes it holds that no build has taken yet (listed as dropped
    /// when the scheduler is removed).
    fn pending_changes(&self) -> Vec<ChangeId> {
        Vec::new()
    }

    /// A reload changed the definition (same kind): keep what still
    /// applies and return the pending changes it no longer takes.
    fn reconfigured(
        &mut self,
        old: &SchedulerDef,
        new: &SchedulerDef,
        now_ms: u64,
    ) -> Vec<ChangeId> {
        let _ = (old, new, now_ms);
        Vec::new()
    }

    /// Scheduler `upstream` queued `requests`: true if the state changed
    /// (a `dependent` follows them).
    fn upstream_fired(
        &mut self,
        def: &SchedulerDef,
        upstream: &str,
        requests: &[RequestId],
        source: &Option<SourceStamp>,
    ) -> bool {
        let _ = (def, upstream, requests, source);
        false
    }

    /// A request ended for good: whether the state changed, and the
    /// firings it causes.
    fn request_ended(
        &mut self,
        def: &SchedulerDef,
        request: RequestId,
        result: BuildResult,
    ) -> (bool, Vec<Firing>) {
        let _ = (def, request, result);
        (false, Vec::new())
    }

    /// A request was merged into `into` (`collapse`): true if the state
    /// changed.
    fn request_collapsed(&mut self, request: RequestId, into: RequestId) -> bool {
        let _ = (request, into);
        false
    }
}

/// The state of one scheduler, by kind (an enum rather than a trait
/// object so that the core stays `Clone` for dry-run reloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KindState {
    /// `kind = "branch"`.
    Branch(branch::Branch),
    /// `kind = "periodic"` or `"cron"` (boxed: its timing is big).
    Timed(Box<timed::Timed>),
    /// `kind = "triggerable"`.
    Triggerable(timers::Triggerable),
    /// `kind = "dependent"`.
    Dependent(dependent::DependentState),
}

impl KindState {
    /// A fresh state for `def`, appearing at `now_ms`.
    fn new(def: &SchedulerDef, now_ms: u64) -> Self {
        match &def.kind {
            SchedulerKind::Branch(_) => KindState::Branch(branch::Branch::default()),
            SchedulerKind::Periodic(t) | SchedulerKind::Cron(t) => {
                KindState::Timed(Box::new(timed::Timed::new(t.clone(), now_ms)))
            }
            SchedulerKind::Triggerable => KindState::Triggerable(timers::Triggerable::default()),
            SchedulerKind::Dependent { .. } => {
                KindState::Dependent(dependent::DependentState::default())
            }
        }
    }

    /// The state saved by a scheduler of the same kind; `None` if the kind
    /// differs or the JSON cannot be read (then it starts afresh).
    /// A start at `now_ms`: a timed scheduler's missed due times count
    /// from there (`catch_up`).
    fn restore(def: &SchedulerDef, saved: &SavedScheduler, now_ms: u64) -> Option<Self> {
        if saved.kind != def.kind.name() {
            return None;
        }
        Some(match &def.kind {
            SchedulerKind::Branch(_) => KindState::Branch(serde_json::from_str(&saved.state).ok()?),
            SchedulerKind::Periodic(t) | SchedulerKind::Cron(t) => {
                let state = serde_json::from_str(&saved.state).ok()?;
                KindState::Timed(Box::new(timed::Timed::restored(t.clone(), state, now_ms)))
            }
            SchedulerKind::Triggerable => KindState::Triggerable(timers::Triggerable::default()),
            SchedulerKind::Dependent { .. } => {
                KindState::Dependent(serde_json::from_str(&saved.state).ok()?)
            }
        })
    }

    /// The pending changes of a saved state, whatever scheduler (if any)
    /// takes it now: for listing what a start drops.
    fn pending_of_saved(saved: &SavedScheduler) -> Vec<ChangeId> {
        match saved.kind.as_str() {
            "branch" => serde_json::from_str::<branch::Branch>(&saved.state)
                .map(|b| b.pending_changes())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn get(&self) -> &dyn Kind {
        match self {
            KindState::Branch(s) => s,
            KindState::Timed(s) => &**s,
            KindState::Triggerable(s) => s,
            KindState::Dependent(s) => s,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Kind {
        match self {
            KindState::Branch(s) => s,
            KindState::Timed(s) => &mut **s,
            KindState::Triggerable(s) => s,
            KindState::Dependent(s) => s,
        }
    }
}

/// One configured scheduler.
#[derive(Debug, Clone)]
pub(super) struct Scheduler {
    def: SchedulerDef,
    state: KindState,
    /// Its state changed during this event: saved at its end.
    dirty: bool,
}

/// Every scheduler, plus what a start restored and no scheduler took yet.
#[derive(Debug, Clone, Default)]
pub(super) struct Schedulers {
    set: BTreeMap<String, Scheduler>,
    /// Saved states from the store, until the first config is applied.
    saved: BTreeMap<String, SavedScheduler>,
    /// Names whose saved state must be deleted at the end of the event.
    forget: Vec<String>,
}

impl Schedulers {
    /// The schedulers of a restarting master: their saved states wait
    /// for the config (`Core::apply_schedulers`).
    pub(super) fn restored(saved: BTreeMap<String, SavedScheduler>) -> Self {
        Schedulers {
            saved,
            ..Schedulers::default()
        }
    }
}

impl Core {
    /// The schedulers see new changes; those due at once fire.
    pub(super) fn changes_arrived(&mut self, changes: &[Change], now_ms: u64) {
        for s in self.schedulers.set.values_mut() {
            for change in changes {
                if s.state.get_mut().on_change(&s.def, change, now_ms) {
                    s.dirty = true;
                }
            }
        }
        self.run_schedulers(now_ms);
    }

    /// Fire the schedulers whose deadline has come, then save every state
    /// that changed. True if a request was queued (the caller dispatches).
    pub(super) fn run_schedulers(&mut self, now_ms: u64) -> bool {
        let mut firings = Vec::new();
        for s in self.schedulers.set.values_mut() {
            if s.state.get().next_deadline().is_some_and(|t| t <= now_ms) {
                let fired = s.state.get_mut().tick(&s.def, now_ms);
                // Even a tick that queues nothing may move the state (a
                // timed firing with `only_if_changed` and no change).
                s.dirty = true;
                firings.extend(fired.into_iter().map(|f| (s.def.clone(), f)));
            }
        }
        let queued = !firings.is_empty();
        for (def, firing) in firings {
            self.fire(&def, firing, now_ms);
        }
        self.save_schedulers();
        queued
    }

    /// Queue a firing's requests: one per builder that exists now. No
    /// queue limit and no drain refuses them: refusing would lose changes
    /// (a shutdown drain leaves them queued for the next master).
    fn fire(&mut self, def: &SchedulerDef, firing: Firing, now_ms: u64) {
        let builders = firing.builders.unwrap_or_else(|| def.builders.clone());
        let mut ids = Vec::new();
        for builder in builders {
            if !self.builders.contains_key(&builder) {
                continue;
            }
            ids.push(self.queue_request(
                &builder,
                Some(format!("scheduler {}: {}", def.name, firing.reason)),
                firing.properties.clone(),
                0,
                firing.source.clone(),
                now_ms,
            ));
        }
        self.scheduler_fired(&def.name, &ids, &firing.source);
    }

    /// Record the state of every scheduler that changed, and forget the
    /// states of schedulers that went.
    fn save_schedulers(&mut self) {
        for name in std::mem::take(&mut self.schedulers.forget) {
            if self.schedulers.set.contains_key(&name) {
                continue;
            }
            self.effects
                .push(super::Effect::Record(Record::SchedulerState {
                    name,
                    kind: String::new(),
                    state: None,
                }));
        }
        let mut records = Vec::new();
        for (name, s) in self.schedulers.set.iter_mut() {
            if std::mem::take(&mut s.dirty) {
                records.push(Record::SchedulerState {
                    name: name.clone(),
                    kind: s.def.kind.name().to_string(),
                    state: Some(s.state.get().save()),
                });
            }
        }
        for r in records {
            self.record(r);
        }
    }

    /// The earliest deadline of any scheduler.
    pub(super) fn next_scheduler_deadline(&self) -> Option<u64> {
        self.schedulers
            .set
            .values()
            .filter_map(|s| s.state.get().next_deadline())
            .min()
    }

    /// A scheduler's pending changes (tests, the simulator).
    #[cfg(test)]
    pub(super) fn scheduler_pending(&self, name: &str) -> Vec<ChangeId> {
        self.schedulers
            .set
            .get(name)
            .map(|s| s.state.get().pending_changes())
            .unwrap_or_default()
    }

    /// Apply the config's schedulers (a reload, or the start on restored
    /// states); see the module comment for the rules.
    pub(super) fn apply_schedulers(
        &mut self,
        config: &Config,
        now_ms: u64,
        report: &mut ReloadReport,
    ) {
        let mut old = std::mem::take(&mut self.schedulers.set);
        let mut saved = std::mem::take(&mut self.schedulers.saved);
        for def in &config.schedulers {
            let s = if let Some(mut s) = old.remove(&def.name) {
                if s.def != *def {
                    report.schedulers_changed.push(def.name.clone());
                    if s.def.kind.name() == def.kind.name() {
                        let dropped = s.state.get_mut().reconfigured(&s.def, def, now_ms);
                        drop_changes(report, &def.name, dropped);
                    } else {
                        drop_changes(report, &def.name, s.state.get().pending_changes());
                        s.state = KindState::new(def, now_ms);
                    }
                    s.def = def.clone();
                    s.dirty = true;
                }
                s
            } else if let Some((from, mut s)) = def
                .previous_names
                .iter()
                .find_map(|p| old.remove(p).map(|s| (p.clone(), s)))
            {
                report
                    .schedulers_renamed
                    .push((from.clone(), def.name.clone()));
                self.schedulers.forget.push(from);
                if s.def.kind.name() == def.kind.name() {
                    let dropped = s.state.get_mut().reconfigured(&s.def, def, now_ms);
                    drop_changes(report, &def.name, dropped);
                } else {
                    drop_changes(report, &def.name, s.state.get().pending_changes());
                    s.state = KindState::new(def, now_ms);
                }
                s.def = def.clone();
                s.dirty = true;
                s
            } else {
                // A start: its own saved state, or a previous name's.
                let found = std::iter::once(&def.name)
                    .chain(def.previous_names.iter())
                    .find_map(|n| saved.remove(n).map(|st| (n.clone(), st)));
                let state = match &found {
                    Some((_, st)) => {
                        let state = KindState::restore(def, st, now_ms);
                        if state.is_none() {
                            // Another kind, or unreadable: starts afresh.
                            drop_changes(report, &def.name, KindState::pending_of_saved(st));
                        }
                        state
                    }
                    None => None,
                };
                let renamed = found.as_ref().is_some_and(|(n, _)| *n != def.name);
                if let Some((n, _)) = &found
                    && renamed
                {
                    self.schedulers.forget.push(n.clone());
                }
                if found.is_none() {
                    report.schedulers_added.push(def.name.clone());
                }
                let fresh = state.is_none();
                let mut s = Scheduler {
                    def: def.clone(),
                    state: state.unwrap_or_else(|| KindState::new(def, now_ms)),
                    dirty: fresh || renamed,
                };
                if !fresh {
                    // The config may have changed while the master was down.
                    let dropped = s.state.get_mut().reconfigured(def, def, now_ms);
                    if !dropped.is_empty() {
                        s.dirty = true;
                    }
                    drop_changes(report, &def.name, dropped);
                }
                s
            };
            self.schedulers.set.insert(def.name.clone(), s);
        }
        for (name, s) in old {
            report.schedulers_removed.push(name.clone());
            drop_changes(report, &name, s.state.get().pending_changes());
            self.schedulers.forget.push(name);
        }
        // Saved states no scheduler took (removed while the master was down).
        for (name, st) in saved {
            drop_changes(report, &name, KindState::pending_of_saved(&st));
            self.schedulers.forget.push(name);
        }
        if self.run_schedulers(now_ms) {
            // The caller dispatches.
        }
    }
}

/// List `changes` as dropped by `scheduler` in the report.
fn drop_changes(report: &mut ReloadReport, scheduler: &str, changes: Vec<ChangeId>) {
    if !changes.is_empty() {
        report.changes_dropped.push(DroppedChanges {
            scheduler: scheduler.to_string(),
            changes,
        });
    }
}
