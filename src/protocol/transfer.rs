//! What both ends of a file transfer share: chunk and window sizes, the
//! flow-control window, the receiving side's bookkeeping, artifact name
//! rules, the glob matcher and the "stays inside its base dir" check.
//!
//! Everything here but [`resolve_inside`] is pure, so the rules are tested
//! without files; the file I/O lives in `daemon::transfer` (master) and
//! `worker::transfer` (worker). See `docs/transfer.md`.

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Largest `data` of one `FileChunk`. Below 64 KiB so that a chunk with
/// its frame overhead fits the smallest allowed `max_frame` (64 KiB).
pub const FILE_CHUNK: usize = 60 << 10;

/// Most bytes a sender keeps unacknowledged: the receiver's memory and the
/// socket buffers never hold more of a file than this.
pub const WINDOW: u64 = 1 << 20;

/// The receiver acknowledges after this many bytes more (and at the end),
/// so acks cost one small frame per quarter window.
pub const ACK_EVERY: u64 = WINDOW / 4;

/// Longest artifact name (a relative path), in bytes.
pub const MAX_NAME: usize = 1024;

/// The sending side's flow control: bytes sent versus bytes the receiver
/// said it has written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    sent: u64,
    acked: u64,
}

impl Window {
    /// A window for a new file.
    pub fn new() -> Self {
        Self::default()
    }

