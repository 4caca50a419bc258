//! `master.toml`: parsing and validation, with `file:line:column` errors.
//!
//! [`parse_str`] is the single entry: TOML and serde errors become one
//! [`Problem`]; a file that parses is then checked in full by `validate`,
//! which reports every problem at once. Relative paths in the file
//! (`state_dir`, sockets, `secret_file`) resolve against the base dir,
//! which [`load_file`] sets to the file's own directory.

pub mod model;
pub use model::*;

pub mod deadlocks;
pub mod defaults;
mod error;
mod position;
mod raw;
pub mod schedule;
mod schema;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Deserialize;

pub use error::{ConfigError, Problem};
pub use schedule::{CatchUp, CronSpec, TimedDef, Timing, TriggerSpec};
pub use units::{parse_listen, parse_mode, parse_size};
pub use validate::relative_path_problem;
pub use validate::{DEFAULT_LEASE, MIN_LEASE};
pub use validate::{HOOK_KINDS, HTTP_PERMISSIONS};

/// The default config used when bbmaster gets no --config: one local worker
/// `local-1` (max_builds = 2), a builder `hello` with two steps (a shell
/// step `say` that echoes a greeting with $BB_BUILDER and $BB_BUILD_ID, and an
/// argv step `think` = ["sleep", "1"] with a timeout), and a builder `slow`
/// whose one step prints a line a second for 45 s, so that the README's
/// tour has a build to stop. No state_dir.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default.toml");

/// Origin string of [`embedded_default`], shown in messages and status.
const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// The embedded default config, so a new user gets a working master at once.
///
/// Panics only if the embedded file is broken, which a unit test rules out.
pub fn embedded_default() -> Config {
    match parse_str(DEFAULT_CONFIG_TOML, EMBEDDED_ORIGIN, Path::new(".")) {
        Ok(config) => config,
        Err(e) => panic!("the embedded default config is broken:\n{e}"),
    }
}

/// Reads and validates a config file; relative paths inside it resolve
/// against the file's directory (made absolute from the current directory).
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem::whole_file(
            &origin,
            format!("cannot read {}: {}", path.display(), io_reason(&e)),
        )],
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = absolute.parent().unwrap_or(Path::new("."));
    parse_str(&text, &origin, base_dir)
}

/// An I/O error's reason without the `(os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let shown = e.to_string();
    match shown.find(" (os error ") {
        Some(at) => shown[..at].to_owned(),
        None => shown,
    }
}

/// Parses and validates config text; `origin` names it in messages and
/// `base_dir` anchors its relative paths.
///
/// Only a syntax error stops the checks: unknown keys and values of the
/// wrong type (found by the schema walk) are reported along with every
/// problem of validation.
pub fn parse_str(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut doc = toml::de::DeTable::parse(text).map_err(|e| ConfigError {
        problems: vec![toml_problem(&e, text, origin)],
    })?;
    let walked = schema::walk(&mut doc, text, origin);
    // The walk removed whatever serde would refuse; an error here means the
    // schema and the raw structs disagree, and is still reported.
    let raw = raw::RawConfig::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
        let mut problems = walked.problems.clone();
        problems.push(toml_problem(&e, text, origin));
        ConfigError { problems }
    })?;
    let mut checked = validate::check(
        raw,
        text,
        origin,
        base_dir,
        walked.problems,
        &walked.placeholders,
    )
    .map_err(|problems| ConfigError { problems })?;
    if checked.builders.is_empty() {
        checked.warnings.push(format!(
            "{origin}: warning: no builders are defined, so nothing can be built"
        ));
    }
    if checked.workers.is_empty() {
        checked.warnings.push(format!(
            "{origin}: warning: no workers are defined, so no build can run"
        ));
    }
    Ok(Config {
        master: checked.master,
        workers: checked.workers,
        builders: checked.builders,
        schedulers: checked.schedulers,
        pollers: checked.pollers,
        origin: origin.to_owned(),
        hash: fnv1a_hex(text),
        warnings: checked.warnings,
        locks: checked.locks,
        irc: checked.irc,
    })
}

/// One problem from a TOML syntax or serde error: its position (1:1 if it
/// has none: a syntax error always has one) and its core message on a single line, with the key path
/// (`in `builder.env``) when the toml crate knows it.
fn toml_problem(e: &toml::de::Error, text: &str, origin: &str) -> Problem {
    let (line, column) = e
        .span()
        .map_or((1, 1), |span| position::line_col(text, span.start));
    // Without the input, Display skips the source snippet but names the keys.
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let mut message = Vec::new();
    let mut keys = None;
    for line in shown.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("in `") {
            keys = Some(line);
        } else {
            message.push(line);
        }
    }
    let mut message = message
        .join(", ")
        .replace("expected i64", "expected an integer");
    if message == "duplicate key" {
        // Name the key; the span covers it.
        if let Some(key) = e.span().and_then(|s| text.get(s)) {
            message = format!("duplicate key `{}`", key.trim());
        }
    }
    if let Some(keys) = keys {
        message = format!("{message} ({keys})");
    }
    Problem::at(origin, line, column, message)
}

/// FNV-1a 64-bit of `text` as 16 lowercase hex digits: a short, stable,
/// dependency-free fingerprint recorded with every build.
fn fnv1a_hex(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}
