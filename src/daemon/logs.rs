//! Step output on disk: `<state_dir>/logs/<build>/<step>.log`.
//!
//! Output is appended as it streams in and never held whole in memory;
//! readers (`bbctl log`, followers) read the files by offset.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::protocol::{BuildId, StepIndex};

/// The log directory of a state dir.
pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The file holding one step's output.
pub fn step_log_path(logs: &Path, build: BuildId, step: StepIndex) -> PathBuf {
    logs.join(build.to_string()).join(format!("{step}.log"))
}

/// An open step log being appended to.
pub struct StepLogWriter {
    file: File,
    written: u64,
    /// `max_log_size`: output past it is dropped, and the log says so once.
    cap: u64,
    truncated: bool,
}

impl StepLogWriter {
    /// Open (creating it and its directory) the log of one step for
    /// appending, keeping at most `cap` bytes of output.
    pub fn open(logs: &Path, build: BuildId, step: StepIndex, cap: u64) -> io::Result<Self> {
        let path = step_log_path(logs, build, step);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(StepLogWriter {
            file,
            written,
            cap,
            // The marker goes past the cap, so a full log is known as such.
            truncated: written > cap,
        })
    }

    /// True once output was dropped for `max_log_size`.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Add a chunk of output that starts at byte `offset` of the step's
    /// output. Bytes the file already has are skipped, so a worker that
    /// resends after a reconnect never doubles the log; a chunk that would
    /// leave a gap is refused.
    pub fn append_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "output offset out of range")
        })?;
        if end <= self.written {
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
        if self.truncated {
            return Ok(());
        }
        let skip = (self.written - offset) as usize;
        let fresh = &data[skip..];
        let room = self.cap.saturating_sub(self.written) as usize;
        if fresh.len() <= room {
            self.file.write_all(fresh)?;
            self.written = end;
            return Ok(());
        }
        self.file.write_all(&fresh[..room])?;
        let marker = format!(
            "\n[bbmaster: output truncated at {} bytes (max_log_size)]\n",
            self.cap
        );
        self.file.write_all(marker.as_bytes())?;
        self.written = self.cap + marker.len() as u64;
        self.truncated = true;
        Ok(())
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
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(max as u64).read_to_end(&mut buf)?;
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
}
