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
}

impl StepLogWriter {
    /// Open (creating it and its directory) the log of one step for appending.
    pub fn open(logs: &Path, build: BuildId, step: StepIndex) -> io::Result<Self> {
        let path = step_log_path(logs, build, step);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(StepLogWriter { file, written })
    }

    /// Append a chunk of output.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
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
