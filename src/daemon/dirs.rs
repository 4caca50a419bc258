//! Where the master keeps transferred files: the artifacts of uploads and
//! the transfer dir that downloads read from. Shared by the limits every
//! link holds and the transfer code of each link.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::protocol::BuildId;
use crate::protocol::transfer::PARTIAL_PREFIX;

/// Where transferred files live.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// `<state_dir>/artifacts`: uploads, one directory per build.
    pub artifacts: PathBuf,
    /// `[master] transfer_dir` (default `<state_dir>/files`): downloads.
    pub transfer: PathBuf,
}

impl Dirs {
    /// The directories of a master on `state_dir`.
    pub fn new(state_dir: &Path, transfer_dir: Option<&Path>) -> Self {
        Dirs {
            artifacts: state_dir.join("artifacts"),
            transfer: transfer_dir.map_or_else(|| state_dir.join("files"), Path::to_path_buf),
        }
    }

    /// Create both directories and delete partial files a previous master
    /// left behind (it died mid-transfer: those files are not artifacts).
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.artifacts)?;
        std::fs::create_dir_all(&self.transfer)?;
        for build in std::fs::read_dir(&self.artifacts)?.flatten() {
            let Ok(entries) = std::fs::read_dir(build.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(PARTIAL_PREFIX)
                {
                    info!(
                        "removing a partial upload left by a previous master: {}",
                        entry.path().display()
                    );
                    if let Err(e) = std::fs::remove_file(entry.path()) {
                        warn!("cannot remove {}: {e}", entry.path().display());
                    }
                }
            }
        }
        Ok(())
    }

    /// Where a build's artifact `name` is.
    pub fn artifact(&self, build: BuildId, name: &str) -> PathBuf {
        self.artifacts.join(build.to_string()).join(name)
    }
}
