//! Binding the master's Unix sockets, owner-only, replacing a stale socket
//! left by a crash but never a live master's.
//!
//! The caller holds the state dir's lock file (see `lock`), so no other
//! master starting on the same state dir can race us between the probe and
//! the unlink below.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use interprocess::local_socket::tokio::{Listener, Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt as _;

/// Bind `path` with `mode` (0600 unless more users were let in). An
/// existing socket file that nobody answers on is removed first; one that
/// answers means another master owns it.
pub async fn bind(path: &Path, mode: u32) -> io::Result<Listener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let name = path.to_fs_name::<GenericFilePath>()?;
            match Stream::connect(name).await {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "socket {} is in use by another running master",
                            path.display()
                        ),
                    ));
                }
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(mode)
        .reclaim_name(true)
        .create_tokio()?;
    // The mode set before bind() is narrowed by the umask; set it again
    // so a socket opened to more users (0660/0666) really is. It only ever
    // widens from what bind() made, so there is no window of exposure.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}
