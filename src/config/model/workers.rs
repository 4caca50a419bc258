//! Workers: their definitions, per-worker limits, secrets and `worker_choice`.

use std::time::Duration;

/// The limits that bound a worker, however compromised: it cannot fill the
/// master's disk beyond them nor keep a build running past the master's
/// own deadlines (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Largest uploaded file, whatever the step's `max_size` says.
    pub max_upload_size: u64,
    /// Bytes of artifacts one build may store, over all its steps.
    pub max_artifact_bytes_per_build: u64,
    /// Artifacts (files) one build may store, over all its steps.
    pub max_artifacts_per_build: u32,
    /// Free space the artifacts' file system keeps: an upload that would
    /// leave less is refused.
    pub min_free_space: u64,
    /// How long past a step's timeout, or past `bbctl stop`, the master
    /// waits for the worker to report the step's end before it ends the
    /// build itself and abandons the step.
    pub deadline_grace: Duration,
}

/// Every value comes from [`crate::config::defaults::DEFAULTS`].
impl Default for WorkerLimits {
    fn default() -> Self {
        use crate::config::defaults as d;
        WorkerLimits {
            max_upload_size: d::size("master.max_upload_size"),
            max_artifact_bytes_per_build: d::size("master.max_artifact_bytes_per_build"),
            max_artifacts_per_build: d::count("master.max_artifacts_per_build"),
            min_free_space: d::size("master.min_free_space"),
            deadline_grace: d::duration("master.deadline_grace"),
        }
    }
}

/// A `[[worker]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDef {
    /// Unique worker name, matched across reloads.
    pub name: String,
    /// Started and supervised by the master itself.
    pub local: bool,
    /// How many builds this worker runs at once (at least 1).
    pub max_builds: u32,
    /// The shared secret a remote worker proves; `None` for local workers,
    /// whose secret the master makes up at start.
    pub secret: Option<Secret>,
    /// For a local worker: the user it and its steps run as (the master
    /// must run as root); `None` runs it as the master's own user.
    pub user: Option<String>,
    /// `tags = ["linux", "arm64"]`: what builders' `worker_tags` match.
    pub tags: Vec<String>,
}

/// A worker secret; its `Debug` never shows the value, so logs stay clean.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `worker_choice`: which of the eligible free workers gets a new build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerChoice {
    /// The one running fewest builds; ties go to the earlier in the list.
    #[default]
    LeastBusy,
    /// One picked from the request id (deterministic: no random state).
    Random,
    /// The first free one in list order.
    InOrder,
}
