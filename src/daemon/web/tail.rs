//! The recent output of each followed log, read once and shared by all
//! its followers.
//!
//! Why: everyone following a running build reads the same bytes of the
//! same file at nearly the same time. Read by each follower, 200 of them
//! on a step that prints 10 MB made 200 opens, `read`s and buffers per
//! piece of output: most of the web's CPU (docs/benchmarks.md, web-sse).
//! Here the first follower to ask for the bytes past the end of what is
//! held reads them (from a file kept open, into a buffer of the size
//! the file says is there); the others get the same buffer, counted,
//! not copied ([`Bytes`]). A follower that fell behind what is held
//! reads the file alone, as it would without this.
//!
//! The file stays the truth: a tail holds only what was read from it,
//! logs only grow, and a follower asks by byte offset, so nothing is
//! missed or doubled whatever it shares. What is held is bounded
//! ([`HELD`] per followed log) and freed with the tail's last follower.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::daemon::logs::{open_log, read_at};

/// The most one read takes from the file.
pub const CHUNK: usize = 256 << 10;
/// The most output a tail holds for its followers (the oldest pieces go
/// first): followers less than this far apart share their reads.
pub const HELD: usize = 1 << 20;

/// The tails of the logs being followed now.
#[derive(Default)]
pub struct Tails {
    open: Mutex<HashMap<PathBuf, Weak<Tail>>>,
}

impl Tails {
    /// The tail of the log at `path`, shared with its other followers (a
    /// new one if it has none).
    pub fn follow(&self, path: PathBuf) -> Arc<Tail> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tail) = open.get(&path).and_then(Weak::upgrade) {
            return tail;
        }
        open.retain(|_, t| t.strong_count() > 0);
        let tail = Arc::new(Tail {
            path: path.clone(),
            state: tokio::sync::Mutex::default(),
        });
        open.insert(path, Arc::downgrade(&tail));
        tail
    }

    /// How many logs have a tail (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().filter(|t| t.strong_count() > 0).count()
    }
}

/// One followed log.
pub struct Tail {
    path: PathBuf,
    state: tokio::sync::Mutex<Held>,
}

