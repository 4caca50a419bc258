//! The master's side of `upload` and `download` steps: all their file I/O.
//!
//! One [`Transfers`] lives in each worker link task, beside the step logs:
//! file data never passes through the master loop. The link tells it which
//! steps it gave out (from the `StartStep` it forwards), hands it the
//! worker's transfer frames, and writes the frames it returns.
//!
//! Upload: each file goes to `<state_dir>/artifacts/<build>/.partial-…`,
//! hashed and size-checked as bytes arrive; at `FileEnd` the hash is
//! compared, the file fsynced and linked into place under its name (never
//! replacing a file already there), the artifact recorded in the store
//! (through the master loop), and only then is the whole size acked.
//! Download: the file is resolved inside the transfer dir and streamed
//! with the same window; the worker verifies and places it.
//!
//! Any failure refuses the step's transfer (`FileRefused`), deletes the
//! partial file and remembers the reason, so that the step's end is
//! reported as `transfer_failed` whatever the worker says. A link that
//! ends drops its `Transfers`, and with it every partial file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::WorkerLimits;
use crate::daemon::handle::MasterHandle;
use crate::daemon::quota::{Usage, build_usage, check_upload, free_space};
use crate::paths::now_ms;
use crate::protocol::transfer::{
    FILE_CHUNK, Incoming, PARTIAL_PREFIX, Window, check_artifact_name, hex, resolve_inside,
};
use crate::protocol::{
    ArtifactInfo, BuildId, FileBegin, FileChunk, FileEnd, MasterToWorker, StepEnd, StepIndex,
    WireAction,
};
use crate::untrusted::Escaped;

/// Identifies a step.
type StepKey = (BuildId, StepIndex);

/// Chunks sent per turn of the link loop before it looks at other work.
const CHUNKS_PER_TURN: usize = 16;

pub use crate::daemon::dirs::Dirs;

/// A file being received; its temp file goes when this is dropped.
struct Receiving {
    name: String,
    incoming: Incoming,
    file: std::fs::File,
    temp: Partial,
}

/// An upload step given to this link.
struct Upload {
    max_size: Option<u64>,
    /// The build's artifacts so far, this step's begun files included.
    usage: Usage,
    mode: u32,
    current: Option<Receiving>,
}

/// A download being sent.
struct Download {
    file: std::fs::File,
    size: u64,
    window: Window,
    hasher: Sha256,
    ended: bool,
}

/// The transfers of one link.
pub struct Transfers {
    dirs: Dirs,
    limits: WorkerLimits,
    master: MasterHandle,
    uploads: HashMap<StepKey, Upload>,
    downloads: HashMap<StepKey, Download>,
    /// Steps whose transfer failed on our side, with the reason.
    failed: HashMap<StepKey, String>,
    /// Uploaded files being verified, fsynced, placed and recorded, in
    /// tasks of their own (a big file's fsync must not stall the link):
    /// their outcomes come back here.
    stored_tx: mpsc::UnboundedSender<(StepKey, Result<u64, String>)>,
    stored_rx: mpsc::UnboundedReceiver<(StepKey, Result<u64, String>)>,
}

impl Transfers {
    /// No transfer yet.
    pub fn new(dirs: Dirs, master: MasterHandle, limits: WorkerLimits) -> Self {
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        Transfers {
            dirs,
            limits,
            master,
            uploads: HashMap::new(),
            downloads: HashMap::new(),
            failed: HashMap::new(),
            stored_tx,
            stored_rx,
        }
    }

    /// The next uploaded file whose storing finished: the frames to send
    /// (its ack, or the refusal). Cancel-safe.
    pub async fn next_stored(&mut self) -> Vec<MasterToWorker> {
        let Some((key, outcome)) = self.stored_rx.recv().await else {
            return Vec::new();
        };
        match outcome {
            Ok(size) => vec![MasterToWorker::FileAck {
                build: key.0,
                step: key.1,
                received: size,
            }],
            Err(reason) => self.refuse(key, reason),
        }
    }

    /// The link is about to send a `StartStep` with this action: remember
    /// an upload; for a download, the frames that must follow it.
    pub fn on_start(
        &mut self,
        build: BuildId,
        step: StepIndex,
        action: &WireAction,
    ) -> Vec<MasterToWorker> {
        let key = (build, step);
        match action {
            WireAction::Upload { max_size, mode, .. } => {
                self.uploads.insert(
                    key,
                    Upload {
                        max_size: *max_size,
                        usage: build_usage(&self.dirs.artifacts.join(build.to_string())),
                        mode: *mode,
                        current: None,
                    },
                );
                Vec::new()
            }
            WireAction::Download {
                from,
                max_size,
                mode,
                ..
            } => match self.open_download(from, *max_size) {
                Ok((file, size)) => {
                    self.downloads.insert(
                        key,
                        Download {
                            file,
                            size,
                            window: Window::new(),
                            hasher: Sha256::new(),
                            ended: false,
                        },
                    );
                    vec![MasterToWorker::FileBegin(FileBegin {
                        build,
                        step,
                        name: from.clone(),
                        size,
                        mode: *mode,
                    })]
                }
                Err(reason) => self.refuse(key, reason),
            },
            _ => Vec::new(),
        }
    }

