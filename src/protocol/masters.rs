//! What `bbctl masters` and a master's `status` say about leadership
//! (issue 19, docs/standby.md): which master leads, with which epoch,
//! and every master's last heartbeat.

use serde::{Deserialize, Serialize};

/// A master's part in leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterRole {
    /// It holds the leadership: it schedules, builds and writes.
    Leader,
    /// It waits to take over; it answers read-only.
    Standby,
    /// It stopped cleanly (its row stays for `bbctl masters`).
    Stopped,
}

impl MasterRole {
    /// The word stored in `bb_masters.role` and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            MasterRole::Leader => "leader",
            MasterRole::Standby => "standby",
            MasterRole::Stopped => "stopped",
        }
    }

    /// The role of a stored word; an unknown word reads as stopped.
    pub fn parse(text: &str) -> MasterRole {
        match text {
            "leader" => MasterRole::Leader,
            "standby" => MasterRole::Standby,
            _ => MasterRole::Stopped,
        }
    }
}

/// The leader as the database records it (`bb_leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    /// The leadership epoch: bumped by every takeover.
    pub epoch: u64,
    /// The leader's name (`bbmaster --name`); `None` before any led.
    pub name: Option<String>,
    /// Where workers reach it (`bbmaster --advertise`).
    pub address: Option<String>,
    /// Its lease has run out (by the database's clock): a takeover is due.
    pub lease_expired: bool,
}

/// Leadership in `status`: what this master is, and who leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipStatus {
    /// This master's name.
    pub name: String,
    /// This master's role.
    pub role: MasterRole,
    /// The leader as recorded in the database.
    pub leader: LeaderView,
}

/// One master in `bbctl masters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterView {
    /// Its `--name`.
    pub name: String,
    /// Its `--advertise` address.
    pub address: Option<String>,
    /// Its role at its last heartbeat.
    pub role: MasterRole,
    /// The epoch it leads (leaders only).
    pub epoch: Option<u64>,
    /// Its process id on its host.
    pub pid: Option<u32>,
    /// When it started, ms since the Unix epoch (database clock).
    pub started_at_ms: Option<u64>,
    /// Its last heartbeat, ms since the Unix epoch (database clock).
    pub heartbeat_at_ms: Option<u64>,
    /// How long ago that was, in ms (database clock).
    pub heartbeat_age_ms: Option<u64>,
}

/// Answer to `masters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MastersReply {
    /// The store kind: `sqlite` (one master, no standby) or `postgres`.
    pub store: String,
    /// The name of the master that answered.
    pub answered_by: String,
    /// The leader (`None` on SQLite).
    pub leader: Option<LeaderView>,
    /// Every master known to the database, by name (on SQLite: this one).
    pub masters: Vec<MasterView>,
}
