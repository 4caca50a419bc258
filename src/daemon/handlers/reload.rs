//! `bbctl reload` (and its dry run) and SIGHUP: the file is read off the
//! loop, then applied as one core event.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::daemon::actor::{Deferred, Master};
use crate::daemon::config_read;
use crate::daemon::messages::Command;
use crate::paths::now_ms;
use crate::protocol::{ErrorReply, EventKind, ReloadReport};

/// Where a reload's answer goes; `None` for SIGHUP (the result is logged).
type ReloadReply = Option<oneshot::Sender<Result<ReloadReport, ErrorReply>>>;

impl Master {
    /// Files are read off the loop, in bounded time; the answer comes back
    /// as [`Command::ReloadRead`].
    pub(in crate::daemon) fn start_reload(
        &mut self,
        dry_run: bool,
        config: Option<PathBuf>,
        reply: ReloadReply,
    ) {
        let path = config.or_else(|| self.config_path.clone());
        match self.me.as_ref().and_then(mpsc::WeakSender::upgrade) {
            Some(me) => {
                tokio::spawn(async move {
                    let config = config_read::load(path.as_deref(), config_read::READ_TIMEOUT)
                        .await
                        .map(Box::new);
                    let read = Command::ReloadRead {
                        dry_run,
                        path,
                        config,
                        reply,
                    };
                    let _ = me.send(read).await;
                });
            }
            None => {
                let answer = Err(ErrorReply::failed("the master is shutting down"));
                if let Some(reply) = reply {
                    self.replies.push(Deferred::Reload(reply, answer));
                }
            }
        }
    }

    /// A reload's config was read: apply it and answer (or log).
    pub(in crate::daemon) fn reload_read(
        &mut self,
        dry_run: bool,
        path: Option<PathBuf>,
        config: Result<Box<Config>, String>,
        reply: ReloadReply,
    ) {
        let answer = self.reload(dry_run, path, config.map(|c| *c));
        match (&answer, reply) {
            (_, Some(reply)) => self.replies.push(Deferred::Reload(reply, answer)),
            (Ok(report), None) => info!("reload applied: {}", reload_summary(report)),
            (Err(e), None) => error!("reload rejected: {}", e.message),
        }
    }

    /// Validate the whole file, then apply it as one core event; an
    /// invalid file changes nothing.
    pub(in crate::daemon) fn reload(
        &mut self,
        dry_run: bool,
        path: Option<PathBuf>,
        config: Result<Config, String>,
    ) -> Result<ReloadReport, ErrorReply> {
        if !dry_run {
            crate::daemon::notify::reloading();
        }
        let answer = self.reload_from(dry_run, path, config);
        if !dry_run {
            crate::daemon::notify::ready();
        }
        answer
    }

    pub(in crate::daemon) fn reload_from(
        &mut self,
        dry_run: bool,
        path: Option<PathBuf>,
        config: Result<Config, String>,
    ) -> Result<ReloadReport, ErrorReply> {
        let config: Config = match config {
            Ok(config) => config,
            Err(e) => {
                if !dry_run {
                    self.emit(EventKind::ReloadRejected { error: e.clone() });
                }
                return Err(ErrorReply::rejected(e));
            }
        };
        for warning in &config.warnings {
            warn!("{warning}");
        }
        let master_settings = config.master.clone();
        let warnings = config.warnings.clone();
        let mut report = self.core.reload(Arc::new(config), now_ms(), dry_run);
        report.warnings = warnings;
        // Against what this process started with, not the last reload: a
        // restart-only change waits for a restart until one happens.
        report.needs_restart =
            crate::daemon::core::restart_only_changes(&self.boot_master, &master_settings);
        if !dry_run {
            self.config_tx.send_replace(Arc::clone(self.core.config()));
            if report.generation_after != report.generation_before {
                self.emit(EventKind::ReloadApplied {
                    generation_before: report.generation_before,
                    generation_after: report.generation_after,
                    config_hash: report.config_hash.clone(),
                });
            }
            for worker in &report.workers_draining {
                self.emit(EventKind::WorkerDraining {
                    worker: worker.clone(),
                });
            }
            self.config_path = path;
            self.local.sync(self.core.config());
        }
        Ok(report)
    }
}

/// One line saying what a reload did, for the log.
pub fn reload_summary(r: &ReloadReport) -> String {
    format!(
        "generation {} -> {}; builders +{} ~{} -{} renamed {}; workers +{} ~{} -{}; {} request(s) cancelled; {} build(s) on older generations{}{}",
        r.generation_before,
        r.generation_after,
        r.builders_added.len(),
        r.builders_changed.len(),
        r.builders_removed.len(),
        r.builders_renamed.len(),
        r.workers_added.len(),
        r.workers_changed.len(),
        r.workers_removed.len(),
        r.requests_cancelled.len(),
        r.builds_on_old_generations.len(),
        if r.needs_restart.is_empty() {
            String::new()
        } else {
            format!("; waiting for a restart: {}", r.needs_restart.join(", "))
        },
        scheduler_summary(r)
    )
}

/// The schedulers' part of [`reload_summary`]: nothing when none changed.
fn scheduler_summary(r: &ReloadReport) -> String {
    let dropped: usize = r.changes_dropped.iter().map(|d| d.changes.len()).sum();
    if r.schedulers_added.is_empty()
        && r.schedulers_changed.is_empty()
        && r.schedulers_removed.is_empty()
        && r.schedulers_renamed.is_empty()
        && dropped == 0
    {
        return String::new();
    }
    format!(
        "; schedulers +{} ~{} -{} renamed {}; {dropped} pending change(s) dropped",
        r.schedulers_added.len(),
        r.schedulers_changed.len(),
        r.schedulers_removed.len(),
        r.schedulers_renamed.len(),
    )
}
