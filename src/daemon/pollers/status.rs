//! What `bbctl status` shows of the pollers, shared between their tasks
//! and the front door.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One poller as its task last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollerStatus {
    /// The repository it polls.
    pub repository: String,
    /// When its last poll started (ms since the epoch); `None`: not yet.
    pub last_poll_ms: Option<u64>,
    /// How long that poll took.
    pub last_duration_ms: Option<u64>,
    /// Why that poll failed, if it did.
    pub last_error: Option<String>,
    /// The last time commits were skipped (more than a poll takes).
    pub last_warning: Option<String>,
    /// Refs with a cursor.
    pub refs: usize,
    /// Changes stored since the master started.
    pub changes: u64,
}

/// Every running poller's status, by name.
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(Arc<RwLock<BTreeMap<String, PollerStatus>>>);

impl SharedStatus {
    /// Change poller `name`'s entry (made if missing).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut PollerStatus)) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        f(map.entry(name.to_owned()).or_default());
    }

    /// Forget a poller that was removed.
    pub fn remove(&self, name: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> BTreeMap<String, PollerStatus> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
