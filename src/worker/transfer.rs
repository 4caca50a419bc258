//! The worker's side of `upload` and `download` steps.
//!
//! A transfer step is held like any other step (same table, same resume
//! rules) but, instead of a process, runs [`run_transfer`]: it talks to the
//! master through the step's link (frames go in the link's queue, the
//! master's answers arrive on the step's inbox) and writes a few lines to
//! the step's spool so that the build log says what was moved.
//!
//! Upload: resolve the files (a glob or a directory inside the work dir,
//! every file checked to really be inside it), then for each one
//! `FileBegin`, chunks of at most [`FILE_CHUNK`] bytes with at most
//! [`WINDOW`] unacknowledged, `FileEnd` with the SHA-256, and wait for the
//! master's ack of the whole size (the file is then stored) or a refusal.
//!
//! Download: check the target is inside the work dir, wait for the
//! master's `FileBegin`, write a temp file beside the target, ack as data
//! is written, verify the hash at `FileEnd`, fsync, rename, ack the whole
//! size.
//!
//! A lost link, a stop or a timeout ends the transfer at once; the temp
//! file is deleted (a guard removes it on every way out); files stored
//! before stay.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::key::StepKey;
use super::runner::{StepContext, prepare_workdir};
use super::sender::{LinkTx, Outgoing, Route};
use super::spool::{Progress, SpoolWriter, spool_path};
use super::stop::StopSignal;
use crate::protocol::transfer::{
    FILE_CHUNK, Incoming, PARTIAL_PREFIX, Window, glob_match, hex, is_glob, resolve_inside,
};
use crate::protocol::{
    FileBegin, FileChunk, FileEnd, MasterToWorker, StepAssignment, StepEnd, WireAction,
    WorkerToMaster,
};

/// Why the transfer of a step ended early.
pub(crate) const LOST: &str = "worker lost mid-transfer: the link to the master broke";

/// A transfer message from the master, routed to its step.
#[derive(Debug)]
pub(crate) enum FromMaster {
    /// Upload: bytes of the current file the master has (the whole size:
    /// the file is stored).
    Ack(u64),
    /// The master gave up on this transfer.
    Refused(String),
    /// Download: a file begins.
    Begin(FileBegin),
    /// Download: a piece of it.
    Chunk(FileChunk),
    /// Download: its end.
    End(FileEnd),
}

/// The step and transfer message in `msg`, if it is one.
pub(crate) fn from_master(msg: MasterToWorker) -> Option<(StepKey, FromMaster)> {
    Some(match msg {
        MasterToWorker::FileAck {
            build,
            step,
            received,
        } => ((build, step), FromMaster::Ack(received)),
        MasterToWorker::FileRefused {
            build,
            step,
            reason,
        } => ((build, step), FromMaster::Refused(reason)),
        MasterToWorker::FileBegin(b) => ((b.build, b.step), FromMaster::Begin(b)),
        MasterToWorker::FileChunk(c) => ((c.build, c.step), FromMaster::Chunk(c)),
        MasterToWorker::FileEnd(e) => ((e.build, e.step), FromMaster::End(e)),
        _ => return None,
    })
}

/// Is this assignment a transfer (run by [`run_transfer`], not a process)?
pub(crate) fn is_transfer(a: &StepAssignment) -> bool {
    matches!(
        a.action,
        WireAction::Upload { .. } | WireAction::Download { .. }
    )
}

/// How a transfer ended, if not well.
enum Fail {
    Stopped,
    TimedOut(u64),
    Failed(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Failed(s)
    }
}

/// What a transfer works with.
struct Ctx {
    key: StepKey,
    link: LinkTx,
    route: watch::Receiver<Route>,
    inbox: mpsc::UnboundedReceiver<FromMaster>,
    stop: StopSignal,
    deadline: Option<(Instant, u64)>,
    log: Log,
}

/// The step's spool, for a few lines of log.
struct Log {
    spool: Option<SpoolWriter>,
    progress: Arc<watch::Sender<Progress>>,
}

impl Log {
    fn line(&mut self, text: &str) {
        if let Some(spool) = &mut self.spool {
            let written = spool.append(format!("{text}\n").as_bytes());
            self.progress.send_modify(|p| p.written = written);
        }
    }
}

