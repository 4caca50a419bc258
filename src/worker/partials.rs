//! Leftover download temp files (`.partial-<name>-<pid>-<build>-<step>`).
//!
//! A worker killed in the middle of a download leaves its temp file in the
//! step's work dir. Nothing else would ever delete it, and an upload of
//! that directory would send it (the master refuses artifact names with
//! the reserved prefix). So the worker sweeps them at start and before
//! each transfer step, and an upload never picks one up.

use std::path::Path;

use tracing::{info, warn};

use crate::protocol::transfer::PARTIAL_PREFIX;

/// The pid part of a download temp file's name, if `name` is one:
/// `.partial-<name>-<pid>-<build>-<step>`.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PARTIAL_PREFIX)?;
    let mut parts = rest.rsplitn(4, '-');
    let (step, build, pid, file) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if file.is_empty() || !numeric(step) || !numeric(build) {
        return None;
    }
    pid.parse().ok()
}

/// Whether `name` is a download temp file of a worker.
pub(crate) fn is_download_temp(name: &str) -> bool {
    temp_pid(name).is_some()
}

/// Delete every download temp file below `dir` left by another worker
/// process (this process's own are live downloads, or deleted by them).
/// Symlinks are not followed. Returns how many were deleted.
pub(crate) fn sweep(dir: &Path) -> usize {
    let me = std::process::id();
    let mut swept = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                todo.push(path);
                continue;
            }
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_pid) else {
                continue;
            };
            if pid == me {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    info!(
                        "removed a download temp file left by an earlier worker: {}",
                        path.display()
                    );
                    swept += 1;
                }
                Err(e) => warn!(
                    "cannot remove the leftover download temp file {}: {e}",
                    path.display()
                ),
            }
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_told_from_user_files() {
        assert_eq!(temp_pid(".partial-a.bin-123-4-5"), Some(123));
        assert_eq!(temp_pid(".partial-a-b-c-123-4-5"), Some(123));
        assert_eq!(temp_pid(".partial-a.bin"), None);
        assert_eq!(temp_pid(".partial--1-2-3"), None);
        assert_eq!(temp_pid("a.bin-1-2-3"), None);
        assert_eq!(temp_pid(".partial-x-y-2-3"), None);
    }

    #[test]
    fn leftovers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("b/out/sub");
        std::fs::create_dir_all(&deep).unwrap();
        let old = deep.join(".partial-f.bin-4000000-1-0");
        let live = deep.join(format!(".partial-g.bin-{}-2-0", std::process::id()));
        let user = deep.join(".partial-mine");
        for f in [&old, &live, &user] {
            std::fs::write(f, b"x").unwrap();
        }
        assert_eq!(sweep(dir.path()), 1);
        assert!(!old.exists());
        assert!(live.exists() && user.exists());
    }
}
