//! Upload steps, the master's side: each file goes to a partial file in
//! the build's artifacts dir, hashed and size-checked as bytes arrive; at
//! its end it is verified, fsynced, linked into place and recorded, off
//! the link's thread, and only then acked.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use tracing::{info, warn};

use crate::daemon::handle::MasterHandle;
use crate::daemon::quota::{Usage, build_usage, check_upload, free_space};
use crate::paths::now_ms;
use crate::protocol::transfer::{Incoming, PARTIAL_PREFIX, check_artifact_name};
use crate::protocol::{ArtifactInfo, BuildId, FileBegin, FileChunk, FileEnd, MasterToWorker};
use crate::untrusted::Escaped;

use super::{Dirs, StepKey, Transfers};

/// A file being received; its temp file goes when this is dropped.
struct Receiving {
    name: String,
    incoming: Incoming,
    file: std::fs::File,
    temp: Partial,
}

/// An upload step given to this link.
pub(super) struct Upload {
    max_size: Option<u64>,
    /// The build's artifacts so far, this step's begun files included.
    usage: Usage,
    mode: u32,
    current: Option<Receiving>,
}

impl Upload {
    /// Forget the file being received, deleting its temp file.
    pub(super) fn drop_current(&mut self) {
        self.current = None;
    }
}

impl Transfers {
    /// An upload step was given out: remember its limits and the build's
    /// artifacts so far.
    pub(super) fn start_upload(&mut self, key: StepKey, max_size: Option<u64>, mode: u32) {
        self.uploads.insert(
            key,
            Upload {
                max_size,
                usage: build_usage(&self.dirs.artifacts.join(key.0.to_string())),
                mode,
                current: None,
            },
        );
    }

    /// Is this step an upload given to this link?
    pub fn is_upload(&self, key: StepKey) -> bool {
        self.uploads.contains_key(&key)
    }

    /// A file of an upload begins.
    pub fn on_begin(&mut self, b: FileBegin) -> Vec<MasterToWorker> {
        let key = (b.build, b.step);
        if self.failed.contains_key(&key) {
            return Vec::new();
        }
        match self.begin(&b) {
            Ok(()) => Vec::new(),
            Err(reason) => self.refuse(key, reason),
        }
    }

