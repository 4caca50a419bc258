//! A start check: nothing on disk belongs to a build id the database will
//! hand out again.
//!
//! Logs (`<state_dir>/logs/<build>/`) and artifacts (`artifacts/<build>/`)
//! are kept by build id. A `master.db` restored from an older backup, or
//! deleted, or emptied, would give a new build an id whose log and files
//! exist, mixing two builds. The master refuses to start then, naming what
//! it found and the way out (docs/durability.md).

use std::path::{Path, PathBuf};

use crate::protocol::BuildId;

/// Files of builds the database does not know, found at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dir} holds build {found}, but the database {db} knows builds only up to {known} \
     (restored from an older backup, deleted or emptied?): a new build would reuse an id \
     whose files exist. Not starting. Either put back the database that goes with these \
     files, or move them aside (for example `mv {dir} {dir}.stale`) and start again"
)]
pub struct StaleBuilds {
    /// The directory holding them (`logs` or `artifacts`).
    pub dir: PathBuf,
    /// The highest build id found there.
    pub found: BuildId,
    /// The highest build id in the database (0: none).
    pub known: BuildId,
    /// The database (its file, or the PostgreSQL database).
    pub db: String,
}

/// The highest build id with a directory in `dir` (`None`: none, or no
/// such dir). Names that are not build ids are ignored.
pub fn newest_build(dir: &Path) -> std::io::Result<Option<BuildId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut newest = None;
    for entry in entries {
        let entry = entry?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<BuildId>().ok())
        {
            newest = newest.max(Some(id));
        }
    }
    Ok(newest)
}

/// Refuse when any of `dirs` holds a build past `known`, the database's
/// highest build id.
pub fn check(dirs: &[&Path], known: BuildId, db: &dyn std::fmt::Display) -> Result<(), CheckError> {
    for dir in dirs {
        let found = newest_build(dir).map_err(|source| CheckError::Read {
            dir: dir.to_path_buf(),
            source,
        })?;
        if let Some(found) = found
            && found > known
        {
            return Err(CheckError::Stale(StaleBuilds {
                dir: dir.to_path_buf(),
                found,
                known,
                db: db.to_string(),
            }));
        }
    }
    Ok(())
}

/// Why the check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Builds on disk that the database does not know.
    #[error(transparent)]
    Stale(#[from] StaleBuilds),
    /// A directory could not be listed.
    #[error("cannot list {}: {source}", dir.display())]
    Read {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_past_the_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(logs.join("2")).unwrap();
        std::fs::create_dir_all(logs.join("10")).unwrap();
        std::fs::create_dir_all(logs.join("not-a-build")).unwrap();
        assert_eq!(newest_build(&logs).unwrap(), Some(10));
        assert!(check(&[&logs], 10, &"db").is_ok());
        let err = check(&[&logs], 3, &"db").unwrap_err().to_string();
        assert!(err.contains("holds build 10"), "{err}");
        assert!(err.contains("up to 3"), "{err}");
        assert!(check(&[&dir.path().join("none")], 0, &"db").is_ok());
    }
}
