//! Leadership among masters sharing one PostgreSQL database (issue 19,
//! docs/standby.md).
//!
//! One master leads; the others are standbys. The leader holds a
//! session-level advisory lock on a connection of its own (the
//! "leadership" connection) and a lease row (`bb_leader`) carrying an
//! **epoch**; every write of its store is conditional on that epoch (the
//! fence, in the store). Split by job:
//!
//! - [`campaign`]: a standby waits for the lock, terminates a holder
//!   whose lease has run out (by the database's clock), and on winning
//!   bumps the epoch (committed before anything is restored).
//! - [`lease`]: the leader renews its lease every lease/3 and notices, at
//!   once, when it cannot or when another epoch has started.
//! - [`registry`]: every master's row in `bb_masters` (heartbeats) and
//!   the reads behind `bbctl masters` and a standby's `status`.
//! - [`standby`]: what a standby answers on its sockets meanwhile.
//! - [`phase`]: a standby's sockets and campaign, handed to the leader.
//! - [`thread`]: the campaign and the lease on threads of their own, so
//!   that a busy master loop never starves them.
//! - [`write_lease`]: until when the leader may write files on the
//!   shared storage, which no epoch fences.

pub mod campaign;
pub mod lease;
pub mod phase;
pub mod registry;
pub mod standby;
pub mod thread;
pub mod write_lease;

#[cfg(test)]
mod tests;

use std::time::Duration;

/// The advisory lock held by the leader's leadership session (WAVE4
/// contract: "bbma").
pub const LEADERSHIP_LOCK: i64 = 0x6262_6d61;

/// Who this master is, for the other masters and the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `bbmaster --name` (default: the host name).
    pub name: String,
    /// `bbmaster --advertise`: the worker address others are sent to;
    /// `None` without `worker_listen` (workers cannot follow this master).
    pub address: Option<String>,
}

impl Identity {
    /// `--name` or the host name; `--advertise` or derived from the
    /// first worker listen address: `tls://` (`tcp://` with
    /// `allow_plaintext`), with the host name when it listens on every
    /// interface, else its own IP.
    pub fn resolve(
        name: Option<String>,
        advertise: Option<String>,
        worker_listen: &[std::net::SocketAddr],
        plaintext: bool,
    ) -> Identity {
        let host = host_name();
        let address = advertise.or_else(|| {
            let addr = worker_listen.first()?;
            let scheme = if plaintext { "tcp" } else { "tls" };
            let ip = addr.ip();
            Some(if ip.is_unspecified() {
                format!("{scheme}://{host}:{}", addr.port())
            } else {
                format!("{scheme}://{addr}")
            })
        });
        Identity {
            name: name.unwrap_or(host),
            address,
        }
    }
}

/// This host's name (`localhost` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// How long a lease lasts, and the period of renewals and heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease (`[master] store = { lease = "10s" }`).
    pub length: Duration,
}

impl Lease {
    /// The lease of `length`.
    pub fn new(length: Duration) -> Self {
        Lease { length }
    }

    /// Renewals, heartbeats and expiry checks happen this often.
    pub fn period(&self) -> Duration {
        self.length / 3
    }

    /// The lease in seconds, as the SQL interval arithmetic takes it.
    pub fn seconds(&self) -> f64 {
        self.length.as_secs_f64()
    }
}

/// The leader as the database knows it (`bb_leader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRow {
    /// The epoch: bumped by every takeover.
    pub epoch: u64,
    /// The leader's `--name`; `None` before any master led.
    pub master: Option<String>,
    /// Its `--advertise` address.
    pub address: Option<String>,
    /// Whether its lease has run out (by the database's clock).
    pub expired: bool,
}

impl LeaderRow {
    /// The words a standby answers a state-changing command with.
    pub fn refusal(&self) -> String {
        match (&self.master, &self.address) {
            (Some(name), Some(address)) => format!(
                "this master is a standby; the leader is {name} at {address} (epoch {})",
                self.epoch
            ),
            _ => "this master is a standby and no master leads yet; try again in a moment"
                .to_string(),
        }
    }
}

