//! Git pollers (`[[poller]]`): one task per poller that watches a
//! repository's branches (and tags) with the `git` command line in a
//! private bare mirror under `<state_dir>/pollers/`, and turns new commits
//! into changes stored through the front door together with the poller's
//! cursor (`docs/pollers.md`).
//!
//! The set follows reloads like the worker listeners (`listeners/set.rs`):
//! an unchanged poller is untouched (its task, its timing); a changed one
//! gets its new definition at its next poll; a new one starts; a removed
//! one stops (a git command it runs is killed). A poller is one task, so
//! it never polls twice at once.

pub mod git;
pub mod refs;
pub mod sink;
pub mod status;
pub mod task;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::PollerDef;
use sink::ChangeSink;
use status::SharedStatus;
use task::Poller;

/// One running poller.
struct Running {
    defs: watch::Sender<PollerDef>,
    task: JoinHandle<()>,
}

/// The running pollers, kept in step with the config.
pub struct PollerSet<S> {
    sink: S,
    root: PathBuf,
    running: BTreeMap<String, Running>,
    status: SharedStatus,
}

impl<S: ChangeSink> PollerSet<S> {
    /// No pollers yet; mirrors live in `root` (`<state_dir>/pollers`).
    pub fn new(sink: S, root: PathBuf, status: SharedStatus) -> Self {
        PollerSet {
            sink,
            root,
            running: BTreeMap::new(),
            status,
        }
    }

    /// Make the running pollers what `defs` says.
    pub fn apply(&mut self, defs: &[PollerDef]) {
        self.running.retain(|name, running| {
            let keep = defs.iter().any(|d| &d.name == name);
            if !keep {
                running.task.abort();
                self.status.remove(name);
                info!(poller = %name, "poller removed");
            }
            keep
        });
        for def in defs {
            match self.running.get(&def.name) {
                Some(running) => {
                    running.defs.send_if_modified(|old| {
                        if old == def {
                            return false;
                        }
                        info!(poller = %def.name, "poller changed; the change applies from its next poll");
                        *old = def.clone();
                        true
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(def.clone());
                    let poller = Poller::new(self.sink.clone(), self.root.clone());
                    let task = tokio::spawn(task::run(rx, poller, self.status.clone()));
                    self.status
                        .update(&def.name, |s| s.repository = def.repository.clone());
                    info!(poller = %def.name, repository = %def.repository, "poller started");
                    self.running
                        .insert(def.name.clone(), Running { defs: tx, task });
                }
            }
        }
    }

    /// How many pollers run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl<S> Drop for PollerSet<S> {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}
