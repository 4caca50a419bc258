//! Reading a config file for a reload, off the master loop and bounded in
//! time.
//!
//! A config (or one of its `secret_file`s) may be a FIFO nobody writes, or
//! sit on a hung network mount: a plain read would block whatever thread
//! makes it. The read runs on a thread of its own, never the master loop
//! (which would stop answering, recording step ends and stopping) nor the
//! runtime's blocking pool (which shutdown waits for); a read not done
//! within [`READ_TIMEOUT`] refuses the reload, and the thread is left to
//! finish or die with the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{self, Config};

/// How long a reload may take to read its config and secret files.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The config at `path` (the embedded default for `None`), or why not, in
/// words: invalid, unreadable, or not read within `timeout`.
pub async fn load(path: Option<&Path>, timeout: Duration) -> Result<Config, String> {
    let Some(path) = path else {
        return Ok(config::embedded_default());
    };
    let (tx, rx) = oneshot::channel();
    let owned: PathBuf = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("config-read".into())
        .spawn(move || {
            let _ = tx.send(config::load_file(&owned).map_err(|e| e.to_string()));
        });
    if let Err(e) = spawned {
        return Err(format!(
            "cannot start a thread to read {}: {e}",
            path.display()
        ));
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(_)) => Err(format!(
            "reading {} failed (the reader thread died)",
            path.display()
        )),
        Err(_) => Err(format!(
            "{} (or a file it names) could not be read within {} s (a FIFO nobody writes, or a hung mount?); the reload is refused and nothing changed",
            path.display(),
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fifo_is_refused_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        let err = load(Some(&fifo), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.contains("could not be read within"), "{err}");
    }

    #[tokio::test]
    async fn a_plain_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.toml");
        std::fs::write(&file, "").unwrap();
        assert!(load(Some(&file), READ_TIMEOUT).await.is_ok());
        let missing = load(Some(&dir.path().join("none.toml")), READ_TIMEOUT).await;
        assert!(missing.is_err());
    }
}
