//! One IRC connection as a pure state machine: lines and the clock in,
//! lines to send and things to tell the master out. No I/O and no clock
//! of its own (the driver in [`super::conn`] passes `now`), so every
//! transcript of the registration, the keepalive and the channel life is
//! a unit test.
//!
//! Registration: `CAP LS 302`, `NICK`, `USER`; then `CAP REQ` for `sasl`
//! (and `account-tag`, `extended-join`, `account-notify` when offered);
//! `AUTHENTICATE PLAIN`, the credentials in 400-byte chunks (a lone `+`
//! after an exact multiple of 400), and only after 900/903 or a failure
//! (902, 904-907) `CAP END`. A SASL failure or timeout either ends the
//! connection loudly or falls back to NickServ, as configured. NickServ:
//! `IDENTIFY` after 001, then wait for its confirmation (bounded), only
//! then JOIN. The server's PING is answered in every phase.
//!
//! Keepalive: once registered, a line silent for `keepalive` gets our own
//! PING, whose PONG must come within `pong_timeout`; otherwise the
//! connection is declared dead ([`Out::Close`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::line::{Message, irc_eq, irc_lower};

mod keepalive;
mod registration;

/// Largest AUTHENTICATE payload per line (IRCv3 SASL).
pub const SASL_CHUNK: usize = 400;

/// Who the bot is and how it proves it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The nick wanted.
    pub nick: String,
    /// Nicks to try when it is taken, in order.
    pub alt_nicks: Vec<String>,
    /// The server password (`PASS`).
    pub server_password: Option<String>,
    /// SASL PLAIN credentials.
    pub sasl: Option<SaslLogin>,
    /// The NickServ password: used when SASL is not configured, or as the
    /// fallback of a SASL that is not required.
    pub nickserv_password: Option<String>,
}

/// SASL PLAIN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// The services account.
    pub account: String,
    /// Its password.
    pub password: String,
    /// Fail the connection when SASL fails (true), or go on without it
    /// (to NickServ if configured).
    pub required: bool,
}

/// The time limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silence after which we PING the server.
    pub keepalive: Duration,
    /// How long our PING may wait for its PONG.
    pub pong_timeout: Duration,
    /// From connect to 001.
    pub register_timeout: Duration,
    /// From `AUTHENTICATE PLAIN` to its result.
    pub sasl_timeout: Duration,
    /// From `IDENTIFY` to NickServ's confirmation.
    pub nickserv_timeout: Duration,
    /// Before joining again after a KICK.
    pub rejoin_delay: Duration,
    /// Between tries to take the main nick back.
    pub reclaim_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keepalive: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(30),
            register_timeout: Duration::from_secs(60),
            sasl_timeout: Duration::from_secs(20),
            nickserv_timeout: Duration::from_secs(15),
            rejoin_delay: Duration::from_secs(10),
            reclaim_every: Duration::from_secs(60),
        }
    }
}

/// A channel to be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// `#name`.
    pub name: String,
    /// Its key, if it has one.
    pub key: Option<String>,
}

/// How bad a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal life.
    Info,
    /// Something to look at.
    Warn,
    /// Something is broken (credentials, a refused login).
    Error,
}

/// A command someone sent the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's nick (for messages, never for rights).
    pub nick: String,
    /// The sender's services account, if the server vouched for one.
    pub account: Option<String>,
    /// Where to answer: the channel, or the nick in private.
    pub reply_to: String,
    /// The channel it was said in (`None` in private).
    pub channel: Option<String>,
    /// The command line, prefix removed.
    pub text: String,
}

/// What the session asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Write this line (a protocol line: ahead of messages).
    Send(String),
    /// Put this in the master's log.
    Log(Level, String),
    /// Registration is complete and channels are being joined.
    Ready,
    /// We are in this channel now.
    Joined(String),
    /// We are no longer in this channel.
    Left(String),
    /// Someone asked something.
    Command(Incoming),
    /// The connection is over: the reason, and whether the failure is
    /// one of configuration (credentials refused), worth a louder log.
    Close {
        /// Why, for the log and `status`.
        reason: String,
        /// Send QUIT before closing.
        quit: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// CAP LS sent; waiting for the (possibly multi-line) list.
    CapLs,
    /// CAP REQ sent; waiting for ACK or NAK.
    CapReq,
    /// `AUTHENTICATE PLAIN` sent; waiting for `AUTHENTICATE +`.
    SaslStart,
    /// Credentials sent; waiting for 903 or a failure numeric.
    SaslResult,
    /// CAP END sent (or no CAP); waiting for 001.
    Welcome,
    /// IDENTIFY sent; waiting for NickServ.
    NickServ,
    /// Registered, channels joined or being joined.
    Ready,
    /// Closed; nothing more happens.
    Closed,
}

