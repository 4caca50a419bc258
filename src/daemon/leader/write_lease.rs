//! How long this master may still write what the store's epoch fence
//! cannot guard: files on the shared storage (step logs, artifacts).
//!
//! A leader's database writes are fenced by its epoch; a file write is
//! not. A leader paused past its lease (SIGSTOP, a frozen VM) finds, when
//! it resumes, worker output waiting in its sockets, and its link tasks
//! may run before its lease thread notices the loss. Appended to a log the
//! new leader has carried on, those bytes would double it. So a link
//! writes only while [`WriteLease::valid`]: the lease thread moves the
//! deadline to one lease after each renewal was *sent* (earlier than the
//! database's own expiry, after which a standby may take over), and a
//! master on SQLite, alone on its state dir, has no deadline at all.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// No deadline (a master on SQLite).
const UNLIMITED: u64 = u64::MAX;

/// The deadline, shared by the lease thread and every worker link.
#[derive(Debug, Clone)]
pub struct WriteLease(Arc<AtomicU64>);

impl WriteLease {
    /// A master alone on its state: may always write.
    pub fn unlimited() -> Self {
        WriteLease(Arc::new(AtomicU64::new(UNLIMITED)))
    }

    /// A leader whose lease runs until `until`.
    pub fn until(until: Instant) -> Self {
        WriteLease(Arc::new(AtomicU64::new(micros(until))))
    }

    /// A renewal sent at `sent` succeeded: the lease runs until `until`.
    /// Never moves the deadline back (a late answer to an older renewal).
    pub fn extend(&self, until: Instant) {
        self.0.fetch_max(micros(until), Ordering::SeqCst);
    }

    /// The leadership is lost: no more writes.
    pub fn revoke(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// Whether files may be written now.
    pub fn valid(&self) -> bool {
        let until = self.0.load(Ordering::SeqCst);
        until == UNLIMITED || micros(Instant::now()) < until
    }
}

impl Default for WriteLease {
    fn default() -> Self {
        Self::unlimited()
    }
}

/// Microseconds from a process-wide origin (the first call), by the
/// monotonic clock; 1 at the least, as 0 means revoked.
fn micros(at: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let micros = at.saturating_duration_since(origin).as_micros();
    u64::try_from(micros).unwrap_or(UNLIMITED - 1).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn unlimited_is_always_valid_and_a_deadline_runs_out() {
        assert!(WriteLease::unlimited().valid());
        let now = Instant::now();
        assert!(WriteLease::until(now + Duration::from_secs(60)).valid());
        assert!(!WriteLease::until(now).valid());
        assert!(!WriteLease::until(now - Duration::from_millis(1)).valid());
    }

    #[test]
    fn extend_moves_forward_only_and_revoke_ends_it() {
        let now = Instant::now();
        let lease = WriteLease::until(now);
        assert!(!lease.valid());
        lease.extend(now + Duration::from_secs(60));
        assert!(lease.valid());
        lease.extend(now);
        assert!(lease.valid(), "an older renewal does not move it back");
        let shared = lease.clone();
        shared.revoke();
        assert!(!lease.valid(), "revoked for every holder");
    }
}
