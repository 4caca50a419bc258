//! Applying a new validated config as one atomic event (`docs/reload.md`).
//!
//! The new config is compared with the *state* (builders that have queues,
//! workers that have links), not with the old file, so that restored queues
//! of builders missing from the config are handled exactly like a reload
//! that removed them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::config::{Config, MasterSettings};
use crate::protocol::ReloadReport;

use super::{BuilderState, Core, Record, WorkerState};

impl Core {
    /// Apply `config` (already fully validated) and say what changed. With
    /// `dry_run`, the same report is computed on a copy and nothing changes.
    pub fn reload(&mut self, config: Arc<Config>, now_ms: u64, dry_run: bool) -> ReloadReport {
        if dry_run {
            let mut copy = self.clone();
            copy.effects.clear();
            return copy.apply_config(config, now_ms, true);
        }
        self.apply_config(config, now_ms, true)
    }

    /// The one place where a config takes effect.
    pub(super) fn apply_config(
        &mut self,
        config: Arc<Config>,
        now_ms: u64,
        is_reload: bool,
    ) -> ReloadReport {
        let mut report = ReloadReport {
            generation_before: self.generation,
            generation_after: self.generation,
            config_hash: config.hash.clone(),
            ..ReloadReport::default()
        };
        if is_reload {
            report.needs_restart = restart_only_changes(&self.config.master, &config.master);
        }
        let generation = self.generation + 1;
        self.timers.applying = true;
        // Waiters for a lock the new config removes: said in the report;
        // nothing is left to wait for, so they start once nothing else
        // blocks them (`locks.rs`).
        report.lock_waiters_released = self
            .lock_waits
            .iter()
            .filter(|(_, w)| config.lock(&w.lock).is_none())
            .map(|(who, w)| match who {
                super::LockWaiter::Request(r) => format!("request r{r} (lock {})", w.lock),
                super::LockWaiter::Step(b) => format!("build {b} (lock {})", w.lock),
            })
            .collect();
        self.locks.set_defs(&config.locks);
        self.apply_workers(&config, now_ms, &mut report);
        self.apply_builders(&config, generation, now_ms, &mut report);
        self.apply_schedulers(&config, now_ms, &mut report);

        let changed = if !is_reload {
            // A start: a new generation unless the file is the one last applied.
            self.generation == 0 || self.config.hash != config.hash
        } else {
            !(report.builders_added.is_empty()
                && report.builders_changed.is_empty()
                && report.builders_removed.is_empty()
                && report.builders_renamed.is_empty()
                && report.workers_added.is_empty()
                && report.workers_changed.is_empty()
                && report.workers_removed.is_empty()
                && report.schedulers_added.is_empty()
                && report.schedulers_changed.is_empty()
                && report.schedulers_removed.is_empty()
                && report.schedulers_renamed.is_empty()
                && self.config.hash == config.hash)
        };
        self.config = config;
        self.timers.applying = false;
        if changed {
            self.generation = generation;
            report.generation_after = generation;
            self.record(Record::GenerationApplied {
                generation,
                config_hash: self.config.hash.clone(),
                origin: self.config.origin.clone(),
                at_ms: now_ms,
            });
        }
        report.builds_on_old_generations = self
            .builds
            .values()
            .filter(|b| b.generation < self.generation)
            .map(|b| b.id)
            .collect();
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for name in names {
            self.close_if_drained(&name);
        }
        self.dispatch(now_ms);
        report
    }

