//! A step's output on disk, between the pipe and the link.
//!
//! The pipe reader appends to `<dir>/.spool/<build>-<step>.out`; the step's
//! sender reads it back from any offset. Disk rather than memory, so that a
//! worker cut off from its master keeps every byte (up to a cap) for as long
//! as the master takes to come back, and can resend from whatever offset the
//! new master says it has. The cap keeps a runaway step from filling the
//! disk: past it the output is dropped and one line says so.

use std::io::{ErrorKind, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use crate::protocol::{BuildId, StepEnd, StepIndex};

/// Default cap on one step's spooled output: 1 GiB.
pub const DEFAULT_SPOOL_LIMIT: u64 = 1 << 30;

/// The spool directory's name under the work dir; the runner refuses a
/// builder of that name, so step dirs and spools never mix.
pub(crate) const SPOOL_DIR: &str = ".spool";

/// The spool directory of the worker whose work dir is `dir`.
pub(crate) fn spool_dir(dir: &Path) -> PathBuf {
    dir.join(SPOOL_DIR)
}

/// Where the output of (`build`, `step`) is spooled.
pub(crate) fn spool_path(dir: &Path, build: BuildId, step: StepIndex) -> PathBuf {
    spool_dir(dir).join(format!("{build}-{step}.out"))
}

/// Create the spool directory (mode 0700: output may hold secrets) and
/// delete what an earlier worker process left there: a spool belongs to a
/// step of a live worker, and a new process holds no step yet.
pub(crate) fn prepare_spool_dir(dir: &Path) -> std::io::Result<PathBuf> {
    let spool = spool_dir(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spool)?;
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(&spool)?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "out") {
            debug!("removing a stale spool file {}", path.display());
            if let Err(e) = std::fs::remove_file(&path) {
                warn!("cannot remove the stale spool file {}: {e}", path.display());
            }
        }
    }
    Ok(spool)
}

/// What a step's sender may send: the bytes in the spool so far, and the
/// step's end once no more bytes will come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bytes in the spool file.
    pub(crate) written: u64,
    /// Set once the process has ended and its output is all spooled.
    pub(crate) end: Option<StepEnd>,
    /// Set when a spool write failed (disk full, I/O error): output from
    /// `written` on is lost, and the step ends `output_lost`.
    pub(crate) lost: Option<String>,
}

/// Words for a failed spool write, naming the cause.
pub(crate) fn write_failure(e: &std::io::Error, path: &Path) -> String {
    let cause = if e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        "disk full"
    } else if e.kind() == ErrorKind::QuotaExceeded {
        "disk quota exceeded"
    } else {
        "I/O error"
    };
    format!("{cause} writing the spool {} ({e})", path.display())
}

/// The line appended once when the output goes past the cap.
pub(crate) fn truncation_notice(limit: u64) -> String {
    format!("\n[bbworker: output truncated at {limit} bytes]\n")
}

/// The line appended once when more output waits to be sent than
/// `--spool-limit` allows (the master absent or not keeping up).
pub(crate) fn backlog_notice(limit: u64) -> String {
    format!(
        "\n[bbworker: output dropped: more than {limit} bytes waited to be sent (--spool-limit)]\n"
    )
}

/// How long the pipe reader waits for the master to take output before
/// dropping what does not fit in `--spool-limit`: a connected master that
/// reads keeps the backlog small, so this only runs out when it is gone
/// or stuck.
const BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Free the spool's disk below what the master kept in steps of this much.
const PUNCH_STEP: u64 = 1 << 20;

/// How far the master has the step's output on its disk (from `Resume`
/// and `OutputKept`): the spool below it is never read again.
pub(crate) type Kept = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Appends a step's output to its spool file, up to the caps. Blocking: it
/// lives on the pipe reader's thread.
pub(crate) struct SpoolWriter {
    file: std::fs::File,
    path: PathBuf,
    written: u64,
    /// `--spool-limit`: most bytes waiting to be sent (past `kept`).
    limit: u64,
    /// The master's `max_log_size`: most bytes in all.
    total: u64,
    /// What the master has kept.
    kept: Kept,
    /// The spool's disk is freed below this.
    punched: u64,
    /// The cap was reached and the notice written (or attempted).
    truncated: bool,
    /// A write failed (disk full...), and why: nothing more is written.
    failed: Option<String>,
}

