//! Reading the small files a config names (PEM certificates and keys,
//! secret files) without letting a wrong path hang or flood the master:
//! a FIFO would block `open` until a writer came (at start, before the
//! master serves anyone), a device or a huge file would be read whole.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest file of this kind the master reads (a certificate chain
/// of a few KiB, a secret of a line).
pub(super) const MAX_SMALL_FILE: u64 = 1 << 20;

/// The bytes of `path`, which must be a regular file of at most
/// [`MAX_SMALL_FILE`] bytes; the error says which rule it broke.
pub(super) fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a
    // writer; it changes nothing for a regular file's reads.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_SMALL_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than the {} KiB such a file may have",
                meta.len(),
                MAX_SMALL_FILE >> 10
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SMALL_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "grew past the limit while being read",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_directory_and_a_huge_file_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_small_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_small_file(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let huge = dir.path().join("huge");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(MAX_SMALL_FILE + 1)
            .unwrap();
        let e = read_small_file(&huge).unwrap_err();
        assert!(e.to_string().contains("more than the 1024 KiB"), "{e}");
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"secret\n").unwrap();
        assert_eq!(read_small_file(&ok).unwrap(), b"secret\n");
    }
}
