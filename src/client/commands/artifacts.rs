//! `artifacts` and `artifact`: the files `upload` steps stored.

use crate::untrusted::escape;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Ctx, print_json, unexpected};
use crate::client::CliError;
use crate::client::render::Table;
use crate::protocol::transfer::hex;
use crate::protocol::{ArtifactInfo, ErrorReply, Reply, Request, StreamItem};

/// `bbctl artifacts BUILD`.
pub async fn artifacts(ctx: &mut Ctx, build: u64) -> Result<u8, CliError> {
    let list = match ctx.call(Request::Artifacts { build }).await? {
        Reply::Artifacts(list) => list,
        other => return Err(unexpected(other)),
    };
    if ctx.json {
        print_json(&list)?;
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    if list.is_empty() {
        writeln!(out, "build {build} has no artifacts")?;
        return Ok(0);
    }
    let mut table = Table::new(vec!["NAME", "SIZE", "SHA256"]);
    for a in &list {
        table.row(vec![escape(&a.name), a.size.to_string(), escape(&a.sha256)]);
    }
    table.print(&mut out, &ctx.style)?;
    Ok(0)
}

/// Where the fetched bytes go.
enum Sink {
    Stdout(io::StdoutLock<'static>),
    /// A temp file beside the destination, renamed over it at the end.
    File {
        temp: PathBuf,
        file: std::fs::File,
    },
}

/// `bbctl artifact BUILD NAME [-o FILE]`: fetch one artifact, verify its
/// checksum, and write it to FILE (atomically) or stdout.
pub async fn artifact(
    ctx: &mut Ctx,
    build: u64,
    name: String,
    output: Option<PathBuf>,
) -> Result<u8, CliError> {
    let target = output.filter(|p| p != Path::new("-"));
    // Reach the master before creating anything on disk.
    ctx.conn().await?;
    let mut sink = match &target {
        None => Sink::Stdout(io::stdout().lock()),
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let base = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "artifact".into());
            let temp = dir.join(format!(".{base}.bbctl-{}", std::process::id()));
            // A new file, never through something already at that name.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            Sink::File { temp, file }
        }
    };
    let mut hasher = Sha256::new();
    let mut info: Option<ArtifactInfo> = None;
    let mut got = 0u64;
    let result = ctx
        .conn()
        .await?
        .stream(Request::Artifact { build, name }, |item| {
            match item {
                StreamItem::ArtifactBegin { info: i } => info = Some(i),
                StreamItem::ArtifactData { data } => {
                    hasher.update(&data);
                    got += data.len() as u64;
                    match &mut sink {
                        Sink::Stdout(out) => out.write_all(&data)?,
                        Sink::File { file, .. } => file.write_all(&data)?,
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await;
    let checked = match result {
        Ok(Ok(Reply::StreamEnd)) => match &info {
            Some(i) if i.size == got && hex(&hasher.finalize()) == i.sha256 => Ok(()),
            Some(i) => Err(CliError::Server(ErrorReply::failed(format!(
                "artifact {} arrived damaged ({got} of {} bytes, or a checksum mismatch)",
                escape(&i.name),
                i.size
            )))),
            None => Err(CliError::Server(ErrorReply::failed(
                "the master sent no artifact",
            ))),
        },
        Ok(Ok(other)) => Err(unexpected(other)),
        Ok(Err(e)) => Err(CliError::Server(e)),
        Err(e) => Err(CliError::Connection(e)),
    };
    match sink {
        Sink::Stdout(mut out) => {
            out.flush()?;
            checked?;
        }
        Sink::File { temp, file } => {
            let placed = checked.and_then(|()| {
                file.sync_all()?;
                drop(file);
                std::fs::rename(&temp, target.as_deref().expect("a file sink has a target"))?;
                Ok(())
            });
            if placed.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            placed?;
        }
    }
    Ok(0)
}
