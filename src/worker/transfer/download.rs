//! Download steps: check the target is inside the work dir, receive the
//! file into a temp file beside it, verify its hash, then rename it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::protocol::WorkerToMaster;
use crate::protocol::transfer::{Incoming, PARTIAL_PREFIX, resolve_inside};

use super::{Ctx, Fail, FromMaster};

/// A temp file deleted when dropped, unless kept.
pub(crate) struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempFile { path, keep: false }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(
                "cannot remove the partial file {}: {e}",
                self.path.display()
            );
        }
    }
}

/// The target of a download: `to` inside the work dir, its parent created
/// and checked to resolve inside the work dir.
pub(crate) fn download_target(workdir: &Path, to: &str) -> Result<PathBuf, String> {
    if let Some(why) = crate::config::relative_path_problem(to) {
        return Err(format!("download target {to:?} {why}"));
    }
    let base = workdir
        .canonicalize()
        .map_err(|e| format!("work dir {}: {e}", workdir.display()))?;
    let rel = Path::new(to);
    let file_name = rel
        .file_name()
        .ok_or_else(|| format!("download target {to:?} names no file"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    // Create the parent one component at a time, checking each step: an
    // existing component must resolve inside the work dir (no symlink
    // pointing out), so nothing is ever created outside it.
    let mut partial = PathBuf::new();
    for component in parent.components() {
        partial.push(component);
        let path = base.join(&partial);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => {
                resolve_inside(&base, &partial, "the work dir")?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let real_parent = if parent.as_os_str().is_empty() {
        base.clone()
    } else {
        resolve_inside(&base, parent, "the work dir")?
    };
    let target = real_parent.join(file_name);
    if let Ok(meta) = std::fs::symlink_metadata(&target)
        && meta.is_dir()
    {
        return Err(format!("download target {to} is a directory"));
    }
    Ok(target)
}

pub(super) async fn download(
    t: &mut Ctx,
    workdir: &Path,
    from: &str,
    to: &str,
    max_size: Option<u64>,
    mode: u32,
) -> Result<(), Fail> {
    let (build, step) = t.key;
    let target = download_target(workdir, to)?;
    let begin = match t.next().await? {
        FromMaster::Begin(b) => b,
        FromMaster::Refused(reason) => return Err(Fail::Failed(reason)),
        other => {
            return Err(Fail::Failed(format!(
                "the master sent {other:?} before the file began"
            )));
        }
    };
    let mut incoming = Incoming::begin(begin.size, max_size)?;
    let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp_path = dir.join(format!(
        "{PARTIAL_PREFIX}{file_name}-{}-{build}-{step}",
        std::process::id()
    ));
    let mut temp = TempFile::new(temp_path.clone());
    // A fresh file, never through a symlink left at that name.
    let _ = std::fs::remove_file(&temp_path);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&temp_path)
        .map_err(|e| format!("cannot create {}: {e}", temp_path.display()))?;
    t.log.line(&format!(
        "downloading {from} ({} bytes) to {to}",
        begin.size
    ));
    let sha = loop {
        match t.next().await? {
            FromMaster::Chunk(c) => {
                incoming.check_chunk(c.offset, c.data.len())?;
                out.write_all(&c.data)
                    .map_err(|e| format!("cannot write {}: {e}", temp_path.display()))?;
                if let Some(received) = incoming.on_written(&c.data) {
                    t.send(WorkerToMaster::FileAck {
                        build,
                        step,
                        received,
                    })
                    .await?;
                }
            }
            FromMaster::End(e) => break incoming.finish(&e.sha256)?,
            FromMaster::Refused(reason) => return Err(Fail::Failed(reason)),
            other => {
                return Err(Fail::Failed(format!(
                    "unexpected {other:?} during a download"
                )));
            }
        }
    };
    // fsync and rename off the runtime's thread: a big file takes a while.
    let place = {
        let target = target.clone();
        let temp_path = temp_path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            out.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| format!("cannot set the mode of {}: {e}", temp_path.display()))?;
            out.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", temp_path.display()))?;
            drop(out);
            std::fs::rename(&temp_path, &target)
                .map_err(|e| format!("cannot rename to {}: {e}", target.display()))?;
            if let Some(dir) = target.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(())
        })
    };
    let placed = tokio::select! {
        r = place => r.map_err(|e| format!("placing the file failed: {e}"))?,
        f = t.interrupted() => return Err(f),
    };
    placed?;
    temp.keep = true;
    t.send(WorkerToMaster::FileAck {
        build,
        step,
        received: begin.size,
    })
    .await?;
    t.log.line(&format!(
        "downloaded {from} to {to} ({} bytes, sha256 {sha})",
        begin.size
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_targets_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let t = download_target(&work, "in/data.bin").unwrap();
        assert!(t.ends_with("in/data.bin"));
        assert!(download_target(&work, "../x").is_err());
        std::os::unix::fs::symlink(dir.path(), work.join("up")).unwrap();
        let e = download_target(&work, "up/x").unwrap_err();
        assert!(e.contains("outside the work dir"), "{e}");
        // A missing directory behind a symlink pointing out is never created.
        let e = download_target(&work, "up/newdir/x").unwrap_err();
        assert!(e.contains("outside the work dir"), "{e}");
        assert!(
            !dir.path().join("newdir").exists(),
            "created outside the work dir"
        );
        std::fs::create_dir(work.join("d")).unwrap();
        assert!(download_target(&work, "d").is_err());
    }
}