/// The state of one connection (see the module comment).
#[derive(Debug)]
pub struct Session {
    id: Identity,
    timing: Timing,
    channels: Vec<Channel>,
    phase: Phase,
    /// Deadline of the current phase (registration, SASL, NickServ).
    phase_deadline: Option<Instant>,
    /// The nick we have (or are trying during registration).
    nick: String,
    /// Index of the next nick to try (0 = main, then alt_nicks, then made up).
    nick_tries: usize,
    offered: BTreeMap<String, String>,
    enabled: BTreeSet<String>,
    sasl_ok: bool,
    /// The account the server says we are logged in as.
    logged_in: Option<String>,
    last_rx: Instant,
    pong_deadline: Option<Instant>,
    /// When our outstanding PING left, and the last round trip measured.
    ping_sent: Option<Instant>,
    lag: Option<Duration>,
    joined: BTreeSet<String>,
    rejoin_at: BTreeMap<String, Instant>,
    reclaim_at: Option<Instant>,
    /// Accounts of nicks, known from extended-join / account-notify.
    accounts: HashMap<String, Option<String>>,
    /// Commands waiting for a WHOIS of their sender, by lower-case nick.
    parked: HashMap<String, Vec<Incoming>>,
    /// An account seen in this WHOIS (330), until its 318.
    whois_account: HashMap<String, String>,
}

impl Session {
    /// A session about to connect.
    pub fn new(id: Identity, timing: Timing, channels: Vec<Channel>, now: Instant) -> Self {
        Session {
            nick: id.nick.clone(),
            id,
            timing,
            channels,
            phase: Phase::CapLs,
            phase_deadline: None,
            nick_tries: 1,
            offered: BTreeMap::new(),
            enabled: BTreeSet::new(),
            sasl_ok: false,
            logged_in: None,
            last_rx: now,
            pong_deadline: None,
            ping_sent: None,
            lag: None,
            joined: BTreeSet::new(),
            rejoin_at: BTreeMap::new(),
            reclaim_at: None,
            accounts: HashMap::new(),
            parked: HashMap::new(),
            whois_account: HashMap::new(),
        }
    }

    /// Our current nick.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Registered and past NickServ?
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The channels we are in (lower case).
    pub fn joined(&self) -> impl Iterator<Item = &String> {
        self.joined.iter()
    }

    /// The round trip of our last PING, once one was answered.
    pub fn lag(&self) -> Option<Duration> {
        self.lag
    }

    /// The account the server logged us in as, if any.
    pub fn logged_in(&self) -> Option<&str> {
        self.logged_in.as_deref()
    }

