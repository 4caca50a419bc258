//! Download steps, the master's side: the source is resolved inside the
//! transfer dir and streamed in chunks within the window the worker's
//! acks open; the worker verifies the hash and places the file.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::protocol::transfer::{FILE_CHUNK, Window, hex, resolve_inside};
use crate::protocol::{FileBegin, FileChunk, FileEnd, MasterToWorker};

use super::{StepKey, Transfers};

/// Chunks sent per turn of the link loop before it looks at other work.
const CHUNKS_PER_TURN: usize = 16;

/// A download being sent.
pub(super) struct Download {
    file: std::fs::File,
    size: u64,
    window: Window,
    hasher: Sha256,
    ended: bool,
}

impl Transfers {
    /// A download step was given out: open its source; the frames that
    /// must follow the `StartStep` (its `FileBegin`, or the refusal).
    pub(super) fn start_download(
        &mut self,
        key: StepKey,
        from: &str,
        max_size: Option<u64>,
        mode: u32,
    ) -> Vec<MasterToWorker> {
        match self.open_download(from, max_size) {
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
                    build: key.0,
                    step: key.1,
                    name: from.to_string(),
                    size,
                    mode,
                })]
            }
            Err(reason) => self.refuse(key, reason),
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
}
