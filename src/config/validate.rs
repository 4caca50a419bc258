//! Every check of a parsed file, turning raw structs into the model.
//!
//! Checks never stop at the first problem: each one records what it finds
//! and goes on, so that a user sees everything wrong in one pass.

mod builders;
mod deadlocks;
mod limits;
mod locks;
mod retention;
mod schedulers;

mod files;
mod force;
mod http;
mod irc;
mod pollers;
mod steps;
mod store;
mod timers;
mod tls;
pub use http::{HOOK_KINDS, HTTP_PERMISSIONS};
pub use steps::relative_path_problem;
pub use store::{DEFAULT_LEASE, MIN_LEASE};
mod workers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Problem;
use super::model::{
    BuilderDef, IrcSettings, LockDef, MasterSettings, PollerDef, SchedulerDef, WorkerDef,
};
use super::position::line_col;
use super::raw::{RawConfig, RawEnv, RawMaster};

/// Longest allowed name of a worker, builder or step.
const MAX_NAME_LEN: usize = 64;
/// Highest allowed `max_builds`; more is surely a typo.
const MAX_BUILDS_LIMIT: i64 = 10_000;

/// Upper bound for `max_retries`: more is a retry loop, not a policy.
const MAX_RETRIES_LIMIT: u32 = 100;

/// What a valid file yields, before origin and hash are added.
pub struct Checked {
    /// `[master]`, paths resolved.
    pub master: MasterSettings,
    /// Workers in file order.
    pub workers: Vec<WorkerDef>,
    /// Builders in file order.
    pub builders: Vec<BuilderDef>,
    /// Schedulers in file order.
    pub schedulers: Vec<SchedulerDef>,
    /// Pollers in file order.
    pub pollers: Vec<PollerDef>,
    /// Risky choices worth a warning.
    pub warnings: Vec<String>,
    /// Locks in file order.
    pub locks: Vec<LockDef>,
    /// `[irc]`, if present.
    pub irc: Option<IrcSettings>,
}

/// Checks `raw` in full; on failure returns every problem, `earlier` ones
/// (of the schema walk) included, sorted by position. Problems at
/// `placeholders` (names the walk made up) are not reported again.
pub fn check(
    raw: RawConfig,
    text: &str,
    origin: &str,
    base_dir: &Path,
    earlier: Vec<Problem>,
    placeholders: &HashSet<usize>,
) -> Result<Checked, Vec<Problem>> {
    let mut c = Checker {
        text,
        origin,
        base_dir,
        placeholders,
        problems: earlier,
        warnings: Vec::new(),
        locks: Vec::new(),
    };
    let mut master = c.master(&raw.master);
    let workers = c.workers(&raw.worker);
    c.no_local_workers_with_postgres(&raw.master.store, &raw.worker);
    master.worker_secret_files = raw
        .worker
        .iter()
        .filter_map(|w| {
            let file = w.secret_file.as_ref()?;
            Some((w.name.get_ref().clone(), base_dir.join(file.get_ref())))
        })
        .collect();
    c.locks = c.locks(&raw.lock, &raw.worker);
    let builders = c.builders(&raw.builder, &raw.worker);
    let schedulers = c.schedulers(&raw.scheduler, &raw.builder);
    c.build_and_step_locks(&raw.builder);
    if c.problems.is_empty() {
        c.trigger_deadlocks(&raw.builder, &builders, &schedulers, &workers);
    }
    master.retention = c.retention(&raw.master, &raw.builder);
    let pollers = c.pollers(&raw.poller);
    master.http = raw.http.as_ref().and_then(|h| c.http(h));
    let irc = raw.irc.as_ref().and_then(|irc| c.irc(irc));
    if c.problems.is_empty() {
        Ok(Checked {
            master,
            workers,
            builders,
            schedulers,
            pollers,
            warnings: c.warnings,
            locks: c.locks,
            irc,
        })
    } else {
        c.problems.sort_by_key(|p| p.position);
        Err(c.problems)
    }
}

/// Collects problems while walking the raw config.
struct Checker<'a> {
    text: &'a str,
    origin: &'a str,
    base_dir: &'a Path,
    placeholders: &'a HashSet<usize>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
    /// The `[[lock]]`s, read before the builders that claim them.
    locks: Vec<LockDef>,
}