/// Why a leader stopped leading, or a campaign failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A query on a leadership or heartbeat connection failed.
    #[error("the database, {what}: {source}")]
    Db {
        /// What we were doing.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The lease row is missing (the schema was not migrated).
    #[error("the table bb_leader has no row (id = 1): the database is not migrated")]
    NoLeaseRow,
    /// Another master took the leadership: this one must stop at once.
    #[error(
        "lost the leadership: epoch {current} started (this master led epoch {mine}); \
         stopping without writing anything more"
    )]
    Superseded {
        /// The epoch this master led.
        mine: u64,
        /// The epoch in the database now.
        current: u64,
    },
    /// The store refused a write: another epoch started (the fence).
    #[error("lost the leadership: {0}; stopping without writing anything more")]
    Fenced(String),
    /// Another live master runs under this master's `--name`.
    #[error(
        "another master named `{name}` is running on this database ({holder}); \
         give each master its own --name"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// Who holds it, from `bb_masters`.
        holder: String,
    },
    /// The campaign's or the lease's thread ended without an answer.
    #[error("the {0} thread ended unexpectedly")]
    Thread(&'static str),
    /// The lease could not be renewed before it ran out.
    #[error(
        "lost the leadership: the lease (epoch {mine}) could not be renewed within {lease:?} \
         ({why}); stopping without writing anything more"
    )]
    Expired {
        /// The epoch this master led.
        mine: u64,
        /// The lease.
        lease: Duration,
        /// The last renewal's failure.
        why: String,
    },
}

impl LeaderError {
    /// A `Db` error for `what`.
    pub fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LeaderError {
        move |source| LeaderError::Db { what, source }
    }

    /// Whether this error means the leadership was lost (rather than a
    /// campaign that could not run).
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            LeaderError::Superseded { .. } | LeaderError::Expired { .. } | LeaderError::Fenced(_)
        )
    }
}

/// This master's seat among masters, for `status` and `bbctl masters`:
/// its identity and role, and the database it shares (`None` on SQLite:
/// one master, no standby).
#[derive(Clone)]
pub struct Seat {
    /// Who this master is.
    pub me: Identity,
    /// What it is now.
    pub role: crate::protocol::MasterRole,
    /// The shared database (the heartbeat connection).
    pub db: Option<std::sync::Arc<tokio_postgres::Client>>,
}

impl Seat {
    /// The seat of a master on SQLite: the only one, so the leader.
    pub fn sqlite(me: Identity) -> Self {
        Seat {
            me,
            role: crate::protocol::MasterRole::Leader,
            db: None,
        }
    }

    /// Leadership for `status`; `None` on SQLite, or when the database
    /// cannot be read (status still answers).
    pub async fn status(&self) -> Option<crate::protocol::LeadershipStatus> {
        let db = self.db.as_ref()?;
        let leader = registry::leader(db).await.ok()?;
        Some(crate::protocol::LeadershipStatus {
            name: self.me.name.clone(),
            role: self.role,
            leader: leader.into(),
        })
    }

    /// `bbctl masters`.
    pub async fn masters(&self) -> Result<crate::protocol::MastersReply, LeaderError> {
        let Some(db) = &self.db else {
            return Ok(crate::protocol::MastersReply {
                store: "sqlite".into(),
                answered_by: self.me.name.clone(),
                leader: None,
                masters: vec![crate::protocol::MasterView {
                    name: self.me.name.clone(),
                    address: self.me.address.clone(),
                    role: crate::protocol::MasterRole::Leader,
                    epoch: None,
                    pid: Some(std::process::id()),
                    started_at_ms: None,
                    heartbeat_at_ms: None,
                    heartbeat_age_ms: None,
                }],
            });
        };
        Ok(crate::protocol::MastersReply {
            store: "postgres".into(),
            answered_by: self.me.name.clone(),
            leader: Some(registry::leader(db).await?.into()),
            masters: registry::masters(db).await?,
        })
    }
}