/// What a tail holds: the log's file once it exists, and its latest
/// output as contiguous pieces, each with the offset it starts at.
#[derive(Default)]
struct Held {
    file: Option<Arc<File>>,
    pieces: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Held {
    /// The held output from `offset` to the end of its piece.
    fn at(&self, offset: u64) -> Option<Bytes> {
        let i = self.pieces.partition_point(|(start, _)| *start <= offset);
        let (start, piece) = self.pieces.get(i.checked_sub(1)?)?;
        let from = usize::try_from(offset - start).ok()?;
        (from < piece.len()).then(|| piece.slice(from..))
    }

    /// Where the held output ends (the next read to share starts there).
    fn end(&self) -> Option<u64> {
        self.pieces
            .back()
            .map(|(start, piece)| start + piece.len() as u64)
    }

    fn keep(&mut self, start: u64, piece: Bytes) {
        self.bytes += piece.len();
        self.pieces.push_back((start, piece));
        while self.bytes > HELD && self.pieces.len() > 1 {
            if let Some((_, old)) = self.pieces.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

impl Tail {
    /// The log's output from `offset`: a piece of it (at most [`CHUNK`]),
    /// or nothing when there is none yet.
    pub async fn read(&self, offset: u64) -> io::Result<Bytes> {
        let mut held = self.state.lock().await;
        if let Some(bytes) = held.at(offset) {
            return Ok(bytes);
        }
        let file = match held.file.clone() {
            Some(f) => f,
            None => {
                // A blocking call, made off the runtime's threads, once.
                let path = self.path.clone();
                match blocking(move || open_log(&path)).await?? {
                    Some(f) => held.file.insert(Arc::new(f)).clone(),
                    None => return Ok(Bytes::new()),
                }
            }
        };
        let shared = held.end().is_none_or(|end| end == offset);
        if !shared {
            // Behind (or ahead of) what is held: read alone, without
            // keeping the others waiting.
            drop(held);
            return Ok(Bytes::from(
                blocking(move || read_at(&file, offset, CHUNK)).await??,
            ));
        }
        // The next piece: read once, under the lock, for everyone.
        let bytes = Bytes::from(blocking(move || read_at(&file, offset, CHUNK)).await??);
        if !bytes.is_empty() {
            held.keep(offset, bytes.clone());
        }
        Ok(bytes)
    }
}

/// Run a blocking call on the blocking pool; a panic in it is an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("a log read failed: {e}")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;

    fn append(path: &std::path::Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    #[tokio::test]
    async fn followers_share_one_read_and_each_gets_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let tails = Tails::default();
        let a = tails.follow(path.clone());
        let b = tails.follow(path.clone());
        assert!(Arc::ptr_eq(&a, &b));
        // No file yet: nothing, and no error.
        assert!(a.read(0).await.unwrap().is_empty());
        append(&path, b"hello ");
        let first = a.read(0).await.unwrap();
        assert_eq!(&first[..], b"hello ");
        // The same bytes, not a second read: one buffer.
        let again = b.read(0).await.unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr());
        // From the middle of a held piece.
        assert_eq!(&b.read(2).await.unwrap()[..], b"llo ");
        append(&path, b"world");
        assert_eq!(&a.read(6).await.unwrap()[..], b"world");
        assert!(a.read(11).await.unwrap().is_empty());
        drop((a, b));
        assert_eq!(tails.len(), 0);
    }

    #[tokio::test]
    async fn a_follower_far_behind_reads_alone_and_what_is_held_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let tails = Tails::default();
        let tail = tails.follow(path.clone());
        let piece = vec![b'x'; CHUNK];
        let mut offset = 0u64;
        for _ in 0..(2 * HELD / CHUNK) {
            append(&path, &piece);
            offset += tail.read(offset).await.unwrap().len() as u64;
        }
        assert_eq!(offset, 2 * HELD as u64);
        {
            let held = tail.state.lock().await;
            assert!(held.bytes <= HELD, "{} bytes held", held.bytes);
            assert!(held.at(0).is_none(), "the oldest output was let go");
        }
        // From the start: read from the file, whole, and not kept.
        let old = tail.read(0).await.unwrap();
        assert_eq!(old.len(), CHUNK);
        assert!(tail.state.lock().await.at(0).is_none());
        // A piece ends where the file ended at the time of the read.
        append(&path, b"tail");
        assert_eq!(&tail.read(offset).await.unwrap()[..], b"tail");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_followers_at_any_offset_get_the_file_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let tails = Arc::new(Tails::default());
        // 3 MiB in pieces of uneven sizes, each byte telling its offset.
        let whole: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        let starts = [0u64, 0, 0, 1, 70_000, 1 << 20, 3 << 20];
        let readers: Vec<_> = starts
            .iter()
            .map(|&start| {
                let tail = tails.follow(path.clone());
                let len = whole.len() as u64;
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut offset = start;
                    while offset < len {
                        let bytes = tail.read(offset).await.unwrap();
                        if bytes.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        offset += bytes.len() as u64;
                        got.extend_from_slice(&bytes);
                    }
                    (start, got)
                })
            })
            .collect();
        let mut written = 0;
        let mut size = 1;
        while written < whole.len() {
            let end = (written + size).min(whole.len());
            append(&path, &whole[written..end]);
            written = end;
            size = size * 7 % 300_001 + 1;
            tokio::task::yield_now().await;
        }
        for reader in readers {
            // Bounded: a follower that waits for bytes it was given hangs.
            let (start, got) = tokio::time::timeout(Duration::from_secs(30), reader)
                .await
                .expect("a follower stopped getting the file's bytes")
                .unwrap();
            assert!(
                got == whole[start as usize..],
                "the follower from {start} got {} bytes, not the file's",
                got.len()
            );
        }
    }
}
