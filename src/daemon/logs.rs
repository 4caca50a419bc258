//! Step output on disk: `<state_dir>/logs/<build>/<step>.log`.
//!
//! Output is appended as it streams in and never held whole in memory;
//! readers (`bbctl log`, followers) read the files by offset.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::{BuildId, StepIndex};

/// The log directory of a state dir.
pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The file holding one step's output.
pub fn step_log_path(logs: &Path, build: BuildId, step: StepIndex) -> PathBuf {
    logs.join(build.to_string()).join(format!("{step}.log"))
}

/// Where a state dir keeps its space reserve: a file of
/// [`RESERVE_SIZE`] bytes, given up when a log write finds the disk full so
/// that the marker line and the build's end can still be written.
pub fn reserve_path(logs: &Path) -> PathBuf {
    logs.parent().unwrap_or(logs).join("space.reserve")
}

/// Size of the space reserve: room for the marker lines of the logs open
/// (a page each) and for the store's write-ahead log to reach its full
/// size (about 100 pages) and the records of the builds ending.
pub const RESERVE_SIZE: usize = 2 * 1024 * 1024;

/// Free space the reserve leaves when it is made: room for the writes
/// going on meanwhile.
const RESERVE_MARGIN: u64 = 512 * 1024;

/// Create the space reserve if it is missing (best effort: a disk with no
/// room for it gets none, and the next log to open tries again).
pub fn ensure_reserve(logs: &Path) {
    let path = reserve_path(logs);
    if path.exists() {
        return;
    }
    // Only with room to spare: writing it into the last free bytes would
    // take them from the store and the marker lines.
    let free = nix::sys::statvfs::statvfs(logs.parent().unwrap_or(logs))
        .map(|v| v.blocks_available() * v.fragment_size())
        .unwrap_or(0);
    if free < RESERVE_SIZE as u64 + RESERVE_MARGIN {
        return;
    }
    let tmp = path.with_extension("reserve.tmp");
    let made = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&vec![0u8; RESERVE_SIZE])
                .and_then(|()| f.sync_all())
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("cannot create the space reserve {}: {e}", path.display());
    }
}

/// Give up the space reserve; true if there was one. From then on, until
/// the reserve can be made again (space came back), log writes are refused
/// as "disk full": the room it freed is for the store's records and the
/// logs' marker lines, not for more output.
pub fn release_reserve(logs: &Path) -> bool {
    RESERVE_GONE_AT.store(crate::paths::now_ms().max(1), Ordering::SeqCst);
    std::fs::remove_file(reserve_path(logs)).is_ok()
}

/// When the reserve was given up (ms), or 0 while it is in place.
static RESERVE_GONE_AT: AtomicU64 = AtomicU64::new(0);

/// Log writes stop when less than this is free: the last bytes of the
/// disk are for the store, whatever the order in which writers hit it.
const LOW_WATER: u64 = 512 * 1024;

/// `Err` (disk full) when the state dir's disk has less than [`LOW_WATER`]
/// free; unknown counts as enough (the write itself will tell).
fn room_left(logs: &Path) -> io::Result<()> {
    let Ok(v) = nix::sys::statvfs::statvfs(logs) else {
        return Ok(());
    };
    let free = v.blocks_available() * v.fragment_size();
    if free < LOW_WATER {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the state dir's disk is full (less than {} KiB free)",
                LOW_WATER / 1024
            ),
        ));
    }
    Ok(())
}

/// `Err` while the reserve is given up and cannot be made again (tried at
/// most once a second).
fn space_back(logs: &Path) -> io::Result<()> {
    let gone = RESERVE_GONE_AT.load(Ordering::SeqCst);
    if gone == 0 {
        return Ok(());
    }
    let now = crate::paths::now_ms();
    if now.saturating_sub(gone) >= 1000 {
        RESERVE_GONE_AT.store(now, Ordering::SeqCst);
        ensure_reserve(logs);
    }
    if reserve_path(logs).exists() {
        RESERVE_GONE_AT.store(0, Ordering::SeqCst);
        tracing::info!(
            "space came back under {}: writing logs again",
            logs.display()
        );
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::StorageFull,
        "the state dir's disk is full (its space reserve is in use)",
    ))
}

/// Whether `e` says the disk is full.
fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Words for a failed output write: "disk full" or "I/O error", then the
/// operating system's message.
pub fn write_failure(e: &io::Error) -> String {
    if is_disk_full(e) {
        format!("disk full ({e})")
    } else if e.kind() == io::ErrorKind::QuotaExceeded {
        format!("disk quota exceeded ({e})")
    } else {
        format!("I/O error ({e})")
    }
}

/// The line a log gets where its output was lost.
pub fn lost_marker(reason: &str) -> String {
    format!("\n[bbmaster: output lost from here: {reason}]\n")
}

