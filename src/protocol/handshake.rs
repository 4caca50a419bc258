//! The first exchange on every connection: who are you, which protocol.
//!
//! A peer sends [`Hello`] before anything else. To a client the master
//! answers [`HelloReply::Welcome`] or [`HelloReply::Refused`] (and closes).
//! A worker is first sent [`HelloReply::Challenge`], a fresh nonce, and
//! answers with a [`WorkerProof`] of its secret (see [`super::proof`]); the
//! secret itself never crosses the wire. Then comes the Welcome or the
//! Refused. Both sides read these frames with the small
//! [`super::MAX_HANDSHAKE_FRAME`] limit.

use serde::{Deserialize, Serialize};

use super::RunningStep;

/// Identifies our protocol, so a stray client of another program gets a
/// clear refusal instead of a confusing decode error later.
pub const MAGIC: &str = "bbp";

/// The wire protocol version; peers must agree exactly.
pub const PROTOCOL_VERSION: u32 = 5;

/// The opening frame of every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The sender's program and version, for messages only.
    pub software: String,
    /// What the peer is.
    pub role: Role,
}

/// What a connecting peer is.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `bbctl` or another control client.
    Client,
    /// A worker; it proves who it is in the next frame ([`WorkerProof`]).
    Worker {
        /// The worker's configured name.
        name: String,
        /// Steps the worker is still running from an earlier connection.
        #[serde(default)]
        running: Vec<RunningStep>,
        /// The worker's host name, for `bbctl workers`.
        #[serde(default)]
        host: Option<String>,
    },
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Client => f.write_str("Client"),
            Role::Worker {
                name,
                running,
                host,
            } => f
                .debug_struct("Worker")
                .field("name", name)
                .field("running", running)
                .field("host", host)
                .finish(),
        }
    }
}

/// The master's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Go ahead.
    Welcome {
        /// The master's [`PROTOCOL_VERSION`].
        version: u32,
        /// The master's program and version.
        software: String,
        /// The master's process id.
        master_pid: u32,
        /// For workers: how often each side pings the other; a peer silent
        /// for three intervals is lost.
        #[serde(default)]
        keepalive_ms: Option<u64>,
    },
    /// To a worker's hello: prove your secret over this nonce (answer
    /// with a [`WorkerProof`]).
    Challenge {
        /// [`super::proof::NONCE_LEN`] random bytes, new for every
        /// connection.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Not accepted; the connection closes after this frame.
    Refused {
        /// Why, in words meant for a person.
        reason: String,
        /// Why, for a program: whether trying again can help. Absent from
        /// older masters' refusals (then [`RefusalKind::Other`]).
        #[serde(default)]
        kind: RefusalKind,
        /// With [`RefusalKind::NotLeader`]: the worker address the leader
        /// advertises (as in `bbworker --master`), when a leader is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<String>,
    },
}

/// Why a [`Hello`] was refused, so that a worker can decide what to do
/// without parsing words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// A worker of this name is connected already: another process with
    /// the same name, or our own previous link that the master has not yet
    /// seen die. Worth trying again, with back-off.
    AlreadyConnected,
    /// The secret does not match the worker's.
    WrongSecret,
    /// The master's config has no worker of this name.
    UnknownWorker,
    /// A reload removed the worker and it is draining.
    Removed,
    /// The peers speak different protocol versions (or one is not ours).
    Version,
    /// The master is at a limit (connections not yet authenticated):
    /// worth trying again later.
    Busy,
    /// The worker's TLS client certificate does not name it.
    Certificate,
    /// This master is a standby (the PostgreSQL store): it runs no builds.
    /// The refusal names the leader's address when one is known; a worker
    /// given several `--master`s goes there (docs/standby.md).
    NotLeader,
    /// Anything else (a bad hello, the wrong socket, an older master).
    #[default]
    #[serde(other)]
    Other,
}

/// A worker's answer to [`HelloReply::Challenge`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerProof {
    /// HMAC-SHA256 of the challenge under the worker's secret
    /// ([`super::proof::prove`]).
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
}

impl std::fmt::Debug for WorkerProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerProof { .. }")
    }
}

impl HelloReply {
    /// A refusal of `kind` with the words `reason`.
    pub fn refused(kind: RefusalKind, reason: impl Into<String>) -> Self {
        HelloReply::Refused {
            reason: reason.into(),
            kind,
            leader: None,
        }
    }

    /// A standby's refusal: go to `leader` (its advertised worker
    /// address), when one is known.
    pub fn not_leader(reason: impl Into<String>, leader: Option<String>) -> Self {
        HelloReply::Refused {
            reason: reason.into(),
            kind: RefusalKind::NotLeader,
            leader,
        }
    }
}

impl Hello {
    /// A hello from this build of the software: from `bbworker` for a
    /// worker, from `bbctl` for a client.
    pub fn new(role: Role) -> Self {
        let program = match role {
            Role::Worker { .. } => "bbworker",
            Role::Client => "bbctl",
        };
        Hello {
            magic: MAGIC.to_string(),
            version: PROTOCOL_VERSION,
            software: software_of(program),
            role,
        }
    }

    /// Check magic and version; the error text is what the peer is told
    /// (refused with [`RefusalKind::Version`]).
    pub fn check(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!(
                "not a bbctl protocol peer (magic {:?}, expected {MAGIC:?})",
                self.magic
            ));
        }
        if self.version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version mismatch: peer {} speaks version {}, this master ({}) speaks version {PROTOCOL_VERSION}; use matching versions of bbctl, bbworker and bbmaster",
                self.software,
                self.version,
                software()
            ));
        }
        Ok(())
    }
}

/// The master's name and version, as sent in its Welcome.
pub fn software() -> String {
    software_of("bbmaster")
}

/// `program` with this build's version (`bbworker 0.1.0`), as shown by
/// `bbctl workers` and in handshake messages.
pub fn software_of(program: &str) -> String {
    format!("{program} {}", env!("CARGO_PKG_VERSION"))
}