/// Run one upload or download step to its end, like `run_step` does for a
/// process: the end is set in `progress` and returned.
pub(crate) async fn run_transfer(
    a: &StepAssignment,
    ctx: &StepContext,
    progress: Arc<watch::Sender<Progress>>,
    stop: StopSignal,
    route: watch::Receiver<Route>,
    inbox: mpsc::UnboundedReceiver<FromMaster>,
) -> StepEnd {
    let key = (a.build, a.step);
    info!(build = key.0, step = key.1, name = %a.name, "starting transfer step");
    let spool_file = spool_path(&ctx.dir, a.build, a.step);
    let spool = match SpoolWriter::create(&spool_file, ctx.spool_limit) {
        Ok(s) => Some(s.with_total(a.max_output.unwrap_or(u64::MAX))),
        Err(e) => {
            warn!("cannot create the spool {}: {e}", spool_file.display());
            None
        }
    };
    let log = Log {
        spool,
        progress: Arc::clone(&progress),
    };
    let end = match prepare_workdir(&ctx.dir, &a.builder).await {
        Err(error) => StepEnd::SpawnFailed { error },
        Ok(workdir) => {
            // Download temp files left by a worker killed mid-way.
            let sweep_dir = workdir.clone();
            let _ = tokio::task::spawn_blocking(move || super::partials::sweep(&sweep_dir)).await;
            let link = match &*route.borrow() {
                Route::Attached { link, .. } => Some(link.clone()),
                _ => None,
            };
            match link {
                None => StepEnd::TransferFailed { error: LOST.into() },
                Some(link) => {
                    let mut t = Ctx {
                        key,
                        link,
                        route,
                        inbox,
                        stop,
                        deadline: a
                            .timeout_ms
                            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms)),
                        log,
                    };
                    let result = match &a.action {
                        WireAction::Upload {
                            from,
                            max_size,
                            mode,
                        } => upload(&mut t, &workdir, from, *max_size, *mode).await,
                        WireAction::Download {
                            from,
                            to,
                            max_size,
                            mode,
                        } => download(&mut t, &workdir, from, to, *max_size, *mode).await,
                        _ => Err(Fail::Failed("not a transfer step".into())),
                    };
                    match result {
                        Ok(()) => StepEnd::Exited { code: 0 },
                        Err(Fail::Stopped) => StepEnd::Stopped,
                        Err(Fail::TimedOut(after_ms)) => StepEnd::TimedOut { after_ms },
                        Err(Fail::Failed(error)) => {
                            t.log.line(&format!("transfer failed: {error}"));
                            StepEnd::TransferFailed { error }
                        }
                    }
                }
            }
        }
    };
    info!(build = key.0, step = key.1, ?end, "transfer step ended");
    progress.send_modify(|p| p.end = Some(end.clone()));
    end
}

impl Ctx {
    /// Queue a frame for the master; a closed queue is a lost link.
    async fn send(&mut self, msg: WorkerToMaster) -> Result<(), Fail> {
        let link = self.link.clone();
        tokio::select! {
            sent = link.send(Outgoing::plain(msg)) => sent.map_err(|_| Fail::Failed(LOST.into())),
            f = interrupted(&mut self.stop, &mut self.route, self.deadline) => Err(f),
        }
    }

    /// The next message from the master for this step.
    async fn next(&mut self) -> Result<FromMaster, Fail> {
        tokio::select! {
            msg = self.inbox.recv() => msg.ok_or_else(|| Fail::Failed(LOST.into())),
            f = interrupted(&mut self.stop, &mut self.route, self.deadline) => Err(f),
        }
    }

    /// See [`interrupted`].
    async fn interrupted(&mut self) -> Fail {
        interrupted(&mut self.stop, &mut self.route, self.deadline).await
    }
}

