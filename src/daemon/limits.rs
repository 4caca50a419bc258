//! The limits that keep the master alive and the doors shut, read from
//! `[master]` once at start (changing them takes a restart; `reload` says so).

use std::time::Duration;

use crate::config::MasterSettings;

/// Limits for connections and logs, shared by every connection task.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame before a peer's handshake is done.
    pub max_handshake_frame: usize,
    /// Largest frame after the handshake.
    pub max_frame: usize,
    /// Output kept per step.
    pub max_log_size: u64,
    /// Control connections at once.
    pub max_clients: u32,
    /// User ids besides the master's own allowed on the control socket.
    pub allowed_uids: Vec<u32>,
    /// A group allowed on the control socket.
    pub allowed_gid: Option<u32>,
    /// Ping interval on worker links.
    pub keepalive: Duration,
    /// Artifacts and transfer dirs (set by the master at start).
    pub dirs: crate::daemon::dirs::Dirs,
    /// Upload quotas, free-space floor and deadlines against a worker.
    pub worker: crate::config::WorkerLimits,
    /// Failed worker logins, slowed for the whole master.
    pub login_gate: std::sync::Arc<crate::daemon::login_gate::LoginGate>,
    /// The worker socket: a peer that descends from a worker of it is a
    /// build step, which may neither use the control socket nor pose as a
    /// worker (see [`crate::daemon::lineage`]).
    pub worker_socket: std::path::PathBuf,
}

/// How long a peer (worker or client) has to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker connections (of every listener) that have not authenticated
/// yet, at most: one more is closed at once, so a flood of connections
/// that never finish their handshake costs bounded memory and never
/// starves the control socket.
pub const MAX_UNAUTHENTICATED: usize = 256;

/// Largest frame a worker may send after its handshake, whatever
/// `max_frame` says: its biggest messages are output and file chunks of at
/// most 60 KiB (`CHUNK_SIZE`, `FILE_CHUNK`) plus a small envelope.
pub const MAX_WORKER_FRAME: usize = 128 << 10;

/// Bytes of frames a worker link reads ahead of the link task: a worker
/// that floods us while we are busy costs at most this much memory.
pub const WORKER_QUEUE_BYTES: usize = 1 << 20;

/// Longest error or reason string a worker may send; longer ones are cut
/// (with a marker) before they reach the core, the store or the log.
pub const MAX_WORKER_TEXT: usize = 4 << 10;

/// Longest host or software string a worker may announce.
pub const MAX_WORKER_LABEL: usize = 256;

impl Limits {
    /// The limits a config asks for.
    pub fn from_settings(m: &MasterSettings) -> Self {
        Limits {
            max_handshake_frame: m.max_handshake_frame,
            max_frame: m.max_frame,
            max_log_size: m.max_log_size,
            max_clients: m.max_clients,
            allowed_uids: m.allowed_uids.clone(),
            allowed_gid: m.allowed_gid,
            keepalive: m.keepalive,
            dirs: Default::default(),
            worker: m.worker_limits.clone(),
            login_gate: Default::default(),
            worker_socket: Default::default(),
        }
    }

    /// The control socket's mode: owner only, unless other users or a
    /// group were let in (their peer credentials are still checked).
    pub fn control_socket_mode(&self) -> u32 {
        if !self.allowed_uids.is_empty() {
            0o666
        } else if self.allowed_gid.is_some() {
            0o660
        } else {
            0o600
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_owner_only_by_default() {
        // Who may connect is decided in `auth.rs` (its tests).
        let l = Limits::from_settings(&MasterSettings::default());
        assert_eq!(l.control_socket_mode(), 0o600);
    }

    #[test]
    fn the_socket_opens_for_listed_users_and_a_group() {
        let mut m = MasterSettings {
            allowed_uids: vec![1001],
            ..MasterSettings::default()
        };
        let l = Limits::from_settings(&m);
        assert_eq!(l.control_socket_mode(), 0o666);
        m.allowed_uids.clear();
        m.allowed_gid = Some(50);
        let l = Limits::from_settings(&m);
        assert_eq!(l.control_socket_mode(), 0o660);
    }
}
