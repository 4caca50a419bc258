//! The IRC bot settings: SASL, channels and who may do what.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// The events a channel may be notified of (`notify`, `!notify on ...`).
pub const IRC_EVENTS: &[&str] = &[
    "started",
    "finished",
    "success",
    "failure",
    "exception",
    "cancelled",
    "fixed",
    "broken",
    "worker_lost",
];

/// `[irc]`: the IRC bot (docs/irc.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcSettings {
    /// The server's host name (also checked against its certificate).
    pub server: String,
    /// Its port.
    pub port: u16,
    /// TLS with the server's certificate verified.
    pub tls: bool,
    /// CAs to trust instead of the system's.
    pub tls_ca: Option<PathBuf>,
    /// The one certificate to trust (SHA-256), instead of any CA.
    pub tls_fingerprint: Option<[u8; 32]>,
    /// The nick wanted.
    pub nick: String,
    /// Nicks to try when it is taken.
    pub alt_nicks: Vec<String>,
    /// The server password (PASS).
    pub password: Option<Secret>,
    /// SASL PLAIN login.
    pub sasl: Option<IrcSasl>,
    /// The NickServ password (when SASL is not configured or not required).
    pub nickserv_password: Option<Secret>,
    /// The channels to be in, in file order.
    pub channels: Vec<IrcChannel>,
    /// Who may do what, by services account.
    pub authz: IrcAuthz,
    /// Silence after which the bot PINGs the server.
    pub keepalive: Duration,
    /// How long that PING may wait for its PONG before the bot reconnects.
    pub pong_timeout: Duration,
}

impl IrcSettings {
    /// Is `other` the same connection (server, TLS, nick, credentials,
    /// keepalive)? If so a reload keeps the connection and only joins,
    /// parts and re-reads notify lists and authz.
    pub fn same_connection(&self, other: &IrcSettings) -> bool {
        let strip = |s: &IrcSettings| IrcSettings {
            channels: Vec::new(),
            authz: IrcAuthz::default(),
            ..s.clone()
        };
        strip(self) == strip(other)
    }
}

/// `sasl = { ... }` of `[irc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcSasl {
    /// The services account.
    pub account: String,
    /// Its password.
    pub password: Secret,
    /// Fail the connection when SASL fails (true), or go on without it.
    pub required: bool,
}

/// One channel of `[irc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrcChannel {
    /// `#name`.
    pub name: String,
    /// The channel key.
    pub key: Option<Secret>,
    /// Events announced there (words of [`IRC_EVENTS`]).
    pub notify: Vec<String>,
}

/// `authz = { ... }` of `[irc]`: services accounts allowed each command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IrcAuthz {
    /// May `force` builds.
    pub force: Vec<String>,
    /// May `stop` builds.
    pub stop: Vec<String>,
}
