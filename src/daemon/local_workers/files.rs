//! A local worker's files in the state dir: its log (rotated), its pid
//! file and its made-up secret, all created owner-only and never through a
//! symlink planted at their names.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::LocalWorkerSetup;

/// A worker log larger than this when the worker (re)starts is moved to
/// `<name>.log.old` (replacing the previous one) and begun afresh.
const LOG_ROTATE_BYTES: u64 = 16 << 20;

/// Where the local worker `name` logs: `<state_dir>/workers/<name>.log`.
pub fn log_path(setup: &LocalWorkerSetup, name: &str) -> PathBuf {
    setup.dir.join(format!("{name}.log"))
}

/// The worker's log, opened for appending (mode 0600); one grown past
/// [`LOG_ROTATE_BYTES`] is first moved aside to `<name>.log.old`.
pub(super) fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::rename(path, old)?;
    }
    crate::daemon::state_dir::private_file()
        .append(true)
        .create(true)
        .open(path)
}

/// The last non-empty line of a worker's log (read from its last 4 KiB),
/// for saying why it exited.
pub(super) fn last_line(path: &Path) -> Option<String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// The secret kept for a local worker, made up (32 random bytes, as hex)
/// and written mode 0600 the first time.
pub(super) fn load_or_make_secret(keep: &Path, name: &str) -> std::io::Result<String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(keep)?;
    let path = keep.join(format!("{name}.secret"));
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// Write a file of the master's own (a pid, a secret) in the state dir,
/// mode 0600, never through a symlink planted at its name, and on disk
/// before we go on.
pub(super) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = crate::daemon::state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep");
        let a = load_or_make_secret(&keep, "w").unwrap();
        let b = load_or_make_secret(&keep, "w").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keep.join("w.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(load_or_make_secret(&keep, "v").unwrap(), a);
    }

    #[test]
    fn files_of_the_master_are_never_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me").unwrap();
        let pid_file = dir.path().join("w.pid");
        std::os::unix::fs::symlink(&precious, &pid_file).unwrap();
        assert!(write_private(&pid_file, b"42\n").is_err());
        let log = dir.path().join("w.log");
        std::os::unix::fs::symlink(&precious, &log).unwrap();
        assert!(open_log(&log).is_err());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    }
}
