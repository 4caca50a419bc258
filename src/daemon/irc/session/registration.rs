//! Registration: CAP negotiation, SASL PLAIN, NickServ IDENTIFY and the nick fallback.

use std::time::Instant;

use super::super::line::{Message, base64};
use super::{Level, Out, Phase, SASL_CHUNK, Session, join_line};

impl Session {
    /// The sasl cap was refused or failed: go on as configured.
    pub(super) fn sasl_failed(&mut self, why: String, now: Instant) -> Vec<Out> {
        let required = self.id.sasl.as_ref().is_some_and(|s| s.required);
        if required {
            self.phase = Phase::Closed;
            return vec![
                Out::Log(Level::Error, format!("SASL login failed: {why}")),
                Out::Close {
                    reason: format!("SASL login failed: {why}"),
                    quit: true,
                },
            ];
        }
        let fallback = if self.id.nickserv_password.is_some() {
            "going on with NickServ"
        } else {
            "going on without logging in"
        };
        let mut out = vec![Out::Log(
            Level::Warn,
            format!("SASL login failed: {why}; {fallback}"),
        )];
        out.extend(self.cap_end(now));
        out
    }

    pub(super) fn cap_end(&mut self, now: Instant) -> Vec<Out> {
        self.phase = Phase::Welcome;
        self.phase_deadline = Some(now + self.timing.register_timeout);
        vec![Out::Send("CAP END".into())]
    }

    /// After CAP LS: ask for what we use, or end the negotiation.
    pub(super) fn request_caps(&mut self, now: Instant) -> Vec<Out> {
        let mut want = Vec::new();
        if let Some(sasl) = &self.id.sasl {
            match self.offered.get("sasl") {
                Some(mechs) if mechs.is_empty() || mechs.split(',').any(|m| m == "PLAIN") => {
                    want.push("sasl")
                }
                Some(mechs) => {
                    let _ = sasl;
                    return self.sasl_failed(
                        format!("the server offers SASL mechanisms {mechs} only, not PLAIN"),
                        now,
                    );
                }
                None => {
                    return self
                        .sasl_failed("the server does not offer SASL (CAP sasl)".into(), now);
                }
            }
        }
        for cap in ["account-tag", "extended-join", "account-notify"] {
            if self.offered.contains_key(cap) {
                want.push(cap);
            }
        }
        if want.is_empty() {
            return self.cap_end(now);
        }
        self.phase = Phase::CapReq;
        vec![Out::Send(format!("CAP REQ :{}", want.join(" ")))]
    }

    /// The credentials as AUTHENTICATE lines: base64 in 400-byte chunks,
    /// and a lone `+` when the last chunk was exactly 400 bytes (or there
    /// was nothing to send).
    pub fn sasl_lines(account: &str, password: &str) -> Vec<String> {
        let payload = base64(format!("{account}\0{account}\0{password}").as_bytes());
        let mut lines: Vec<String> = payload
            .as_bytes()
            .chunks(SASL_CHUNK)
            .map(|c| format!("AUTHENTICATE {}", String::from_utf8_lossy(c)))
            .collect();
        if payload.len().is_multiple_of(SASL_CHUNK) {
            lines.push("AUTHENTICATE +".into());
        }
        lines
    }

    /// Registration is over (001, or NickServ done): join.
    pub(super) fn welcome_done(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(password) = self.id.nickserv_password.clone()
            && !self.sasl_ok
            && self.phase != Phase::NickServ
        {
            self.phase = Phase::NickServ;
            self.phase_deadline = Some(now + self.timing.nickserv_timeout);
            let account = self
                .id
                .sasl
                .as_ref()
                .map(|s| s.account.clone())
                .unwrap_or_else(|| self.id.nick.clone());
            out.push(Out::Send(format!(
                "PRIVMSG NickServ :IDENTIFY {account} {password}"
            )));
            return out;
        }
        self.phase = Phase::Ready;
        self.phase_deadline = None;
        out.push(Out::Ready);
        for channel in &self.channels {
            out.push(Out::Send(join_line(channel)));
        }
        out
    }