    /// Open a download's source: inside the transfer dir, a regular file,
    /// within `max_size`.
    fn open_download(
        &self,
        from: &str,
        max_size: Option<u64>,
    ) -> Result<(std::fs::File, u64), String> {
        let base = self
            .dirs
            .transfer
            .canonicalize()
            .map_err(|e| format!("transfer dir {}: {e}", self.dirs.transfer.display()))?;
        let path = resolve_inside(&base, Path::new(from), "the transfer dir")?;
        // Look before opening: opening a FIFO would block this link.
        let kind = std::fs::metadata(&path).map_err(|e| format!("{from}: {e}"))?;
        if !kind.is_file() {
            return Err(format!("{from} is not a regular file"));
        }
        let file = std::fs::File::open(&path).map_err(|e| format!("{from}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("{from}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{from} is not a regular file"));
        }
        if let Some(max) = max_size
            && meta.len() > max
        {
            return Err(format!(
                "{from} is {} bytes, more than max_size ({max} bytes)",
                meta.len()
            ));
        }
        Ok((file, meta.len()))
    }

    /// Give up on a step's transfer: forget its state (deleting any
    /// partial file), remember why, and tell the worker.
    fn refuse(&mut self, key: StepKey, reason: String) -> Vec<MasterToWorker> {
        warn!(
            build = key.0,
            step = key.1,
            "transfer failed: {}",
            Escaped(&reason)
        );
        if let Some(upload) = self.uploads.get_mut(&key) {
            upload.current = None;
        }
        self.downloads.remove(&key);
        self.failed.insert(key, reason.clone());
        vec![MasterToWorker::FileRefused {
            build: key.0,
            step: key.1,
            reason,
        }]
    }

    /// Does any download have a chunk (or its end) ready to go?
    pub fn can_send(&self) -> bool {
        self.downloads
            .values()
            .any(|d| !d.ended && d.window.has_room())
    }

    /// Up to a turn's worth of download frames.
    pub fn pump(&mut self) -> Vec<MasterToWorker> {
        let mut out = Vec::new();
        let keys: Vec<StepKey> = self.downloads.keys().copied().collect();
        let mut failures = Vec::new();
        for key in keys {
            let Some(d) = self.downloads.get_mut(&key) else {
                continue;
            };
            while out.len() < CHUNKS_PER_TURN && !d.ended && d.window.has_room() {
                if d.window.sent() == d.size {
                    d.ended = true;
                    let sha256 = hex(&std::mem::take(&mut d.hasher).finalize());
                    out.push(MasterToWorker::FileEnd(FileEnd {
                        build: key.0,
                        step: key.1,
                        sha256,
                    }));
                    break;
                }
                let want = (d.size - d.window.sent()).min(FILE_CHUNK as u64) as usize;
                let mut data = vec![0u8; want];
                match d.file.read_exact(&mut data) {
                    Ok(()) => {
                        d.hasher.update(&data);
                        let offset = d.window.sent();
                        d.window.on_sent(want as u64);
                        out.push(MasterToWorker::FileChunk(FileChunk {
                            build: key.0,
                            step: key.1,
                            offset,
                            data,
                        }));
                    }
                    Err(e) => {
                        failures.push((key, format!("cannot read the download's source: {e}")));
                        break;
                    }
                }
            }
        }
        for (key, reason) in failures {
            out.extend(self.refuse(key, reason));
        }
        out
    }

    /// The worker acked `received` bytes of a download.
    pub fn on_ack(&mut self, key: StepKey, received: u64) -> Vec<MasterToWorker> {
        let Some(d) = self.downloads.get_mut(&key) else {
            return Vec::new();
        };
        if let Err(e) = d.window.on_ack(received) {
            return self.refuse(key, e);
        }
        if d.ended && received == d.size {
            // Stored on the worker: nothing more to send.
            self.downloads.remove(&key);
        }
        Vec::new()
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

    /// The step ended: forget its transfer (deleting anything partial),
    /// and turn a success into `transfer_failed` if we refused it.
    pub fn on_step_end(&mut self, key: StepKey, end: StepEnd) -> StepEnd {
        self.uploads.remove(&key);
        self.downloads.remove(&key);
        match (self.failed.remove(&key), end) {
            (Some(error), StepEnd::Exited { code: 0 }) => StepEnd::TransferFailed { error },
            (_, end) => end,
        }
    }
}

/// `bbctl artifact BUILD NAME`: stream the file as `artifact_begin` and
/// `artifact_data` items; the final answer is `stream_end` (or an error
/// before any item). The file is read in chunks: the socket paces us.
pub async fn send_artifact<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    id: u64,
    build: BuildId,
    name: &str,
    master: &MasterHandle,
    who: &crate::daemon::auth::Principal,
    dirs: &Dirs,
) -> Result<Result<crate::protocol::Reply, crate::protocol::ErrorReply>, crate::protocol::FrameError>
{
    use crate::protocol::{ErrorReply, Reply, ServerMsg, StreamItem, write_msg};
    let list = match master.artifacts(who, build).await {
        Ok(Reply::Artifacts(list)) => list,
        Ok(_) => return Ok(Err(ErrorReply::failed("unexpected answer"))),
        Err(e) => return Ok(Err(e)),
    };
    let Some(info) = list.into_iter().find(|a| a.name == name) else {
        return Ok(Err(ErrorReply::not_found(format!(
            "build {build} has no artifact named `{name}`"
        ))));
    };
    let path = dirs.artifact(build, name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return Ok(Err(ErrorReply::failed(format!(
                "cannot open {}: {e}",
                path.display()
            ))));
        }
    };
    let item = |item| ServerMsg::Item { id, item };
    write_msg(wr, &item(StreamItem::ArtifactBegin { info: info.clone() })).await?;
    let mut left = info.size;
    while left > 0 {
        let mut data = vec![0u8; left.min(FILE_CHUNK as u64) as usize];
        if let Err(e) = file.read_exact(&mut data) {
            return Ok(Err(ErrorReply::failed(format!(
                "cannot read {}: {e}",
                path.display()
            ))));
        }
        left -= data.len() as u64;
        write_msg(wr, &item(StreamItem::ArtifactData { data })).await?;
    }
    Ok(Ok(Reply::StreamEnd))
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

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
