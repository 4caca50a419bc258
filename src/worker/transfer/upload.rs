//! Upload steps: resolve the files named inside the work dir, then send
//! each one in windowed chunks and wait for the master to store it.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::debug;

use crate::protocol::transfer::{FILE_CHUNK, Window, glob_match, hex, is_glob, resolve_inside};
use crate::protocol::{FileBegin, FileChunk, FileEnd, WorkerToMaster};

use super::{Ctx, Fail, FromMaster};

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
            if !glob_match(last, &name) || crate::worker::partials::is_download_temp(&name) {
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
        if crate::worker::partials::is_download_temp(&file_name) {
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

pub(super) async fn upload(
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
}