/// Resolves when the step must end early: a stop, its timeout, or its
/// link is gone (the route moves only when the link is lost).
async fn interrupted(
    stop: &mut StopSignal,
    route: &mut watch::Receiver<Route>,
    deadline: Option<(Instant, u64)>,
) -> Fail {
    let timeout = async move {
        match deadline {
            Some((at, ms)) => {
                tokio::time::sleep_until(at).await;
                ms
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop.stopped() => Fail::Stopped,
        ms = timeout => Fail::TimedOut(ms),
        _ = route.changed() => Fail::Failed(LOST.into()),
    }
}

/// One file to upload: its artifact name, where it is, its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// Device and inode when it was checked to be inside the work dir: the
    /// file opened later must be this very one (nothing swapped a
    /// directory for a symlink in between).
    pub(crate) id: (u64, u64),
}

/// The files `from` names inside `workdir`: a directory (every regular
/// file below it, named by its path inside it), or a glob whose last
/// component may hold `*` and `?` (files named by their file name). Every
/// file is checked to resolve inside the work dir. Sorted by name.
pub(crate) fn resolve_upload(workdir: &Path, from: &str) -> Result<Vec<UploadFile>, String> {
    if let Some(why) = crate::config::relative_path_problem(from) {
        return Err(format!("upload source {from:?} {why}"));
    }
    let base = workdir
        .canonicalize()
        .map_err(|e| format!("work dir {}: {e}", workdir.display()))?;
    let rel = Path::new(from);
    let mut files = Vec::new();
    let (dir_part, last) = match from.rsplit_once('/') {
        Some((d, l)) => (d, l),
        None => ("", from),
    };
    if dir_part.split('/').any(is_glob) {
        return Err(format!(
            "upload source {from:?}: only the last path component may hold `*` or `?`"
        ));
    }
    if is_glob(last) {
        let dir = if dir_part.is_empty() {
            base.clone()
        } else {
            resolve_inside(&base, Path::new(dir_part), "the work dir")?
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !glob_match(last, &name) || super::partials::is_download_temp(&name) {
                continue;
            }
            let shown = if dir_part.is_empty() {
                name.clone()
            } else {
                format!("{dir_part}/{name}")
            };
            let real = resolve_inside(&base, Path::new(&shown), "the work dir")?;
            let meta = std::fs::metadata(&real).map_err(|e| format!("{shown}: {e}"))?;
            if meta.is_file() {
                files.push(UploadFile {
                    name,
                    path: real,
                    size: meta.len(),
                    id: (meta.dev(), meta.ino()),
                });
            }
        }
        if files.is_empty() {
            return Err(format!("no file matches {from:?}"));
        }
    } else {
        let real = resolve_inside(&base, rel, "the work dir")?;
        let meta = std::fs::metadata(&real).map_err(|e| format!("{from}: {e}"))?;
        if meta.is_file() {
            // Named as the user wrote it, not after a symlink's target.
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push(UploadFile {
                name,
                path: real,
                size: meta.len(),
                id: (meta.dev(), meta.ino()),
            });
        } else if meta.is_dir() {
            walk(&base, &real, "", &mut files)?;
        } else {
            return Err(format!("{from} is neither a file nor a directory"));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Every regular file below `dir`, named `prefix` + its path inside.
fn walk(base: &Path, dir: &Path, prefix: &str, out: &mut Vec<UploadFile>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if super::partials::is_download_temp(&file_name) {
            // A download in progress (or a leftover): never an artifact.
            continue;
        }
        let name = format!("{prefix}{file_name}");
        let path = entry.path();
        let real = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !real.starts_with(base) {
            return Err(format!(
                "{name} resolves to {}, outside the work dir (a symlink pointing out?)",
                real.display()
            ));
        }
        let meta = std::fs::metadata(&real).map_err(|e| format!("{name}: {e}"))?;
        if meta.is_dir() {
            // A symlink to a directory inside the work dir is not followed:
            // it could loop.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &real, &format!("{name}/"), out)?;
            }
        } else if meta.is_file() {
            out.push(UploadFile {
                name,
                path: real,
                size: meta.len(),
                id: (meta.dev(), meta.ino()),
            });
        }
    }
    Ok(())
}

async fn upload(
    t: &mut Ctx,
    workdir: &Path,
    from: &str,
    max_size: Option<u64>,
    mode: u32,
) -> Result<(), Fail> {
    let files = resolve_upload(workdir, from)?;
    if let Some(max) = max_size
        && let Some(big) = files.iter().find(|f| f.size > max)
    {
        return Err(Fail::Failed(format!(
            "{} is {} bytes, more than max_size ({max} bytes)",
            big.name, big.size
        )));
    }
    t.log
        .line(&format!("uploading {} file(s) from {from}", files.len()));
    for file in &files {
        let sha = upload_one(t, file, mode).await?;
        t.log.line(&format!(
            "uploaded {} ({} bytes, sha256 {sha})",
            file.name, file.size
        ));
    }
    Ok(())
}

/// Send one file and wait until the master has stored it.
async fn upload_one(t: &mut Ctx, file: &UploadFile, mode: u32) -> Result<String, Fail> {
    let (build, step) = t.key;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&file.path)
        .map_err(|e| format!("{}: {e}", file.name))?;
    let opened = reader
        .metadata()
        .map_err(|e| format!("{}: {e}", file.name))?;
    if (opened.dev(), opened.ino()) != file.id {
        return Err(Fail::Failed(format!(
            "{} changed between its check and its upload; not sent",
            file.name
        )));
    }
    t.send(WorkerToMaster::FileBegin(FileBegin {
        build,
        step,
        name: file.name.clone(),
        size: file.size,
        mode,
    }))
    .await?;
    let mut window = Window::new();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; FILE_CHUNK];
    while window.sent() < file.size {
        // Take in what the master said without waiting, then wait only
        // while the window is full.
        while let Ok(msg) = t.inbox.try_recv() {
            on_upload_msg(&mut window, msg)?;
        }
        while !window.has_room() {
            let msg = t.next().await?;
            on_upload_msg(&mut window, msg)?;
        }
        let want = (file.size - window.sent()).min(FILE_CHUNK as u64) as usize;
        let n =
            read_full(&mut reader, &mut buf[..want]).map_err(|e| format!("{}: {e}", file.name))?;
        if n < want {
            return Err(Fail::Failed(format!(
                "{} shrank while being uploaded",
                file.name
            )));
        }
        hasher.update(&buf[..n]);
        let offset = window.sent();
        window.on_sent(n as u64);
        t.send(WorkerToMaster::FileChunk(FileChunk {
            build,
            step,
            offset,
            data: buf[..n].to_vec(),
        }))
        .await?;
    }
    let sha256 = hex(&hasher.finalize());
    t.send(WorkerToMaster::FileEnd(FileEnd {
        build,
        step,
        sha256: sha256.clone(),
    }))
    .await?;
    // The ack of the whole size says the file is stored.
    loop {
        match t.next().await? {
            FromMaster::Ack(n) if n == file.size => return Ok(sha256),
            msg => on_upload_msg(&mut window, msg)?,
        }
    }
}