    pub(super) fn on_cap(&mut self, msg: &Message, now: Instant) -> Vec<Out> {
        match msg.param(1).to_ascii_uppercase().as_str() {
            "LS" if self.phase == Phase::CapLs => {
                let more = msg.params.len() >= 4 && msg.param(2) == "*";
                for cap in msg.trailing().split(' ').filter(|c| !c.is_empty()) {
                    let (name, value) = cap.split_once('=').unwrap_or((cap, ""));
                    self.offered.insert(name.to_owned(), value.to_owned());
                }
                if more {
                    Vec::new()
                } else {
                    self.request_caps(now)
                }
            }
            "ACK" if self.phase == Phase::CapReq => {
                for cap in msg.trailing().split(' ').filter(|c| !c.is_empty()) {
                    self.enabled.insert(cap.trim_start_matches('-').to_owned());
                }
                if self.id.sasl.is_some() && self.enabled.contains("sasl") {
                    self.phase = Phase::SaslStart;
                    self.phase_deadline = Some(now + self.timing.sasl_timeout);
                    vec![Out::Send("AUTHENTICATE PLAIN".into())]
                } else {
                    self.cap_end(now)
                }
            }
            "NAK" if self.phase == Phase::CapReq => {
                let why = format!("the server refused the capabilities {}", msg.trailing());
                if self.id.sasl.is_some() {
                    self.sasl_failed(why, now)
                } else {
                    let mut out = vec![Out::Log(Level::Warn, why)];
                    out.extend(self.cap_end(now));
                    out
                }
            }
            _ => Vec::new(),
        }
    }

    pub(super) fn on_nick_taken(&mut self, msg: &Message, now: Instant) -> Vec<Out> {
        let taken = msg.param(1).to_owned();
        if matches!(self.phase, Phase::Ready | Phase::NickServ) {
            // Our try to take the main nick back failed: later again.
            self.reclaim_at = Some(now + self.timing.reclaim_every);
            return Vec::new();
        }
        let next = match self.nick_tries {
            0 => self.id.nick.clone(),
            n if n <= self.id.alt_nicks.len() => self.id.alt_nicks[n - 1].clone(),
            n => format!(
                "{}{}",
                truncate(&self.id.nick, 7),
                n - self.id.alt_nicks.len()
            ),
        };
        self.nick_tries += 1;
        self.nick = next.clone();
        vec![
            Out::Log(
                Level::Warn,
                format!(
                    "nick {taken} is not available ({}); trying {next}",
                    msg.command
                ),
            ),
            Out::Send(format!("NICK {next}")),
        ]
    }

    pub(super) fn on_nickserv(&mut self, text: &str, now: Instant) -> Vec<Out> {
        let lower = text.to_ascii_lowercase();
        let failed = [
            "invalid",
            "incorrect",
            "wrong",
            "denied",
            "failed",
            "not registered",
        ]
        .iter()
        .any(|w| lower.contains(w));
        let ok = !failed
            && [
                "you are now identified",
                "password accepted",
                "you are now logged in",
                "identified",
            ]
            .iter()
            .any(|w| lower.contains(w));
        if !ok && !failed {
            return Vec::new();
        }
        let mut out = vec![if ok {
            Out::Log(Level::Info, "identified to NickServ".into())
        } else {
            Out::Log(
                Level::Error,
                format!(
                    "NickServ refused the password: {}",
                    super::super::line::clean(text)
                ),
            )
        }];
        self.sasl_ok = ok;
        out.extend(self.welcome_done_after_nickserv(now));
        out
    }

    pub(super) fn welcome_done_after_nickserv(&mut self, now: Instant) -> Vec<Out> {
        self.phase = Phase::Ready;
        self.phase_deadline = None;
        let _ = now;
        let mut out = vec![Out::Ready];
        for channel in &self.channels {
            out.push(Out::Send(join_line(channel)));
        }
        out
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
