//! Builders and their steps: step actions, git, force properties, uploads and downloads.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// A `[[builder]]` entry. Serializable because every build keeps the
/// definition it started with in the store, to finish with it after a
/// master restart whatever the config says by then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuilderDef {
    /// Unique builder name, matched across reloads.
    pub name: String,
    /// Names this builder had before; a reload moves their queue and history here.
    pub previous_names: Vec<String>,
    /// Workers allowed to run this builder's builds, in preference order.
    pub workers: Vec<String>,
    /// Environment given to every step of this builder.
    pub env: BTreeMap<String, String>,
    /// Variables of the worker's own environment its steps may see, beyond
    /// the fixed allow-list (steps start from a clean environment).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// The steps, run in order; never empty.
    pub steps: Vec<StepDef>,
    /// When a request starts, queued requests with the same properties
    /// are merged into it (they end as `skipped`, pointing to it).
    #[serde(default)]
    pub collapse: bool,
    /// Whether a build cut short by its worker's absence is run again
    /// (`retry`, up to `max_retries`). `false` for builds that must never
    /// run twice (deploys): such a build ends as `exception` instead.
    /// Definitions stored before this key existed read as `true`.
    #[serde(default = "retry_default")]
    pub retry: bool,
    /// The properties `bbctl force-build` may set, with their types and
    /// defaults; empty: any property (as before this key existed).
    #[serde(default)]
    pub force_properties: Vec<ForceProperty>,
    /// Locks a build takes before its first step and holds to its end.
    #[serde(default)]
    pub locks: Vec<LockClaim>,
    /// Tags an eligible worker must all carry (with `workers` too, a
    /// worker must be listed *and* carry them).
    #[serde(default)]
    pub worker_tags: Vec<String>,
    /// How the worker of a new build is picked among eligible free ones.
    #[serde(default)]
    pub worker_choice: WorkerChoice,
    /// At most this many builds of this builder run at once.
    #[serde(default)]
    pub max_running: Option<u32>,
}

fn retry_default() -> bool {
    true
}

impl Default for BuilderDef {
    fn default() -> Self {
        BuilderDef {
            name: String::new(),
            previous_names: Vec::new(),
            workers: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            steps: Vec::new(),
            collapse: false,
            retry: true,
            force_properties: Vec::new(),
            locks: Vec::new(),
            worker_tags: Vec::new(),
            worker_choice: WorkerChoice::default(),
            max_running: None,
        }
    }
}

/// A `[[builder.step]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepDef {
    /// Step name, unique within its builder.
    pub name: String,
    /// What to run.
    pub action: StepAction,
    /// Kill the step's process group after this long; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Environment for this step only, layered over the builder's.
    pub env: BTreeMap<String, String>,
    /// Locks taken just before this step starts and released when it ends.
    #[serde(default)]
    pub locks: Vec<LockClaim>,
}

/// How a step runs its command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepAction {
    /// `shell = "..."`: run with `/bin/sh -c`.
    Shell(String),
    /// `command = [...]`: run this argv directly, no shell.
    Command(Vec<String>),
    /// `upload = {...}`: worker files to `<state_dir>/artifacts/<build>/`.
    Upload(UploadSpec),
    /// `download = {...}`: a file of the transfer dir to the worker.
    Download(DownloadSpec),
    /// `git = {...}`: check the build's revision out into the work dir.
    Git(GitSpec),
    /// `trigger = {...}`: fire `triggerable` schedulers; run by the
    /// master itself, never sent to a worker.
    Trigger(crate::config::TriggerSpec),
}

/// A `git` step: which repository, and how much of the old checkout stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitSpec {
    /// A URL or a path the worker's `git` can fetch from.
    pub repository: String,
    /// Whether untracked files of earlier builds stay.
    pub mode: GitMode,
    /// Also check out the submodules (recursively).
    pub submodules: bool,
}

/// How a `git` step treats the checkout an earlier build left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitMode {
    /// Fetch into the existing clone and check out: tracked files are
    /// reset, untracked and ignored files (build outputs) stay.
    Incremental,
    /// As incremental, then `git clean -ffdx`: the tree is exactly the
    /// revision's, as a fresh clone would be (the objects are reused).
    Full,
}

/// How long a `git` step may take when its step sets no `timeout`: a
/// fetch that hangs (a dead server, a prompt nobody answers) must end.
pub const GIT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// One property a force may set (`[[builder.force_properties]]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForceProperty {
    /// The property's name (an environment variable name).
    pub name: String,
    /// What values it takes.
    pub kind: ForceKind,
    /// The value given when the force does not set it, in its normal
    /// text form (`"3"`, `"true"`); `None`: no default.
    pub default: Option<String>,
    /// A force must set it (only meaningful without a default).
    pub required: bool,
}

/// The type of a force property.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceKind {
    /// Any text.
    String,
    /// A whole number (i64), stored in its decimal form.
    Int,
    /// `true` or `false`.
    Bool,
    /// One of these values.
    Choice(Vec<String>),
}

impl ForceKind {
    /// The type's name as the config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            ForceKind::String => "string",
            ForceKind::Int => "int",
            ForceKind::Bool => "bool",
            ForceKind::Choice(_) => "choice",
        }
    }

    /// `value` in its normal form if it is one of this type's values, or
    /// why not.
    pub fn normalize(&self, value: &str) -> Result<String, String> {
        match self {
            ForceKind::String => Ok(value.to_owned()),
            ForceKind::Int => value
                .trim()
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("{value:?} is not a whole number")),
            ForceKind::Bool => match value.trim() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(format!("{value:?} is not `true` or `false`")),
            },
            ForceKind::Choice(choices) => {
                if choices.iter().any(|c| c == value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!(
                        "{value:?} is not one of {}",
                        choices
                            .iter()
                            .map(|c| format!("{c:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    }
}

/// An `upload` step: which worker files, how big at most, stored how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadSpec {
    /// A glob (`*`, `?` within one path component) or a directory, relative
    /// to the step's work dir; checked to hold no `..` and not be absolute.
    pub from: String,
    /// Largest file accepted, in bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// Permission bits of the stored files.
    pub mode: u32,
}

/// A `download` step: which master file, to where on the worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadSpec {
    /// A file relative to `[master] transfer_dir`.
    pub from: String,
    /// The destination, relative to the step's work dir.
    pub to: String,
    /// Largest file sent, in bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// Permission bits of the written file.
    pub mode: u32,
}
