//! The state dir is trusted only once it is checked: it holds the database,
//! the logs, the sockets and the local workers' secrets.
//!
//! Checks go through one open descriptor of the directory, so that what is
//! checked (owner, mode) is what is changed: a path swapped for a symlink
//! between a `stat` and a `chmod` cannot redirect the change.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

/// Why the state dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Another user owns it: their files would be ours to trust.
    #[error(
        "state dir {} belongs to uid {owner}, not to this master's uid {own}; \
         use a state dir of your own, or `chown {own} {}` if it is yours",
        dir.display(),
        dir.display()
    )]
    ForeignOwner {
        /// The state dir.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The master's effective uid.
        own: u32,
    },
    /// It could not be opened or narrowed.
    #[error("cannot use state dir {}: {source}", dir.display())]
    Io {
        /// The state dir.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Check an existing state dir: owned by the master's effective uid, and
/// owner-only (an open one is narrowed to 0700 through its descriptor, and
/// the log says so).
pub fn check(dir: &Path) -> Result<(), StateDirError> {
    let io = |source| StateDirError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY)
        .open(dir)
        .map_err(io)?;
    check_open(dir, &file, nix::unistd::geteuid().as_raw())
}

/// [`check`] on an open directory, for a given uid (so tests can play
/// another user).
fn check_open(dir: &Path, file: &File, own: u32) -> Result<(), StateDirError> {
    let meta = file.metadata().map_err(|source| StateDirError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    if meta.uid() != own {
        return Err(StateDirError::ForeignOwner {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            own,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        warn!(
            "state dir {} had mode {mode:o}; narrowing it to 700",
            dir.display()
        );
        file.set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|source| StateDirError::Io {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Open options for a file the master creates by name inside its state
/// dir: never through a symlink planted there, never inherited by a child.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> File {
        File::open(dir).unwrap()
    }

    #[test]
    fn an_open_state_dir_is_narrowed_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        check(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_state_dir_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let own = nix::unistd::geteuid().as_raw() + 1;
        let err = check_open(dir.path(), &open(dir.path()), own).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("belongs to uid"), "{text}");
        assert!(text.contains(&format!("chown {own}")), "{text}");
        // Refused before anything was changed.
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn private_files_are_not_opened_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        let link = dir.path().join("bbmaster.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&link)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    }
}