fn on_upload_msg(window: &mut Window, msg: FromMaster) -> Result<(), Fail> {
    match msg {
        FromMaster::Ack(n) => window.on_ack(n).map_err(Fail::Failed),
        FromMaster::Refused(reason) => Err(Fail::Failed(reason)),
        other => {
            debug!(?other, "unexpected transfer message during an upload");
            Ok(())
        }
    }
}

/// Read until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

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

async fn download(
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
    fn upload_sources_resolve_inside_the_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("out/sub")).unwrap();
        std::fs::write(work.join("out/a.tar.gz"), b"a").unwrap();
        std::fs::write(work.join("out/b.tar.gz"), b"bb").unwrap();
        std::fs::write(work.join("out/c.txt"), b"c").unwrap();
        std::fs::write(work.join("out/sub/d.bin"), b"ddd").unwrap();
        let names = |v: Vec<UploadFile>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(
            names(resolve_upload(&work, "out/*.tar.gz").unwrap()),
            ["a.tar.gz", "b.tar.gz"]
        );
        assert_eq!(
            names(resolve_upload(&work, "out").unwrap()),
            ["a.tar.gz", "b.tar.gz", "c.txt", "sub/d.bin"]
        );
        assert_eq!(
            names(resolve_upload(&work, "out/c.txt").unwrap()),
            ["c.txt"]
        );
        assert!(
            resolve_upload(&work, "out/*.zip")
                .unwrap_err()
                .contains("no file matches")
        );
        assert!(resolve_upload(&work, "../x").is_err());
        assert!(resolve_upload(&work, "/etc/passwd").is_err());
        assert!(resolve_upload(&work, "*/a.tar.gz").is_err());
        // A symlink pointing out of the work dir is refused, by name.
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), work.join("out/e.tar.gz")).unwrap();
        let e = resolve_upload(&work, "out/*.tar.gz").unwrap_err();
        assert!(e.contains("outside the work dir"), "{e}");
        let e = resolve_upload(&work, "out").unwrap_err();
        assert!(e.contains("outside the work dir"), "{e}");
    }

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