    fn apply_workers(&mut self, config: &Config, now_ms: u64, report: &mut ReloadReport) {
        let wanted: BTreeSet<&str> = config.workers.iter().map(|w| w.name.as_str()).collect();
        for (name, state) in self.workers.iter_mut() {
            if !wanted.contains(name.as_str()) && !state.removed {
                report.workers_removed.push(name.clone());
                state.removed = true;
                state.draining = Some("removed by reload".into());
                if !state.running.is_empty() {
                    report.workers_draining.push(name.clone());
                }
            }
        }
        // Removed workers with no link are forgotten; builds that waited
        // for them can never be resumed (a removed worker is refused), so
        // they are retried now.
        let stranded: Vec<(u64, String)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.removed && w.link.is_none())
            .flat_map(|(name, w)| w.running.iter().map(move |b| (*b, name.clone())))
            .collect();
        for (build, worker) in stranded {
            self.retry_build(
                build,
                format!("worker `{worker}` was removed by reload while away"),
                now_ms,
            );
        }
        self.workers.retain(|_, w| !(w.removed && w.link.is_none()));
        for def in &config.workers {
            match self.workers.get_mut(&def.name) {
                None => {
                    report.workers_added.push(def.name.clone());
                    self.workers.insert(
                        def.name.clone(),
                        WorkerState {
                            def: def.clone(),
                            link: None,
                            running: BTreeSet::new(),
                            draining: None,
                            paused: false,
                            removed: false,
                        },
                    );
                }
                Some(state) if state.removed => {
                    // Removed earlier, still draining, and now back: it stays
                    // draining under its old credentials, then may reconnect.
                    report.workers_added.push(def.name.clone());
                    state.removed = false;
                    state.draining = Some("re-added by reload".into());
                    state.def = def.clone();
                    report.workers_draining.push(def.name.clone());
                }
                Some(state) if state.def != *def => {
                    report.workers_changed.push(def.name.clone());
                    let credentials_changed =
                        state.def.secret != def.secret || state.def.local != def.local;
                    state.def = def.clone();
                    if credentials_changed && state.link.is_some() {
                        state.draining =
                            Some("credentials changed by reload; authenticate again".into());
                        if !state.running.is_empty() {
                            report.workers_draining.push(def.name.clone());
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn apply_builders(
        &mut self,
        config: &Config,
        generation: u64,
        now_ms: u64,
        report: &mut ReloadReport,
    ) {
        let mut old = std::mem::take(&mut self.builders);
        for def in &config.builders {
            let def = Arc::new(def.clone());
            let state = if let Some(mut state) = old.remove(&def.name) {
                if state.def != def {
                    report.builders_changed.push(def.name.clone());
                }
                state.def = def.clone();
                // A builder may also absorb builders it was renamed from
                // while it already exists (merge): their queues follow.
                self.absorb_previous(&def.previous_names, &def.name, &mut old, &mut state, report);
                state
            } else {
                let mut state = BuilderState {
                    def: def.clone(),
                    queue: VecDeque::new(),
                };
                let before = report.builders_renamed.len();
                self.absorb_previous(&def.previous_names, &def.name, &mut old, &mut state, report);
                if report.builders_renamed.len() == before {
                    report.builders_added.push(def.name.clone());
                }
                state
            };
            self.builders.insert(def.name.clone(), state);
        }
        // What is left is removed: queued requests are cancelled, running
        // builds finish on their own.
        for (name, state) in old {
            report.builders_removed.push(name.clone());
            for request in state.queue {
                self.requests.remove(&request);
                report.requests_cancelled.push(request);
                self.record(Record::RequestCancelled {
                    request,
                    reason: format!("removed by reload, generation {generation}"),
                    at_ms: now_ms,
                });
                self.request_ended(request, crate::protocol::BuildResult::Cancelled, now_ms);
            }
        }
    }

    /// Move the queues, running builds and history of `previous` builders
    /// into `state` (a rename).
    fn absorb_previous(
        &mut self,
        previous: &[String],
        new_name: &str,
        old: &mut std::collections::BTreeMap<String, BuilderState>,
        state: &mut BuilderState,
        report: &mut ReloadReport,
    ) {
        for prev in previous {
            let Some(prev_state) = old.remove(prev) else {
                continue;
            };
            report
                .builders_renamed
                .push((prev.clone(), new_name.to_string()));
            for request in prev_state.queue {
                if let Some(req) = self.requests.get_mut(&request) {
                    req.builder = new_name.to_string();
                }
                report.requests_moved.push(request);
                state.queue.push_back(request);
            }
            // Keep the run order (priority, then age) when two queues merge.
            let requests = &self.requests;
            state.queue.make_contiguous().sort_unstable_by_key(|r| {
                (
                    std::cmp::Reverse(requests.get(r).map_or(0, |q| q.priority)),
                    *r,
                )
            });
            for build in self.builds.values_mut().filter(|b| b.builder == *prev) {
                build.builder = new_name.to_string();
            }
            for req in self.requests.values_mut().filter(|r| r.builder == *prev) {
                req.builder = new_name.to_string();
            }
            self.record(Record::BuilderRenamed {
                from: prev.clone(),
                to: new_name.to_string(),
            });
        }
    }
}

/// The settings that differ between `old` and `new` and take effect only
/// at a restart, as `master.<key>`. The master compares a reloaded file
/// with the settings it started with, so that they are reported as waiting
/// for a restart until one happens (not only by the reload that changed
/// them).
pub fn restart_only_changes(old_master: &MasterSettings, m: &MasterSettings) -> Vec<String> {
    let mut changes: Vec<String> = Vec::new();
    if m.state_dir != old_master.state_dir {
        changes.push("master.state_dir".into());
    }
    if m.control_socket != old_master.control_socket {
        changes.push("master.control_socket".into());
    }
    if m.worker_socket != old_master.worker_socket {
        changes.push("master.worker_socket".into());
    }
    if m.store != old_master.store {
        changes.push("master.store".into());
    }
    let restart_only = [
        ("master.keepalive", m.keepalive != old_master.keepalive),
        (
            "master.max_handshake_frame",
            m.max_handshake_frame != old_master.max_handshake_frame,
        ),
        ("master.max_frame", m.max_frame != old_master.max_frame),
        (
            "master.max_log_size",
            m.max_log_size != old_master.max_log_size,
        ),
        (
            "master.max_clients",
            m.max_clients != old_master.max_clients,
        ),
        (
            "master.allowed_uids",
            m.allowed_uids != old_master.allowed_uids,
        ),
        (
            "master.allowed_gid",
            m.allowed_gid != old_master.allowed_gid,
        ),
        (
            "master.transfer_dir",
            m.transfer_dir != old_master.transfer_dir,
        ),
        // The upload limits are handed to each worker link at start.
        (
            "master.max_upload_size",
            m.worker_limits.max_upload_size != old_master.worker_limits.max_upload_size,
        ),
        (
            "master.max_artifact_bytes_per_build",
            m.worker_limits.max_artifact_bytes_per_build
                != old_master.worker_limits.max_artifact_bytes_per_build,
        ),
        (
            "master.max_artifacts_per_build",
            m.worker_limits.max_artifacts_per_build
                != old_master.worker_limits.max_artifacts_per_build,
        ),
        (
            "master.min_free_space",
            m.worker_limits.min_free_space != old_master.worker_limits.min_free_space,
        ),
        // The web server reads `[http]` once, at start.
        ("http", m.http != old_master.http),
    ];
    for (key, changed) in restart_only {
        if changed {
            changes.push(key.into());
        }
    }
    changes
}
