//! The validated configuration: what the rest of the program may rely on.
//!
//! Everything here has passed validation in [`super::parse_str`], so names are
//! unique, every worker a builder lists exists, and every builder has steps.
//! The core compares these values with `==` to decide what a reload changed,
//! so they carry only meaning, never positions in the file.

mod builders;
mod http;
mod irc;
mod locks;
mod master;
mod pollers;
mod schedulers;
mod workers;

pub use builders::*;
pub use http::*;
pub use irc::*;
pub use locks::*;
pub use master::*;
pub use pollers::*;
pub use schedulers::*;
pub use workers::*;

/// A whole `master.toml`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Settings of the master process itself (paths, limits).
    pub master: MasterSettings,
    /// Workers in file order; dispatch prefers earlier ones on ties.
    pub workers: Vec<WorkerDef>,
    /// Builders in file order.
    pub builders: Vec<BuilderDef>,
    /// Schedulers in file order: what starts builds from changes and clocks.
    pub schedulers: Vec<SchedulerDef>,
    /// `[[poller]]` entries in file order: git repositories the master
    /// watches for new commits (`docs/pollers.md`).
    pub pollers: Vec<PollerDef>,
    /// Where the config came from, for messages (a path or `<embedded default>`).
    pub origin: String,
    /// A short stable hash of the file's text, recorded with every build.
    pub hash: String,
    /// Risky but valid choices (a secret in a world-readable file), for
    /// `check-config` and the master's log.
    pub warnings: Vec<String>,
    /// `[[lock]]` entries in file order: the shared resources builds and
    /// steps take (`docs/locks.md`).
    pub locks: Vec<LockDef>,
    /// `[irc]`: the IRC bot, if configured.
    pub irc: Option<IrcSettings>,
}

impl Config {
    /// Look a lock up by name.
    pub fn lock(&self, name: &str) -> Option<&LockDef> {
        self.locks.iter().find(|l| l.name == name)
    }

    /// Look a builder up by its current name.
    pub fn builder(&self, name: &str) -> Option<&BuilderDef> {
        self.builders.iter().find(|b| b.name == name)
    }

    /// Look a scheduler up by its current name.
    pub fn scheduler(&self, name: &str) -> Option<&SchedulerDef> {
        self.schedulers.iter().find(|s| s.name == name)
    }

    /// Look a worker up by name.
    pub fn worker(&self, name: &str) -> Option<&WorkerDef> {
        self.workers.iter().find(|w| w.name == name)
    }
}