impl Checker<'_> {
    /// Records a warning at byte span `at`: valid, but risky.
    fn warn(&mut self, at: &Range<usize>, message: String) {
        let (line, column) = line_col(self.text, at.start);
        self.warnings.push(format!(
            "{}:{line}:{column}: warning: {message}",
            self.origin
        ));
    }

    /// Records a problem at byte span `at`.
    fn report(&mut self, at: &Range<usize>, message: String) {
        let (line, column) = line_col(self.text, at.start);
        self.problems
            .push(Problem::at(self.origin, line, column, message));
    }

    /// The 1-based line of a span, for "first defined on line N".
    fn line_of(&self, at: &Range<usize>) -> usize {
        line_col(self.text, at.start).0
    }

    /// Resolves a path from the file against the base dir.
    fn path(&mut self, key: &str, value: &Option<Spanned<String>>) -> Option<PathBuf> {
        let value = value.as_ref()?;
        if value.get_ref().is_empty() {
            self.report(&value.span(), format!("`{key}` must not be empty"));
            return None;
        }
        Some(self.base_dir.join(value.get_ref()))
    }

    /// `[master]`: each path present must be non-empty; relative ones are joined to the base dir.
    fn master(&mut self, raw: &RawMaster) -> MasterSettings {
        let defaults = MasterSettings::default();
        let max_retries = match &raw.max_retries {
            None => defaults.max_retries,
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(n) if n <= MAX_RETRIES_LIMIT => n,
                _ => {
                    self.report(
                        &m.span(),
                        format!(
                            "master: `max_retries` must be between 0 and {MAX_RETRIES_LIMIT}, not {}",
                            m.get_ref()
                        ),
                    );
                    defaults.max_retries
                }
            },
        };
        self.others_need_a_reachable_socket(raw);
        MasterSettings {
            state_dir: self.path("state_dir", &raw.state_dir),
            control_socket: self.path("control_socket", &raw.control_socket),
            worker_socket: self.path("worker_socket", &raw.worker_socket),
            worker_grace: raw
                .worker_grace
                .as_ref()
                .and_then(|d| self.duration("master", "worker_grace", d))
                .unwrap_or(defaults.worker_grace),
            keepalive: raw
                .keepalive
                .as_ref()
                .and_then(|d| self.duration("master", "keepalive", d))
                .unwrap_or(defaults.keepalive),
            max_retries,
            max_handshake_frame: self.size(
                "max_handshake_frame",
                &raw.max_handshake_frame,
                1 << 10,
                1 << 20,
                defaults.max_handshake_frame as u64,
            ) as usize,
            max_frame: self.size(
                "max_frame",
                &raw.max_frame,
                64 << 10,
                1 << 30,
                defaults.max_frame as u64,
            ) as usize,
            max_log_size: self.size(
                "max_log_size",
                &raw.max_log_size,
                1 << 10,
                1 << 40,
                defaults.max_log_size,
            ),
            max_queued: self.count(
                "max_queued",
                &raw.max_queued,
                1,
                10_000_000,
                defaults.max_queued,
            ),
            max_clients: self.count(
                "max_clients",
                &raw.max_clients,
                1,
                100_000,
                defaults.max_clients,
            ),
            allowed_uids: self.uids(&raw.allowed_uids),
            transfer_dir: self.path("transfer_dir", &raw.transfer_dir),
            // Filled in by `check` once the builders are read.
            retention: Default::default(),
            worker_limits: self.worker_limits(raw),
            worker_listen: self.worker_listen(raw),
            tls_identity: self.tls_identity(raw),
            allow_plaintext: raw.allow_plaintext.as_ref().is_some_and(|p| *p.get_ref()),
            client_ca: self.client_ca(raw),
            worker_secret_files: BTreeMap::new(),
            http: None,
            store: self.store(&raw.store),
            allowed_gid: raw
                .allowed_gid
                .as_ref()
                .and_then(|g| match u32::try_from(*g.get_ref()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.report(
                            &g.span(),
                            format!(
                                "master: `allowed_gid` is a group id (0 or more), not {}",
                                g.get_ref()
                            ),
                        );
                        None
                    }
                }),
        }
    }

    /// `allowed_uids`/`allowed_gid` let other users in, but the default
    /// control socket lies in the owner-only state dir, where they cannot
    /// reach it: say so, with the way out.
    fn others_need_a_reachable_socket(&mut self, raw: &RawMaster) {
        if raw.control_socket.is_some() {
            return;
        }
        let at = match (&raw.allowed_uids, &raw.allowed_gid) {
            (Some(uids), _) if !uids.get_ref().is_empty() => uids.span(),
            (_, Some(gid)) => gid.span(),
            _ => return,
        };
        self.warn(
            &at,
            "master: `allowed_uids`/`allowed_gid` let other users use the control socket, but \
             it lies in the owner-only state dir by default, where they cannot reach it; set \
             `control_socket` outside it (e.g. \"/run/bbmaster/control.sock\")"
                .to_string(),
        );
    }

    /// Checks a name's length and characters; `kind` says what it names.
    fn name(&mut self, kind: &str, name: &Spanned<String>) {
        if self.placeholders.contains(&name.span().start) {
            // Missing or mistyped: reported by the schema walk.
            return;
        }
        let text = name.get_ref();
        let len = text.chars().count();
        if text.is_empty() {
            self.report(&name.span(), format!("{kind} name must not be empty"));
        } else if len > MAX_NAME_LEN {
            self.report(
                &name.span(),
                format!("{kind} name is {len} characters long; at most {MAX_NAME_LEN} are allowed"),
            );
        } else if let Some(bad) = text.chars().find(|c| !is_name_char(*c)) {
            self.report(
                &name.span(),
                format!(
                    "{kind} name `{text}` contains {bad:?}; names may only contain \
                     ASCII letters, digits, '.', '_' and '-'"
                ),
            );
        }
    }

    /// Reports the second and later uses of each name in `names`.
    fn duplicates<'n>(
        &mut self,
        names: impl IntoIterator<Item = &'n Spanned<String>>,
        what: impl Fn(&str) -> String,
    ) {
        let mut first: HashMap<&str, Range<usize>> = HashMap::new();
        for name in names {
            if self.placeholders.contains(&name.span().start) {
                continue;
            }
            match first.get(name.get_ref().as_str()) {
                Some(at) => {
                    let line = self.line_of(at);
                    let message =
                        format!("{} (first defined on line {line})", what(name.get_ref()));
                    self.report(&name.span(), message);
                }
                None => {
                    first.insert(name.get_ref(), name.span());
                }
            }
        }
    }

    /// Checks an env table's keys; `owner` prefixes messages.
    fn env(&mut self, owner: &str, raw: &RawEnv) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (key, value) in raw {
            if !is_env_name(key.get_ref()) {
                self.report(
                    &key.span(),
                    format!(
                        "{owner}: env key `{}` is not a valid variable name \
                         (letters, digits and '_', not starting with a digit)",
                        key.get_ref()
                    ),
                );
            }
            env.insert(key.get_ref().clone(), value.get_ref().clone());
        }
        env
    }
}

/// Characters allowed in names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