/// An open step log being appended to.
pub struct StepLogWriter {
    file: File,
    path: PathBuf,
    written: u64,
    /// `max_log_size`: output past it is dropped, and the log says so once.
    cap: u64,
    truncated: bool,
    /// Why output was lost (a write failed): nothing more is written, and
    /// the step must not end as a success.
    lost: Option<String>,
    /// The lost marker is in the file.
    marked: bool,
}

impl StepLogWriter {
    /// Open (creating it and its directory) the log of one step for
    /// appending, keeping at most `cap` bytes of output. The log of a
    /// resumed step may exist: its length is what the master has.
    pub fn open(logs: &Path, build: BuildId, step: StepIndex, cap: u64) -> io::Result<Self> {
        Self::open_with(logs, build, step, cap, false)
    }

    /// Create the log of a step just started: a file that exists already
    /// belongs to another build (a reused id) and is never appended to.
    pub fn create_new(logs: &Path, build: BuildId, step: StepIndex, cap: u64) -> io::Result<Self> {
        Self::open_with(logs, build, step, cap, true)
    }

    fn open_with(
        logs: &Path,
        build: BuildId,
        step: StepIndex,
        cap: u64,
        new: bool,
    ) -> io::Result<Self> {
        let path = step_log_path(logs, build, step);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.append(true);
        if new {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the log {} of this new build exists already (a build id used before); not appending to it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
        let written = file.metadata()?.len();
        Ok(StepLogWriter {
            file,
            path,
            written,
            cap,
            // The marker goes past the cap, so a full log is known as such.
            truncated: written > cap,
            lost: None,
            marked: false,
        })
    }

    /// True once output was dropped for `max_log_size`.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Why output was lost, if it was: a write failed.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Add a chunk of output that starts at byte `offset` of the step's
    /// output. Bytes the file already has are skipped, so a worker that
    /// resends after a reconnect never doubles the log; a chunk that would
    /// leave a gap is refused. A failed write (disk full, I/O error) cuts
    /// the file back to the bytes counted, marks the log and drops the rest
    /// of the output: see [`StepLogWriter::lost`].
    pub fn append_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.lost.is_some() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "output offset out of range")
        })?;
        if end <= self.written || self.truncated {
            // Already kept, or past max_log_size: dropped, never a gap.
            return Ok(());
        }
        if offset > self.written {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "output at offset {offset} would leave a gap after byte {}",
                    self.written
                ),
            ));
        }
        if let Err(e) = space_back(&self.logs()).and_then(|()| room_left(&self.logs())) {
            return Err(self.failed(&e));
        }
        let skip = (self.written - offset) as usize;
        let fresh = &data[skip..];
        let room = self.cap.saturating_sub(self.written) as usize;
        if fresh.len() <= room {
            if let Err(e) = self.file.write_all(fresh) {
                return Err(self.failed(&e));
            }
            self.written = end;
            return Ok(());
        }
        let marker = format!(
            "\n[bbmaster: output truncated at {} bytes (max_log_size)]\n",
            self.cap
        );
        let cut = self
            .file
            .write_all(&fresh[..room])
            .and_then(|()| self.file.write_all(marker.as_bytes()));
        if let Err(e) = cut {
            return Err(self.failed(&e));
        }
        self.written = self.cap + marker.len() as u64;
        self.truncated = true;
        Ok(())
    }

    /// A write failed: put the file back to the bytes counted (a partial
    /// write must not leave the count behind the file), remember why, and
    /// mark the log. Returns the error to report.
    fn failed(&mut self, e: &io::Error) -> io::Error {
        let reason = write_failure(e);
        if let Err(cut) = self.file.set_len(self.written) {
            tracing::warn!(
                "cannot cut {} back after a failed write: {cut}",
                self.path.display()
            );
        }
        if is_disk_full(e) && RESERVE_GONE_AT.load(Ordering::SeqCst) == 0 {
            // Room for this build's end in the store, and the marker.
            release_reserve(&self.logs());
            tracing::warn!(
                "the disk under {} is full: gave up the space reserve; logs are not written until space comes back",
                self.logs().display()
            );
        }
        self.lose(&reason);
        io::Error::new(e.kind(), format!("output lost: {reason}"))
    }

    /// The logs dir this log is in.
    fn logs(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Record that output from here on is lost, for `reason`, and put the
    /// marker line in the log (once). On a full disk the space reserve is
    /// given up first; failing that, the log is cut back just enough for
    /// the marker, which must be there.
    pub fn lose(&mut self, reason: &str) {
        if self.lost.is_none() {
            self.lost = Some(reason.to_string());
        }
        if self.marked {
            return;
        }
        let marker = lost_marker(reason);
        let logs = self.logs();
        let mut tries = 0;
        loop {
            match self.file.write_all(marker.as_bytes()) {
                Ok(()) => {
                    self.written += marker.len() as u64;
                    self.marked = true;
                    return;
                }
                Err(e) => {
                    let _ = self.file.set_len(self.written);
                    tries += 1;
                    if tries == 1 && release_reserve(&logs) {
                        tracing::warn!(
                            "the disk under {} is full: gave up the space reserve",
                            logs.display()
                        );
                        continue;
                    }
                    if tries <= 2 {
                        // Room for the marker out of the output's last bytes.
                        self.written = self.written.saturating_sub(2 * marker.len() as u64);
                        let _ = self.file.set_len(self.written);
                        continue;
                    }
                    tracing::error!(
                        "cannot mark the log {} as cut short: {e}",
                        self.path.display()
                    );
                    return;
                }
            }
        }
    }

    /// Bytes in the file so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

/// Read a step's output from `offset` to the current end, at most `max`
/// bytes. A missing file reads as empty: a step that printed nothing.
pub fn read_from(path: &Path, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    match open_log(path)? {
        Some(file) => read_at(&file, offset, max),
        None => Ok(Vec::new()),
    }
}

/// Open a step's log for reading: `None` if it does not exist (yet). Only
/// a regular file is a log: anything else put in its place (a FIFO, a
/// device) is an error, and the open itself never blocks (`O_NONBLOCK`:
/// opening a FIFO for reading would wait for a writer).
pub fn open_log(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(Some(file))
}

/// Read from an open log `file` at `offset` to its current end, at most
/// `max` bytes, in one buffer of the size the file says is there (no
/// regrowth, one `pread` in the usual case). Bytes appended meanwhile are
/// left for the next read.
pub fn read_at(file: &File, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let want = usize::try_from(len.saturating_sub(offset)).map_or(max, |n| n.min(max));
    let mut buf = vec![0; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The size of a step's log, 0 if it has none.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resent_output_is_neither_doubled_nor_gapped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StepLogWriter::open(dir.path(), 1, 0, 1 << 20).unwrap();
        w.append_at(0, b"hello ").unwrap();
        w.append_at(3, b"lo world").unwrap(); // overlaps: only " world" is new
        w.append_at(0, b"hel").unwrap(); // wholly old
        assert!(w.append_at(20, b"gap").is_err());
        let text = read_from(&step_log_path(dir.path(), 1, 0), 0, 100).unwrap();
        assert_eq!(text, b"hello world");
        assert_eq!(w.len(), 11);
    }

    #[test]
    fn a_new_build_never_appends_to_an_existing_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = StepLogWriter::open(dir.path(), 4, 0, 1 << 20).unwrap();
        old.append_at(0, b"old 4\n").unwrap();
        let err = StepLogWriter::create_new(dir.path(), 4, 0, 1 << 20)
            .err()
            .expect("a new build's log opened over an existing one");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("exists already"), "{err}");
        let text = read_from(&step_log_path(dir.path(), 4, 0), 0, 100).unwrap();
        assert_eq!(text, b"old 4\n");
        assert!(StepLogWriter::create_new(dir.path(), 5, 0, 1 << 20).is_ok());
    }

    #[test]
    fn a_lost_log_is_marked_once_and_takes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StepLogWriter::create_new(dir.path(), 6, 0, 1 << 20).unwrap();
        w.append_at(0, b"abc").unwrap();
        w.lose("disk full (test)");
        w.lose("again");
        w.append_at(3, b"def").unwrap();
        assert_eq!(w.lost(), Some("disk full (test)"));
        let text = read_from(&step_log_path(dir.path(), 6, 0), 0, 1000).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!("abc{}", lost_marker("disk full (test)"))
        );
        assert_eq!(w.len(), log_len(&step_log_path(dir.path(), 6, 0)));
    }

    #[test]
    fn a_flood_is_cut_at_the_cap_and_marked_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StepLogWriter::open(dir.path(), 2, 0, 10).unwrap();
        w.append_at(0, b"0123456").unwrap();
        w.append_at(7, b"789abcdef").unwrap();
        assert!(w.is_truncated());
        w.append_at(16, b"more and more").unwrap();
        let text = read_from(&step_log_path(dir.path(), 2, 0), 0, 1000).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "0123456789\n[bbmaster: output truncated at 10 bytes (max_log_size)]\n"
        );
        // Reopened (a worker resumes after a reconnect): still full, no second marker.
        let mut again = StepLogWriter::open(dir.path(), 2, 0, 10).unwrap();
        assert!(again.is_truncated());
        again.append_at(0, b"0123456789xyz").unwrap();
        assert_eq!(
            log_len(&step_log_path(dir.path(), 2, 0)) as usize,
            text.len()
        );
    }

    #[test]
    fn a_fifo_in_place_of_a_log_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = step_log_path(dir.path(), 3, 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // On a thread, bounded: the failure this guards against is a hang.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_from(&path, 0, 100)));
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO hung")
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(open_log(&dir.path().join("missing")).unwrap().is_none());
    }
}