impl SpoolWriter {
    /// Create (or empty) the spool file at `path`, owner-only, keeping at
    /// most `limit` bytes that wait to be sent.
    pub(crate) fn create(path: &Path, limit: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        Ok(SpoolWriter {
            file,
            path: path.to_path_buf(),
            written: 0,
            limit,
            total: u64::MAX,
            kept: Kept::default(),
            punched: 0,
            truncated: false,
            failed: None,
        })
    }

    /// Keep at most `total` bytes in all (the master would drop the rest).
    pub(crate) fn with_total(mut self, total: u64) -> Self {
        self.total = total;
        self
    }

    /// Count bytes the master has kept (`kept`) as sent: they no longer
    /// count against the limit, and their disk is freed.
    pub(crate) fn with_kept(mut self, kept: Kept) -> Self {
        self.kept = kept;
        self
    }

    /// Bytes the master has kept, at most what was written.
    fn kept(&self) -> u64 {
        self.kept
            .load(std::sync::atomic::Ordering::SeqCst)
            .min(self.written)
    }

    /// Room for output waiting to be sent, waiting (bounded) for the
    /// master to take some when there is none.
    fn backlog_room(&self, want: u64) -> u64 {
        let deadline = std::time::Instant::now() + BACKLOG_WAIT;
        loop {
            let room = self.limit.saturating_sub(self.written - self.kept());
            if room >= want || std::time::Instant::now() >= deadline {
                return room;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Give back the disk under output the master has kept.
    fn punch(&mut self) {
        let kept = self.kept() & !4095;
        if kept < self.punched + PUNCH_STEP {
            return;
        }
        use nix::fcntl::FallocateFlags as F;
        let (from, len) = (self.punched, kept - self.punched);
        match nix::fcntl::fallocate(
            &self.file,
            F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
            from as i64,
            len as i64,
        ) {
            Ok(()) => self.punched = kept,
            Err(e) => {
                debug!("cannot free the sent part of {}: {e}", self.path.display());
                // Not supported here: do not try again.
                self.punched = u64::MAX / 2;
            }
        }
    }

    /// Why output was lost, once a write failed.
    pub(crate) fn lost(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Append `data`, keeping to the caps; returns the bytes now in the
    /// file. Past a cap the notice is appended once and the rest dropped;
    /// after a write error everything is dropped (the step goes on
    /// regardless, and ends `output_lost`).
    pub(crate) fn append(&mut self, data: &[u8]) -> u64 {
        if self.truncated || self.failed.is_some() {
            return self.written;
        }
        self.punch();
        let len = data.len() as u64;
        let total_room = self.total.saturating_sub(self.written);
        let backlog_room = self.backlog_room(len.min(total_room));
        let take = len.min(total_room).min(backlog_room) as usize;
        if !self.write(&data[..take]) {
            return self.written;
        }
        if take < data.len() {
            self.truncated = true;
            let notice = if (take as u64) == total_room {
                warn!(
                    "step output past {} bytes; dropping the rest ({})",
                    self.total,
                    self.path.display()
                );
                truncation_notice(self.total)
            } else {
                warn!(
                    "more than {} bytes of step output wait to be sent; dropping the rest ({})",
                    self.limit,
                    self.path.display()
                );
                backlog_notice(self.limit)
            };
            self.write(notice.as_bytes());
        }
        self.written
    }

    /// Write all of `buf`, counting exactly what reached the file; false
    /// (and no more writes) on an error.
    fn write(&mut self, mut buf: &[u8]) -> bool {
        while !buf.is_empty() {
            match self.file.write(buf) {
                Ok(0) => {
                    return self.fail(&std::io::Error::from(ErrorKind::WriteZero));
                }
                Ok(n) => {
                    self.written += n as u64;
                    buf = &buf[n..];
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.fail(&e),
            }
        }
        true
    }

    fn fail(&mut self, e: &std::io::Error) -> bool {
        warn!(
            "cannot write the step's output to {}: {e}; dropping the rest (the step will end output_lost)",
            self.path.display()
        );
        self.failed = Some(write_failure(e, &self.path));
        false
    }
}

/// Reads a spool back from any offset, for the sender.
pub(crate) struct SpoolReader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
}

impl SpoolReader {
    /// A reader of the spool at `path`; the file is opened on first use
    /// (a step that never spawned has none).
    pub(crate) fn new(path: PathBuf) -> Self {
        SpoolReader { path, file: None }
    }

    /// Up to `max` bytes from `offset`; fewer (never zero) if the read is
    /// short. An empty result means the file ends before `offset`.
    pub(crate) async fn read_at(&mut self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tokio::fs::File::open(&self.path).await?),
        };
        file.seek(SeekFrom::Start(offset)).await?;
        let mut buf = vec![0u8; max];
        let n = loop {
            match file.read(&mut buf).await {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_drops_the_rest_and_says_so_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.out");
        let mut w = SpoolWriter::create(&path, 1 << 20)
            .expect("create")
            .with_total(10);
        assert_eq!(w.append(b"abcdef"), 6);
        let notice = truncation_notice(10);
        let capped = 10 + notice.len() as u64;
        assert_eq!(w.append(b"ghijkl"), capped);
        assert_eq!(w.append(b"more"), capped);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("abcdefghij{notice}"));
        assert_eq!(notice, "\n[bbworker: output truncated at 10 bytes]\n");
    }

    #[test]
    fn output_exactly_at_the_cap_is_not_truncated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.out");
        let mut w = SpoolWriter::create(&path, 4).expect("create").with_total(4);
        assert_eq!(w.append(b"abcd"), 4);
        assert_eq!(std::fs::read(&path).expect("read"), b"abcd");
    }

    #[test]
    fn the_limit_bounds_what_waits_not_what_was_taken() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.out");
        let kept = Kept::default();
        let mut w = SpoolWriter::create(&path, 1 << 20)
            .expect("create")
            .with_kept(kept.clone());
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..128 {
            let written = w.append(&chunk);
            // The master takes everything as it comes.
            kept.store(written, std::sync::atomic::Ordering::SeqCst);
        }
        assert_eq!(
            w.written,
            8 << 20,
            "output was dropped while the master kept up"
        );
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), 8 << 20);
        // Sent output's disk is given back (where the file system can).
        if w.punched > 0 && w.punched < u64::MAX / 2 {
            assert!(meta.blocks() * 512 <= 3 << 20, "{} blocks", meta.blocks());
        }
        // The master stops taking: at most the limit more, then the notice.
        let before = w.written;
        let started = std::time::Instant::now();
        for _ in 0..20 {
            w.append(&chunk);
        }
        assert!(started.elapsed() < BACKLOG_WAIT * 2);
        let notice = backlog_notice(1 << 20);
        assert_eq!(w.written, before + (1 << 20) + notice.len() as u64);
    }

    #[test]
    fn spool_dir_is_private_and_swept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stale = spool_path(dir.path(), 3, 1);
        std::fs::create_dir_all(spool_dir(dir.path())).expect("mkdir");
        std::fs::write(&stale, b"old").expect("write");
        let spool = prepare_spool_dir(dir.path()).expect("prepare");
        assert_eq!(
            std::fs::metadata(&spool)
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(!stale.exists());
        assert!(stale.ends_with(".spool/3-1.out"));
    }

    #[tokio::test]
    async fn reader_reads_from_any_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.out");
        let mut w = SpoolWriter::create(&path, 100).expect("create");
        w.append(b"hello world");
        let mut r = SpoolReader::new(path);
        assert_eq!(r.read_at(6, 64).await.expect("read"), b"world");
        assert_eq!(r.read_at(0, 5).await.expect("read"), b"hello");
        assert!(r.read_at(11, 5).await.expect("read").is_empty());
    }
}