    /// May another chunk go out now?
    pub fn has_room(&self) -> bool {
        self.sent - self.acked < WINDOW
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Count `n` more bytes as sent.
    pub fn on_sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// The receiver says it has `received` bytes. Acks never go back and
    /// never run ahead of what was sent.
    pub fn on_ack(&mut self, received: u64) -> Result<(), String> {
        if received > self.sent {
            return Err(format!(
                "acknowledged {received} bytes, but only {} were sent",
                self.sent
            ));
        }
        self.acked = self.acked.max(received);
        Ok(())
    }
}

/// The receiving side's bookkeeping for one file: in-order chunks, no more
/// than announced, no more than the limit; the hash of what came.
pub struct Incoming {
    /// The file's announced size.
    pub size: u64,
    received: u64,
    acked: u64,
    hasher: Sha256,
}

impl Incoming {
    /// A file announced with `size` bytes; refused at once if that is over
    /// `max_size`.
    pub fn begin(size: u64, max_size: Option<u64>) -> Result<Self, String> {
        if let Some(max) = max_size
            && size > max
        {
            return Err(format!(
                "the file is {size} bytes, more than max_size ({max} bytes)"
            ));
        }
        Ok(Incoming {
            size,
            received: 0,
            acked: 0,
            hasher: Sha256::new(),
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Check a chunk before it is written: it must start where the last
    /// one ended and not go past the announced size (which is at most
    /// `max_size`).
    pub fn check_chunk(&self, offset: u64, len: usize) -> Result<(), String> {
        if offset != self.received {
            return Err(format!(
                "chunk at offset {offset}, expected {}",
                self.received
            ));
        }
        if self.received + len as u64 > self.size {
            return Err(format!(
                "more data than the {} bytes announced (over max_size or a file that grew)",
                self.size
            ));
        }
        Ok(())
    }

    /// Count a written chunk; `Some(received)` when an ack is due. The
    /// whole size is never acked here: that ack means "stored", and is
    /// sent only once the file is verified and in place.
    pub fn on_written(&mut self, data: &[u8]) -> Option<u64> {
        self.hasher.update(data);
        self.received += data.len() as u64;
        if self.received < self.size && self.received - self.acked >= ACK_EVERY {
            self.acked = self.received;
            Some(self.received)
        } else {
            None
        }
    }

    /// At the end: the file must be complete and match `sha256`.
    pub fn finish(self, sha256: &str) -> Result<String, String> {
        if self.received != self.size {
            return Err(format!(
                "the file ended after {} of {} bytes",
                self.received, self.size
            ));
        }
        let ours = hex(&self.hasher.finalize());
        if !ours.eq_ignore_ascii_case(sha256) {
            return Err(format!(
                "checksum mismatch: sender says sha256 {sha256}, received data has {ours}"
            ));
        }
        Ok(ours)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The SHA-256 of `data`, in hex (tests and small files).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Check an artifact name a worker sent: a relative path of plain
/// components, none hidden by our temp prefix.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("artifact name must be 1 to {MAX_NAME} bytes long"));
    }
    if name.chars().any(crate::untrusted::is_unsafe) {
        // A newline forges lines in the master's log, an escape sequence
        // acts on a terminal, a bidi override disguises the name.
        return Err(format!(
            "artifact name `{}` contains a control character or a bidirectional override",
            crate::untrusted::Escaped(name)
        ));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err(format!(
            "artifact name {name:?} contains a NUL or a backslash"
        ));
    }
    if name.starts_with('/') {
        return Err(format!("artifact name {name:?} is absolute"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "artifact name {name:?} has an empty, `.` or `..` component"
            ));
        }
        if part.starts_with(PARTIAL_PREFIX) {
            return Err(format!(
                "artifact name {name:?} uses the reserved prefix {PARTIAL_PREFIX}"
            ));
        }
    }
    Ok(())
}

/// Temp files of transfers start with this; a master deletes them at start.
pub const PARTIAL_PREFIX: &str = ".partial-";

/// Does one path component `name` match the glob component `pattern`?
/// `*` matches any run of characters, `?` one character; a leading `.`
/// is matched only by a pattern that starts with `.` (as in a shell).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Is this path component a glob (holds `*` or `?`)?
pub fn is_glob(component: &str) -> bool {
    component.contains(['*', '?'])
}

/// `base` joined with `rel`, made canonical, and checked to stay inside
/// `base` (itself canonical) whatever symlinks lie on the way. The file
/// must exist. `what` names the base in the error ("the work dir").
pub fn resolve_inside(base: &Path, rel: &Path, what: &str) -> Result<PathBuf, String> {
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{} must be a relative path inside {what}",
            rel.display()
        ));
    }
    let path = base.join(rel);
    let real = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !real.starts_with(base) {
        return Err(format!(
            "{} resolves to {}, outside {what} (a symlink pointing out?)",
            rel.display(),
            real.display()
        ));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_at_most_a_mebibyte() {
        let mut w = Window::new();
        let mut chunks = 0;
        while w.has_room() {
            w.on_sent(FILE_CHUNK as u64);
            chunks += 1;
        }
        assert!(w.sent() >= WINDOW && w.sent() < WINDOW + FILE_CHUNK as u64);
        assert_eq!(chunks, WINDOW.div_ceil(FILE_CHUNK as u64));
        w.on_ack(ACK_EVERY).unwrap();
        assert!(w.has_room());
        // Acks never go back, nor beyond what was sent.
        w.on_ack(1).unwrap();
        assert!(w.has_room());
        assert!(w.on_ack(w.sent() + 1).is_err());
    }

    #[test]
    fn incoming_checks_order_size_and_hash() {
        let data = vec![7u8; 1000];
        let mut f = Incoming::begin(1000, Some(1000)).unwrap();
        assert!(f.check_chunk(1, 10).is_err(), "a gap");
        f.check_chunk(0, 600).unwrap();
        assert_eq!(f.on_written(&data[..600]), None);
        assert!(f.check_chunk(600, 401).is_err(), "past the announced size");
        f.check_chunk(600, 400).unwrap();
        assert_eq!(
            f.on_written(&data[600..]),
            None,
            "the end is acked once stored"
        );
        assert!(
            Incoming::begin(1000, Some(1000))
                .unwrap()
                .finish(&sha256_hex(&data))
                .is_err(),
            "incomplete"
        );
        assert_eq!(f.finish(&sha256_hex(&data)).unwrap(), sha256_hex(&data));
        let mut g = Incoming::begin(3, None).unwrap();
        g.on_written(b"abc");
        assert!(
            g.finish(&sha256_hex(b"abd"))
                .unwrap_err()
                .contains("mismatch")
        );
        assert!(Incoming::begin(1001, Some(1000)).is_err(), "over max_size");
    }

    #[test]
    fn acks_come_every_quarter_window() {
        let mut f = Incoming::begin(WINDOW * 2, None).unwrap();
        let chunk = vec![0u8; FILE_CHUNK];
        let mut acks = 0;
        while f.received() < f.size {
            let n = (f.size - f.received()).min(FILE_CHUNK as u64) as usize;
            if f.on_written(&chunk[..n]).is_some() {
                acks += 1;
            }
        }
        assert!(
            (6..=7).contains(&acks),
            "{acks} acks: about every quarter window, not the end"
        );
    }

    #[test]
    fn empty_file_hash() {
        let f = Incoming::begin(0, Some(1)).unwrap();
        assert_eq!(
            f.finish("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap(),
            sha256_hex(b"")
        );
    }

    #[test]
    fn artifact_names() {
        assert!(check_artifact_name("a.tar.gz").is_ok());
        assert!(check_artifact_name("sub/b.bin").is_ok());
        for bad in [
            "",
            "/etc/x",
            "a/../b",
            "..",
            "./a",
            "a//b",
            ".partial-x",
            "a\\b",
            "a\nINFO forged",
            "\x1b]0;title\x07",
            "evil\u{202e}txt.exe",
            "tab\tname",
        ] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.tar.gz", "x.tar.gz"));
        assert!(!glob_match("*.tar.gz", "x.tar.gz.sig"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", "abc"));
        assert!(!glob_match("*", ".hidden"));
        assert!(glob_match(".*", ".hidden"));
        assert!(glob_match("*a*b*", "xxaybz"));
        assert!(!glob_match("*a*b", "xxaybz"));
        assert!(is_glob("*.bin") && !is_glob("out"));
    }

    #[test]
    fn resolve_inside_refuses_symlinks_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let base = base.canonicalize().unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(base.join("ok"), b"o").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), base.join("link")).unwrap();
        assert!(resolve_inside(&base, Path::new("ok"), "the base").is_ok());
        let e = resolve_inside(&base, Path::new("link"), "the base").unwrap_err();
        assert!(e.contains("outside the base"), "{e}");
        assert!(resolve_inside(&base, Path::new("../secret"), "the base").is_err());
    }
}
