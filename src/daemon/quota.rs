//! What uploads may cost the master: a worker, however compromised, cannot
//! store a file over `max_upload_size`, more than the build's quota of
//! artifacts (files and bytes, over all its steps), or eat into the
//! `min_free_space` the master keeps on the artifacts' file system.
//!
//! A build's usage is read from its artifacts directory when an upload
//! step starts, so it holds across links, reconnects and master restarts;
//! during the step each file counts with its announced size as soon as it
//! begins (the announced size is also the most it may send).

use std::path::Path;

use crate::config::WorkerLimits;
use crate::protocol::BuildId;
use crate::protocol::transfer::PARTIAL_PREFIX;
use crate::untrusted::Escaped;

/// Artifacts a build holds (or has begun).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes, announced sizes for files still arriving.
    pub bytes: u64,
    /// Files.
    pub files: u64,
}

/// What `dir` (a build's artifacts directory) holds, partial files left
/// aside. Symbolic links are not followed (the master never makes any).
pub fn build_usage(dir: &Path) -> Usage {
    let mut usage = Usage::default();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                usage.files += 1;
                usage.bytes += meta.len();
            }
        }
    }
    usage
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// May a file of `size` bytes named `name` begin, for a build that uses
/// `usage` already, with `free` bytes left on the disk? The reason names
/// the limit that refuses it.
pub fn check_upload(
    limits: &WorkerLimits,
    build: BuildId,
    usage: Usage,
    name: &str,
    size: u64,
    free: u64,
) -> Result<(), String> {
    let name = Escaped(name);
    if size > limits.max_upload_size {
        return Err(format!(
            "{name}: the file is {size} bytes, more than the master's max_upload_size ({} bytes)",
            limits.max_upload_size
        ));
    }
    if usage.files >= u64::from(limits.max_artifacts_per_build) {
        return Err(format!(
            "{name}: build {build} already has {} artifacts (max_artifacts_per_build = {})",
            usage.files, limits.max_artifacts_per_build
        ));
    }
    if usage.bytes.saturating_add(size) > limits.max_artifact_bytes_per_build {
        return Err(format!(
            "{name}: {size} bytes more would bring build {build}'s artifacts to {} bytes, over max_artifact_bytes_per_build ({} bytes)",
            usage.bytes.saturating_add(size),
            limits.max_artifact_bytes_per_build
        ));
    }
    if free < size.saturating_add(limits.min_free_space) {
        return Err(format!(
            "{name}: storing {size} bytes would leave less than min_free_space ({} bytes) free on the master ({free} bytes free)",
            limits.min_free_space
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WorkerLimits {
        WorkerLimits {
            max_upload_size: 100,
            max_artifact_bytes_per_build: 250,
            max_artifacts_per_build: 3,
            min_free_space: 1000,
            ..WorkerLimits::default()
        }
    }

    #[test]
    fn each_limit_refuses_with_its_name() {
        let l = limits();
        let used = Usage { bytes: 0, files: 0 };
        assert!(check_upload(&l, 1, used, "a", 100, 10_000).is_ok());
        let e = check_upload(&l, 1, used, "a", 101, 10_000).unwrap_err();
        assert!(e.contains("max_upload_size"), "{e}");
        let full = Usage { bytes: 0, files: 3 };
        let e = check_upload(&l, 1, full, "a", 1, 10_000).unwrap_err();
        assert!(e.contains("max_artifacts_per_build"), "{e}");
        let heavy = Usage {
            bytes: 200,
            files: 2,
        };
        let e = check_upload(&l, 1, heavy, "a", 51, 10_000).unwrap_err();
        assert!(e.contains("max_artifact_bytes_per_build"), "{e}");
        assert!(check_upload(&l, 1, heavy, "a", 50, 10_000).is_ok());
        let e = check_upload(&l, 1, used, "a", 10, 1009).unwrap_err();
        assert!(e.contains("min_free_space"), "{e}");
        let e = check_upload(&l, 1, used, "a\nb", 101, 10_000).unwrap_err();
        assert!(!e.contains('\n'), "names are escaped: {e}");
    }

    #[test]
    fn usage_counts_stored_files_not_partial_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        std::fs::write(dir.path().join(format!("{PARTIAL_PREFIX}1-2")), [0u8; 7]).unwrap();
        assert_eq!(
            build_usage(dir.path()),
            Usage {
                bytes: 15,
                files: 2
            }
        );
        assert_eq!(build_usage(&dir.path().join("none")), Usage::default());
        assert!(free_space(dir.path()).unwrap() > 0);
    }
}
