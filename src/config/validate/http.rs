//! `[http]` and its `[[http.token]]` entries (docs/http.md): the address,
//! the proxy settings, and each token read from its file like a worker's
//! `secret_file` (regular, small, not readable by others).

use std::ops::Range;

use toml::Spanned;

use super::super::model::{HttpHook, HttpSettings, HttpToken, Secret};
use super::super::raw::{RawHttp, RawHttpHook, RawHttpToken};
use super::super::units::parse_listen;
use super::Checker;

/// What a token may be allowed to do (`may = [...]`).
pub const HTTP_PERMISSIONS: &[&str] = &["force", "stop", "cancel", "rebuild"];

/// The kinds of webhook payloads (`[[http.hook]] kind`).
pub const HOOK_KINDS: &[&str] = &["github", "gitea", "json"];

/// The shortest token accepted: a guessable one is no gate.
const MIN_TOKEN_LEN: usize = 16;

/// The default `max_connections`.
const DEFAULT_MAX_CONNECTIONS: u32 = 256;

impl Checker<'_> {
    /// `[http]`; `None` when it has problems (reported) or no `listen`.
    pub(super) fn http(&mut self, raw: &Spanned<RawHttp>) -> Option<HttpSettings> {
        let span = raw.span();
        let raw = raw.get_ref();
        let listen = match &raw.listen {
            None => {
                self.report(
                    &span,
                    "http: `listen` is required (e.g. \"127.0.0.1:8010\"); remove [http] to \
                     turn the web server off"
                        .to_string(),
                );
                None
            }
            Some(l) => match parse_listen(l.get_ref()) {
                Some(addr) => Some(addr),
                None => {
                    self.report(
                        &l.span(),
                        format!(
                            "http: `listen` {:?} is not an address with a port; write it like \
                             \"127.0.0.1:8010\", \"[::1]:8010\" or \"8010\" (loopback)",
                            l.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if let Some(b) = &raw.base_url {
            let url = b.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                self.report(
                    &b.span(),
                    format!("http: `base_url` {url:?} must start with http:// or https://"),
                );
            }
        }
        let max_connections = match &raw.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    self.report(
                        &m.span(),
                        format!(
                            "http: `max_connections` must be between 1 and 100000, not {}",
                            m.get_ref()
                        ),
                    );
                    DEFAULT_MAX_CONNECTIONS
                }
            },
        };
        let tls = raw.tls.as_ref().is_some_and(|t| *t.get_ref());
        self.duplicates(raw.token.iter().map(|t| &t.name), |n| {
            format!("http: token `{n}` is defined twice")
        });
        let tokens: Vec<HttpToken> = raw.token.iter().filter_map(|t| self.token(t)).collect();
        self.duplicates(raw.hook.iter().map(|h| &h.name), |n| {
            format!("http: hook `{n}` is defined twice")
        });
        let hooks: Vec<HttpHook> = raw.hook.iter().filter_map(|h| self.hook(h)).collect();
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && !tls
            && !tokens.is_empty()
        {
            self.warn(
                &span,
                format!(
                    "http: tokens travel in clear text to {addr}, which is not loopback; set \
                     `tls = true` or put a TLS proxy in front"
                ),
            );
        }
        Some(HttpSettings {
            listen: listen?,
            base_url: raw
                .base_url
                .as_ref()
                .map(|b| b.get_ref().trim_end_matches('/').to_string()),
            trust_proxy: raw.trust_proxy.as_ref().is_some_and(|t| *t.get_ref()),
            tls,
            max_connections,
            tokens,
            hooks,
        })
    }

    /// One `[[http.hook]]`.
    fn hook(&mut self, raw: &RawHttpHook) -> Option<HttpHook> {
        self.name("http hook", &raw.name);
        let name = raw.name.get_ref().clone();
        let kind = match &raw.kind {
            None => {
                self.report(
                    &raw.name.span(),
                    format!(
                        "http hook `{name}` needs `kind` (one of {})",
                        HOOK_KINDS.join(", ")
                    ),
                );
                None
            }
            Some(k) if HOOK_KINDS.contains(&k.get_ref().as_str()) => Some(k.get_ref().clone()),
            Some(k) => {
                self.report(
                    &k.span(),
                    format!(
                        "http hook `{name}`: `kind` {:?} is not one of {}",
                        k.get_ref(),
                        HOOK_KINDS.join(", ")
                    ),
                );
                None
            }
        };
        let Some(file) = &raw.secret_file else {
            self.report(
                &raw.name.span(),
                format!("http hook `{name}` needs `secret_file` (its HMAC secret)"),
            );
            return None;
        };
        let secret = self.token_file(
            &format!("http hook `{name}`"),
            "secret_file",
            file.get_ref(),
            &file.span(),
        )?;
        Some(HttpHook {
            name,
            kind: kind?,
            secret: Secret(secret),
        })
    }

    /// One `[[http.token]]`.
    fn token(&mut self, raw: &RawHttpToken) -> Option<HttpToken> {
        self.name("http token", &raw.name);
        let name = raw.name.get_ref().clone();
        let mut may = Vec::new();
        if let Some(list) = &raw.may {
            for entry in list.get_ref() {
                let word = entry.get_ref();
                if HTTP_PERMISSIONS.contains(&word.as_str()) {
                    may.push(word.clone());
                } else {
                    self.report(
                        &entry.span(),
                        format!(
                            "http token `{name}`: `may` entry {word:?} is not one of {}",
                            HTTP_PERMISSIONS.join(", ")
                        ),
                    );
                }
            }
        }
        let Some(file) = &raw.token_file else {
            self.report(
                &raw.name.span(),
                format!("http token `{name}` needs `token_file`"),
            );
            return None;
        };
        let token = self.token_file(
            &format!("http token `{name}`"),
            "token_file",
            file.get_ref(),
            &file.span(),
        )?;
        Some(HttpToken {
            name,
            token: Secret(token),
            may,
        })
    }

    /// The secret in `file` (the value of `key` of `who`, for messages),
    /// read like a worker's `secret_file`.
    fn token_file(
        &mut self,
        who: &str,
        key: &str,
        file: &str,
        at: &Range<usize>,
    ) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.base_dir.join(file);
        let text = match super::files::read_small_file(&path).and_then(|b| {
            String::from_utf8(b)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
        }) {
            Ok(text) => text,
            Err(e) => {
                self.report(
                    at,
                    format!("{who}: cannot read {key} {}: {e}", path.display()),
                );
                return None;
            }
        };
        if let Ok(m) = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777)
            && m & 0o044 != 0
        {
            self.warn(
                at,
                format!(
                    "{who}: {key} {} is readable by others (mode {m:o}); \
                     `chmod 600` it",
                    path.display()
                ),
            );
        }
        let token = text.trim().to_string();
        if token.len() < MIN_TOKEN_LEN {
            self.report(
                at,
                format!(
                    "{who}: the secret in {} is {} bytes; use {MIN_TOKEN_LEN} or \
                     more (`head -c 32 /dev/urandom | base64` makes one)",
                    path.display(),
                    token.len()
                ),
            );
            return None;
        }
        Some(token)
    }
}
