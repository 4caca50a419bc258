//! Errors of loading a config: every problem found, each with its position.

use std::fmt;

/// One thing wrong with a config file, at a place a user can jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file path as given, or `<embedded default>`.
    pub origin: String,
    /// 1-based line and column (in characters); `None` when the problem
    /// is the file as a whole (it cannot be read), so no position is made up.
    pub position: Option<(usize, usize)>,
    /// One line saying what is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `line:column` of `origin`.
    pub fn at(origin: &str, line: usize, column: usize, message: String) -> Self {
        Problem {
            origin: origin.to_owned(),
            position: Some((line, column)),
            message,
        }
    }

    /// A problem with the file as a whole; the message names the file.
    pub fn whole_file(origin: &str, message: String) -> Self {
        Problem {
            origin: origin.to_owned(),
            position: None,
            message,
        }
    }

    /// The 1-based line, if the problem has a position.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|(line, _)| line)
    }

    /// The 1-based column, if the problem has a position.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|(_, column)| column)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(f, "{}:{line}:{column}: {}", self.origin, self.message)
            }
            None => f.write_str(&self.message),
        }
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
