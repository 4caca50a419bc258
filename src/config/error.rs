//! Errors of loading a config: every problem found, each with its position.

use std::fmt;

/// One thing wrong with a config file, at a place a user can jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file path as given, or `<embedded default>`.
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// One line saying what is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.line, self.column, self.message
        )
    }
}

/// Why a config was refused: all problems found, sorted by position, so a
/// user can fix them in one pass.
#[derive(Debug, thiserror::Error)]
#[error("{}", join_lines(.problems))]
pub struct ConfigError {
    /// Never empty when returned by this module.
    pub problems: Vec<Problem>,
}

/// One problem per line, no trailing newline.
fn join_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
