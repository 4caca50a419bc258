//! `[irc]`: the bot's server, identity, credentials, channels and rights.
//!
//! Credentials are read here, from files (or inline for the server
//! password), so that a reload that changes them is seen as a change of
//! the connection, and a missing file is an error of the config with its
//! position, not a failed login at 3 a.m.

use std::ops::Range;

use toml::Spanned;

use super::Checker;
use crate::config::defaults;
use crate::config::model::{IRC_EVENTS, IrcAuthz, IrcChannel, IrcSasl, IrcSettings, Secret};
use crate::config::raw::RawIrc;

/// Longest nick we accept in the config (servers allow 9 to 30).
const MAX_NICK: usize = 30;

impl Checker<'_> {
    /// `[irc]`: `None` (with problems recorded) when it cannot be used.
    pub(super) fn irc(&mut self, raw: &Spanned<RawIrc>) -> Option<IrcSettings> {
        let at = raw.span();
        let raw = raw.get_ref();
        let problems = self.problems.len();
        let server = match &raw.server {
            Some(s) if is_host(s.get_ref()) => s.get_ref().clone(),
            Some(s) => {
                self.report(
                    &s.span(),
                    format!(
                        "[irc]: `server` {:?} is not a host name or address",
                        s.get_ref()
                    ),
                );
                String::new()
            }
            None => {
                self.report(&at, "[irc] needs `server`".into());
                String::new()
            }
        };
        let tls = raw.tls.as_ref().is_none_or(|t| *t.get_ref());
        let port = match &raw.port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => port,
                _ => {
                    self.report(
                        &p.span(),
                        format!("[irc]: `port` must be 1 to 65535, not {}", p.get_ref()),
                    );
                    0
                }
            },
            None if tls => 6697,
            None => 6667,
        };
        if !tls {
            for (key, value) in [
                ("tls_ca", &raw.tls_ca),
                ("tls_fingerprint", &raw.tls_fingerprint),
            ] {
                if let Some(v) = value {
                    self.report(&v.span(), format!("[irc]: `{key}` needs `tls = true`"));
                }
            }
        }
        let tls_ca = self.path("tls_ca", &raw.tls_ca);
        let tls_fingerprint = raw.tls_fingerprint.as_ref().and_then(|f| {
            crate::net::parse_fingerprint(f.get_ref())
                .map_err(|e| self.report(&f.span(), format!("[irc]: `tls_fingerprint`: {e}")))
                .ok()
        });
        if let (Some(ca), Some(_)) = (&raw.tls_ca, &raw.tls_fingerprint) {
            self.report(
                &ca.span(),
                "[irc]: `tls_ca` and `tls_fingerprint` exclude each other; keep one".into(),
            );
        }
        let nick = match &raw.nick {
            Some(n) => self.nick(n).unwrap_or_default(),
            None => defaults::unquoted_text("irc.nick").into(),
        };
        let alt_nicks = raw
            .alt_nicks
            .as_ref()
            .map(|list| list.get_ref().iter().filter_map(|n| self.nick(n)).collect())
            .unwrap_or_default();
        let password = match (&raw.password, &raw.password_file) {
            (Some(p), Some(_)) => {
                self.report(
                    &p.span(),
                    "[irc] has both `password` and `password_file`; keep one".into(),
                );
                None
            }
            (Some(p), None) => self.word("password", p).map(Secret),
            (None, Some(f)) => self.irc_secret("password_file", f),
            (None, None) => None,
        };
        let sasl = raw.sasl.as_ref().and_then(|s| {
            let span = s.span();
            let s = s.get_ref();
            if let Some(m) = &s.mechanism
                && !m.get_ref().eq_ignore_ascii_case("PLAIN")
            {
                self.report(
                    &m.span(),
                    format!(
                        "[irc]: sasl `mechanism` {:?} is not supported; only \"PLAIN\" is",
                        m.get_ref()
                    ),
                );
            }
            let account = match &s.account {
                Some(a) => self.word("sasl account", a),
                None => {
                    self.report(&span, "[irc]: `sasl` needs `account`".into());
                    None
                }
            };
            let password = match &s.password_file {
                Some(f) => self.irc_secret("sasl password_file", f),
                None => {
                    self.report(&span, "[irc]: `sasl` needs `password_file`".into());
                    None
                }
            };
            Some(IrcSasl {
                account: account?,
                password: password?,
                required: s.required.as_ref().is_none_or(|r| *r.get_ref()),
            })
        });
        let nickserv_password = raw
            .nickserv_password_file
            .as_ref()
            .and_then(|f| self.irc_secret("nickserv_password_file", f));
        let mut channels: Vec<IrcChannel> = Vec::new();
        for c in raw.channels.iter().flatten() {
            let name = c.name.get_ref();
            if !name.starts_with(['#', '&', '+', '!'])
                || name.len() > 50
                || !crate::daemon::irc::line::is_param(name)
                || name.contains(',')
            {
                self.report(
                    &c.name.span(),
                    format!(
                        "[irc]: channel {name:?} is not a channel name (`#name`, no space or comma)"
                    ),
                );
                continue;
            }
            if channels
                .iter()
                .any(|other| crate::daemon::irc::line::irc_eq(&other.name, name))
            {
                self.report(
                    &c.name.span(),
                    format!("[irc]: channel {name} is listed twice"),
                );
                continue;
            }
            let key = c
                .key
                .as_ref()
                .and_then(|k| self.word("channel key", k))
                .map(Secret);
            let notify = match &c.notify {
                Some(list) => self.irc_events(list),
                None => ["failure", "exception", "fixed"].map(String::from).to_vec(),
            };
            channels.push(IrcChannel {
                name: name.clone(),
                key,
                notify,
            });
        }
        let accounts = |list: &Option<Spanned<Vec<Spanned<String>>>>| -> Vec<String> {
            list.as_ref()
                .map(|l| l.get_ref().iter().map(|a| a.get_ref().clone()).collect())
                .unwrap_or_default()
        };
        let authz = raw
            .authz
            .as_ref()
            .map(|a| IrcAuthz {
                force: accounts(&a.get_ref().force),
                stop: accounts(&a.get_ref().stop),
            })
            .unwrap_or_default();
        let keepalive = raw
            .keepalive
            .as_ref()
            .and_then(|d| self.duration("[irc]", "keepalive", d))
            .unwrap_or_else(|| defaults::duration("irc.keepalive"));
        let pong_timeout = raw
            .pong_timeout
            .as_ref()
            .and_then(|d| self.duration("[irc]", "pong_timeout", d))
            .unwrap_or_else(|| defaults::duration("irc.pong_timeout"));
        if self.problems.len() > problems {
            return None;
        }
        Some(IrcSettings {
            server,
            port,
            tls,
            tls_ca,
            tls_fingerprint,
            nick,
            alt_nicks,
            password,
            sasl,
            nickserv_password,
            channels,
            authz,
            keepalive,
            pong_timeout,
        })
    }

    /// A nick: a word of at most [`MAX_NICK`] bytes, not starting with a
    /// digit, `-` or `#`.
    fn nick(&mut self, raw: &Spanned<String>) -> Option<String> {
        let nick = raw.get_ref();
        let ok = crate::daemon::irc::line::is_param(nick)
            && nick.len() <= MAX_NICK
            && !nick.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '#')
            && !nick.contains([',', '!', '@', '*', '?']);
        if ok {
            Some(nick.clone())
        } else {
            self.report(
                &raw.span(),
                format!("[irc]: {nick:?} is not a valid nick (at most {MAX_NICK} bytes, no space, not starting with a digit)"),
            );
            None
        }
    }

    /// A value sent as one IRC parameter: no space or control character.
    fn word(&mut self, what: &str, raw: &Spanned<String>) -> Option<String> {
        let value = raw.get_ref();
        if value.is_empty() || value.chars().any(|c| c.is_control() || c == ' ') {
            self.report(
                &raw.span(),
                format!("[irc]: the {what} must be one word without spaces or control characters"),
            );
            return None;
        }
        Some(value.clone())
    }

    /// A secret from a file: one line, no control characters; a file
    /// others may read is worth a warning.
    fn irc_secret(&mut self, key: &str, file: &Spanned<String>) -> Option<Secret> {
        let path = self.base_dir.join(file.get_ref());
        let span: Range<usize> = file.span();
        let text = match super::files::read_small_file(&path)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        {
            Ok(text) => text,
            Err(e) => {
                self.report(
                    &span,
                    format!("[irc]: cannot read {key} {}: {e}", path.display()),
                );
                return None;
            }
        };
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777)
            && m & 0o044 != 0
        {
            self.warn(
                &span,
                format!(
                    "[irc]: {key} {} is readable by others (mode {m:o}); `chmod 600` it",
                    path.display()
                ),
            );
        }
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.is_empty() || secret.chars().any(char::is_control) {
            self.report(
                &span,
                format!(
                    "[irc]: {key} {} must hold one non-empty line",
                    path.display()
                ),
            );
            return None;
        }
        Some(Secret(secret.to_owned()))
    }

    /// A `notify` list: known event words only.
    fn irc_events(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for event in list.get_ref() {
            let word = event.get_ref();
            if IRC_EVENTS.contains(&word.as_str()) {
                if !out.contains(word) {
                    out.push(word.clone());
                }
            } else {
                self.report(
                    &event.span(),
                    format!(
                        "[irc]: unknown notify event {word:?}; known: {}",
                        IRC_EVENTS.join(", ")
                    ),
                );
            }
        }
        out
    }
}

/// A DNS name or an IP address, as `server`.
fn is_host(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && (text.parse::<std::net::IpAddr>().is_ok()
            || text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
}
