//! One master per state dir: an exclusive lock on `<state_dir>/bbmaster.lock`.
//!
//! The kernel drops the lock when the process dies, however it dies, so a
//! crash never leaves a stale lock behind; the file holds the owner's pid
//! only so that a second master can name it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another master runs on this state dir.
    #[error("another bbmaster (pid {pid}) is already running on state dir {}", dir.display())]
    Held {
        /// The state dir.
        dir: PathBuf,
        /// The running master's pid, as it wrote it (`unknown` if unreadable).
        pid: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released on drop (and by the kernel on a crash).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Take the lock of `state_dir`, or say who holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        let path = state_dir.join("bbmaster.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Never through a symlink planted in the state dir: its target
        // would be truncated and overwritten with our pid.
        let mut file = super::state_dir::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
