//! `bbctl artifact BUILD NAME`: a stored artifact streamed to a client.

use std::io::Read;

use crate::daemon::handle::MasterHandle;
use crate::protocol::BuildId;
use crate::protocol::transfer::FILE_CHUNK;

use super::Dirs;

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