    fn begin(&mut self, b: &FileBegin) -> Result<(), String> {
        let key = (b.build, b.step);
        let dirs = self.dirs.clone();
        let Some(upload) = self.uploads.get_mut(&key) else {
            return Err("not an upload step".into());
        };
        if upload.current.is_some() {
            return Err("a file began before the previous one ended".into());
        }
        check_artifact_name(&b.name)?;
        let free = free_space(&dirs.artifacts)
            .map_err(|e| format!("cannot tell the free space of the artifacts dir: {e}"))?;
        check_upload(&self.limits, b.build, upload.usage, &b.name, b.size, free)?;
        let incoming =
            Incoming::begin(b.size, upload.max_size).map_err(|e| format!("{}: {e}", b.name))?;
        let dir = dirs.artifacts.join(b.build.to_string());
        let target = dir.join(&b.name);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(format!(
                "artifact {} of build {} already exists; it is kept as it is",
                b.name, b.build
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let temp = dir.join(format!("{PARTIAL_PREFIX}{}-{}", b.step, now_ms()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
        upload.usage.files += 1;
        upload.usage.bytes += b.size;
        upload.current = Some(Receiving {
            name: b.name.clone(),
            incoming,
            file,
            temp: Partial(temp),
        });
        Ok(())
    }

    /// A piece of the current upload.
    pub fn on_chunk(&mut self, c: FileChunk) -> Vec<MasterToWorker> {
        let key = (c.build, c.step);
        if self.failed.contains_key(&key) {
            return Vec::new();
        }
        let Some(r) = self.uploads.get_mut(&key).and_then(|u| u.current.as_mut()) else {
            return self.refuse(key, "file data before its FileBegin".into());
        };
        let written = r
            .incoming
            .check_chunk(c.offset, c.data.len())
            .map_err(|e| format!("{}: {e}", r.name))
            .and_then(|()| {
                r.file
                    .write_all(&c.data)
                    .map_err(|e| format!("cannot write {}: {e}", r.temp.0.display()))
            });
        match written {
            Ok(()) => match r.incoming.on_written(&c.data) {
                Some(received) => vec![MasterToWorker::FileAck {
                    build: c.build,
                    step: c.step,
                    received,
                }],
                None => Vec::new(),
            },
            Err(reason) => self.refuse(key, reason),
        }
    }

    /// The current upload is complete: verify, store and record it in a
    /// task of its own; the ack (or refusal) comes from [`Self::next_stored`].
    pub fn on_end(&mut self, e: FileEnd) -> Vec<MasterToWorker> {
        let key = (e.build, e.step);
        if self.failed.contains_key(&key) {
            return Vec::new();
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            // Never echoed: it would carry whatever the worker put there
            // into the step's reason.
            return self.refuse(key, "the file's sha256 is not 64 hex digits".into());
        }
        let Some(upload) = self.uploads.get_mut(&key) else {
            return self.refuse(key, "not an upload step".into());
        };
        let mode = upload.mode;
        let Some(r) = upload.current.take() else {
            return self.refuse(key, "FileEnd before its FileBegin".into());
        };
        let dirs = self.dirs.clone();
        let master = self.master.clone();
        let done = self.stored_tx.clone();
        tokio::spawn(async move {
            let outcome = Self::store_file(&dirs, &master, e.build, r, &e.sha256, mode).await;
            let _ = done.send((key, outcome));
        });
        Vec::new()
    }

    /// Verify, fsync, place and record one uploaded file; its size.
    async fn store_file(
        dirs: &Dirs,
        master: &MasterHandle,
        build: BuildId,
        r: Receiving,
        sha256: &str,
        mode: u32,
    ) -> Result<u64, String> {
        let Receiving {
            name,
            incoming,
            file,
            temp,
        } = r;
        let size = incoming.size;
        let sha256 = incoming
            .finish(sha256)
            .map_err(|e| format!("{name}: {e}"))?;
        let target = dirs.artifact(build, &name);
        // fsync and link off the link's thread: a big file takes a while.
        // The temp file is deleted however this ends (the guard moves in).
        let artifacts_root = dirs.artifacts.clone();
        let placed = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let temp = temp;
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(|e| format!("cannot set the mode of {}: {e}", temp.0.display()))?;
            file.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", temp.0.display()))?;
            drop(file);
            // A hard link never replaces an existing file, unlike rename.
            std::fs::hard_link(&temp.0, &target)
                .map_err(|e| format!("cannot store {}: {e}", target.display()))?;
            // Make the new entry durable, and the directories that may
            // have been created for it (`<build>/`, `sub/`), up to the
            // artifacts dir itself.
            let mut dir = target.parent();
            while let Some(d) = dir {
                if let Ok(handle) = std::fs::File::open(d) {
                    let _ = handle.sync_all();
                }
                if d == artifacts_root {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
        .map_err(|e| format!("storing {name} failed: {e}"))?;
        placed?;
        let info = ArtifactInfo {
            name: name.clone(),
            size,
            sha256,
            created_at_ms: now_ms(),
        };
        let recorded = master.record_artifact(build, info).await;
        if let Err(e) = recorded {
            let _ = std::fs::remove_file(dirs.artifact(build, &name));
            return Err(format!("cannot record artifact {name}: {e}"));
        }
        info!(build, artifact = %Escaped(&name), size, "artifact stored");
        Ok(size)
    }
}

/// A temp file removed when dropped (unless it was already moved away).
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("cannot remove the partial file {}: {e}", self.0.display());
        }
    }
}