    /// Is this channel one of ours (configured)?
    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.iter().any(|c| irc_eq(&c.name, name))
    }

    /// The first lines of a new connection.
    pub fn start(&mut self, now: Instant) -> Vec<Out> {
        self.last_rx = now;
        self.phase = Phase::CapLs;
        self.phase_deadline = Some(now + self.timing.register_timeout);
        let mut out = Vec::new();
        if let Some(pass) = &self.id.server_password {
            out.push(Out::Send(format!("PASS :{pass}")));
        }
        out.push(Out::Send("CAP LS 302".into()));
        out.push(Out::Send(format!("NICK {}", self.nick)));
        out.push(Out::Send(format!(
            "USER {} 0 * :bbmaster bot",
            self.id.nick
        )));
        out
    }

    /// The channels wanted changed (a reload): join and part only the
    /// difference.
    pub fn set_channels(&mut self, channels: Vec<Channel>) -> Vec<Out> {
        let mut out = Vec::new();
        if self.phase == Phase::Ready {
            for old in &self.channels {
                if !channels.iter().any(|c| irc_eq(&c.name, &old.name)) {
                    let key = irc_lower(&old.name);
                    self.rejoin_at.remove(&key);
                    if self.joined.contains(&key) {
                        out.push(Out::Send(format!(
                            "PART {} :no longer configured",
                            old.name
                        )));
                    }
                }
            }
            for new in &channels {
                if !self.channels.iter().any(|c| irc_eq(&c.name, &new.name)) {
                    out.push(Out::Send(join_line(new)));
                }
            }
        }
        self.channels = channels;
        out
    }

    /// One line from the server.
    pub fn on_line(&mut self, msg: &Message, now: Instant) -> Vec<Out> {
        self.last_rx = now;
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let mut out = Vec::new();
        match msg.command.as_str() {
            "PING" => out.push(Out::Send(format!("PONG :{}", msg.trailing()))),
            "PONG" => {
                self.pong_deadline = None;
                if let Some(sent) = self.ping_sent.take() {
                    self.lag = Some(now.saturating_duration_since(sent));
                }
            }
            "ERROR" => {
                self.phase = Phase::Closed;
                out.push(Out::Close {
                    reason: format!("the server closed the link: {}", msg.trailing()),
                    quit: false,
                });
            }
            "CAP" => out.extend(self.on_cap(msg, now)),
            "AUTHENTICATE" if self.phase == Phase::SaslStart && msg.param(0) == "+" => {
                if let Some(sasl) = &self.id.sasl {
                    for line in Self::sasl_lines(&sasl.account, &sasl.password) {
                        out.push(Out::Send(line));
                    }
                }
                self.phase = Phase::SaslResult;
            }
            "900" => {
                self.logged_in = Some(msg.param(2).to_owned());
                out.push(Out::Log(
                    Level::Info,
                    format!("logged in as account {}", msg.param(2)),
                ));
            }
            "903" if matches!(self.phase, Phase::SaslStart | Phase::SaslResult) => {
                self.sasl_ok = true;
                out.extend(self.cap_end(now));
            }
            "902" | "904" | "905" | "906" | "907" | "908"
                if matches!(self.phase, Phase::SaslStart | Phase::SaslResult) =>
            {
                if msg.command == "908" {
                    // The mechanisms list; 904 follows.
                    return out;
                }
                let why = format!("{} {}", msg.command, msg.trailing());
                out.extend(self.sasl_failed(why, now));
            }
            "001" => {
                if let Some(nick) = msg.params.first() {
                    self.nick = nick.clone();
                }
                if !self.sasl_ok
                    && self.id.sasl.as_ref().is_some_and(|s| s.required)
                    && self.phase != Phase::Closed
                {
                    out.extend(self.sasl_failed(
                        "the server registered us without SASL (it does not support CAP)".into(),
                        now,
                    ));
                    return out;
                }
                if !irc_eq(&self.nick, &self.id.nick) {
                    self.reclaim_at = Some(now + self.timing.reclaim_every);
                }
                out.extend(self.welcome_done(now));
            }
            "432" | "433" | "436" | "437" => out.extend(self.on_nick_taken(msg, now)),
            "NICK" => {
                let new = msg.param(0).to_owned();
                if msg.nick().is_some_and(|n| irc_eq(n, &self.nick)) {
                    self.nick = new;
                    if irc_eq(&self.nick, &self.id.nick) {
                        self.reclaim_at = None;
                        out.push(Out::Log(
                            Level::Info,
                            format!("took back the nick {}", self.nick),
                        ));
                    }
                } else if let Some(old) = msg.nick()
                    && let Some(account) = self.accounts.remove(&irc_lower(old))
                {
                    self.accounts.insert(irc_lower(&new), account);
                }
            }
            "NOTICE"
                if self.phase == Phase::NickServ
                    && msg.nick().is_some_and(|n| irc_eq(n, "NickServ")) =>
            {
                out.extend(self.on_nickserv(msg.trailing(), now));
            }
            "JOIN" => out.extend(self.on_join(msg)),
            "PART"
                if msg.nick().is_some_and(|n| irc_eq(n, &self.nick))
                    && self.joined.contains(&irc_lower(msg.param(0))) =>
            {
                self.joined.remove(&irc_lower(msg.param(0)));
                out.push(Out::Left(msg.param(0).to_owned()));
            }
            "KICK" if irc_eq(msg.param(1), &self.nick) => {
                let channel = msg.param(0).to_owned();
                let key = irc_lower(&channel);
                self.joined.remove(&key);
                out.push(Out::Left(channel.clone()));
                out.push(Out::Log(
                    Level::Warn,
                    format!(
                        "kicked from {channel} by {}: {}; joining again in {} s",
                        msg.nick().unwrap_or("?"),
                        msg.param(2),
                        self.timing.rejoin_delay.as_secs()
                    ),
                ));
                if self.has_channel(&channel) {
                    self.rejoin_at.insert(key, now + self.timing.rejoin_delay);
                }
            }
            "QUIT" => {
                if let Some(nick) = msg.nick() {
                    self.accounts.remove(&irc_lower(nick));
                }
            }
            "ACCOUNT" => {
                if let Some(nick) = msg.nick() {
                    let account = Some(msg.param(0)).filter(|a| *a != "*").map(str::to_owned);
                    self.accounts.insert(irc_lower(nick), account);
                }
            }
            "330" => {
                self.whois_account
                    .insert(irc_lower(msg.param(1)), msg.param(2).to_owned());
            }
            "318" => {
                let key = irc_lower(msg.param(1));
                let account = self.whois_account.remove(&key);
                for mut cmd in self.parked.remove(&key).unwrap_or_default() {
                    cmd.account = account.clone();
                    out.push(Out::Command(cmd));
                }
            }
            "403" | "405" | "471" | "473" | "474" | "475" | "476" | "477" => {
                let why = match msg.command.as_str() {
                    "471" => "the channel is full (+l)",
                    "473" => "the channel is invite only (+i)",
                    "474" => "the bot is banned (+b)",
                    "475" => "wrong or missing channel key (+k)",
                    "476" => "bad channel mask",
                    "477" => "the channel needs a registered nick",
                    "405" => "joined too many channels",
                    _ => "no such channel",
                };
                out.push(Out::Log(
                    Level::Warn,
                    format!(
                        "cannot join {}: {why} ({} {})",
                        msg.param(1),
                        msg.command,
                        msg.trailing()
                    ),
                ));
            }
            "PRIVMSG" => out.extend(self.on_privmsg(msg)),
            _ => {}
        }
        out
    }

    fn on_join(&mut self, msg: &Message) -> Vec<Out> {
        let Some(who) = msg.nick() else {
            return Vec::new();
        };
        let channel = msg.param(0).to_owned();
        if irc_eq(who, &self.nick) {
            let key = irc_lower(&channel);
            self.rejoin_at.remove(&key);
            if self.joined.insert(key) {
                return vec![Out::Joined(channel)];
            }
            return Vec::new();
        }
        if self.enabled.contains("extended-join") && msg.params.len() >= 2 {
            let account = Some(msg.param(1)).filter(|a| *a != "*").map(str::to_owned);
            self.accounts.insert(irc_lower(who), account);
        }
        Vec::new()
    }

    fn on_privmsg(&mut self, msg: &Message) -> Vec<Out> {
        let Some(nick) = msg.nick() else {
            return Vec::new();
        };
        if irc_eq(nick, &self.nick) || self.phase != Phase::Ready {
            return Vec::new();
        }
        let target = msg.param(0);
        let text = msg.trailing();
        let (channel, command) = if irc_eq(target, &self.nick) {
            (None, Some(text.strip_prefix('!').unwrap_or(text)))
        } else {
            (Some(target.to_owned()), addressed(text, &self.nick))
        };
        let Some(command) = command.map(str::trim).filter(|c| !c.is_empty()) else {
            return Vec::new();
        };
        let mut incoming = Incoming {
            nick: nick.to_owned(),
            account: None,
            reply_to: channel.clone().unwrap_or_else(|| nick.to_owned()),
            channel,
            text: command.to_owned(),
        };
        let word = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if !matches!(word.as_str(), "force" | "stop") {
            return vec![Out::Command(incoming)];
        }
        // Rights are by services account, never by nick.
        if self.enabled.contains("account-tag") {
            incoming.account = msg.tag("account").map(str::to_owned);
            return vec![Out::Command(incoming)];
        }
        if self.enabled.contains("extended-join")
            && self.enabled.contains("account-notify")
            && let Some(account) = self.accounts.get(&irc_lower(nick))
        {
            incoming.account = account.clone();
            return vec![Out::Command(incoming)];
        }
        let key = irc_lower(nick);
        let first = !self.parked.contains_key(&key);
        self.parked.entry(key).or_default().push(incoming);
        if first {
            vec![Out::Send(format!("WHOIS {nick}"))]
        } else {
            Vec::new()
        }
    }
}

/// `JOIN #chan [key]`.
fn join_line(channel: &Channel) -> String {
    match &channel.key {
        Some(key) => format!("JOIN {} {key}", channel.name),
        None => format!("JOIN {}", channel.name),
    }
}

/// The command in a channel line addressed to us: `!cmd`, `nick: cmd`,
/// `nick, cmd`.
fn addressed<'t>(text: &'t str, nick: &str) -> Option<&'t str> {
    if let Some(cmd) = text.strip_prefix('!') {
        return Some(cmd);
    }
    let (head, rest) = text.split_once([':', ','])?;
    irc_eq(head.trim(), nick).then_some(rest)
}

#[cfg(test)]
mod tests;
