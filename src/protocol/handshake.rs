//! The first exchange on every connection: who are you, which protocol.
//!
//! A peer sends [`Hello`] before anything else; the master answers
//! [`HelloReply::Welcome`] or [`HelloReply::Refused`] and closes. Both sides
//! read these frames with the small [`super::MAX_HANDSHAKE_FRAME`] limit.

use serde::{Deserialize, Serialize};

use super::RunningStep;

/// Identifies our protocol, so a stray client of another program gets a
/// clear refusal instead of a confusing decode error later.
pub const MAGIC: &str = "bbp";

/// The wire protocol version; peers must agree exactly.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// A worker, proving who it is.
    Worker {
        /// The worker's configured name.
        name: String,
        /// The worker's secret.
        secret: String,
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
            Role::Worker { name, running, .. } => f
                .debug_struct("Worker")
                .field("name", name)
                .field("secret", &"***")
                .field("running", running)
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
    /// Not accepted; the connection closes after this frame.
    Refused {
        /// Why, in words meant for a person.
        reason: String,
    },
}

impl Hello {
    /// A hello from this build of the software.
    pub fn new(role: Role) -> Self {
        Hello {
            magic: MAGIC.to_string(),
            version: PROTOCOL_VERSION,
            software: software(),
            role,
        }
    }

    /// Check magic and version; the error text is what the peer is told.
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

/// This program's name and version, as sent in the handshake.
pub fn software() -> String {
    format!("bbctl-suite {}", env!("CARGO_PKG_VERSION"))
}
