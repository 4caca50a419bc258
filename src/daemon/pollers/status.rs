//! What `bbctl status` shows of the pollers, shared between their tasks
//! and the front door (which holds it as the plain map, like the
//! listeners' status: the handle imports nothing of the pollers).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use crate::protocol::PollerView as PollerStatus;

/// The map the front door reads: every running poller, by name.
pub type StatusMap = Arc<RwLock<BTreeMap<String, PollerStatus>>>;

/// Every running poller's status, by name.
#[derive(Debug, Clone, Default)]
pub struct SharedStatus(StatusMap);

impl SharedStatus {
    /// Change poller `name`'s entry (made if missing).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut PollerStatus)) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(name.to_owned()).or_default();
        entry.name = name.to_owned();
        f(entry);
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

    /// The map itself, for the front door.
    pub fn map(&self) -> StatusMap {
        Arc::clone(&self.0)
    }
}
