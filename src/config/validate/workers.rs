//! Checks of `[[worker]]` entries: names, limits and secrets.

use super::super::model::{Secret, WorkerDef};
use super::super::raw::RawWorker;
use super::{Checker, MAX_BUILDS_LIMIT};

/// Shortest secret that draws no warning.
const MIN_SECRET_LEN: usize = 16;

impl Checker<'_> {
    /// All workers, then duplicate names.
    pub(super) fn workers(&mut self, raw: &[RawWorker]) -> Vec<WorkerDef> {
        let workers = raw.iter().map(|w| self.worker(w)).collect();
        self.duplicates(raw.iter().map(|w| &w.name), |n| {
            format!("duplicate worker name `{n}`")
        });
        workers
    }

    /// One worker: name, `max_builds` range, and its secret rules.
    fn worker(&mut self, raw: &RawWorker) -> WorkerDef {
        self.name("worker", &raw.name);
        let name = raw.name.get_ref();
        let local = raw.local.as_ref().is_some_and(|l| *l.get_ref());
        let max_builds = match &raw.max_builds {
            None => super::super::defaults::count("worker.max_builds"),
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(n) if (1..=MAX_BUILDS_LIMIT).contains(&i64::from(n)) => n,
                _ => {
                    self.report(
                        &m.span(),
                        format!(
                            "worker `{name}`: `max_builds` must be between 1 and \
                             {MAX_BUILDS_LIMIT}, not {}",
                            m.get_ref()
                        ),
                    );
                    1
                }
            },
        };
        let secret = if local {
            for (key, value) in [("secret", &raw.secret), ("secret_file", &raw.secret_file)] {
                if let Some(value) = value {
                    self.report(
                        &value.span(),
                        format!(
                            "worker `{name}` is local, so it takes no `{key}` \
                             (the master makes one up)"
                        ),
                    );
                }
            }
            None
        } else {
            self.remote_secret(raw)
        };
        let user = self.worker_user(raw, local);
        for tag in &raw.tags {
            self.name("tag", tag);
        }
        self.duplicates(raw.tags.iter(), |t| {
            format!("worker `{name}` lists tag `{t}` twice")
        });
        WorkerDef {
            name: name.clone(),
            local,
            max_builds,
            secret,
            user,
            tags: raw.tags.iter().map(|t| t.get_ref().clone()).collect(),
        }
    }

    /// A local worker's `user`: an existing user; refused on a remote
    /// worker, whose user is whoever runs `bbworker`.
    fn worker_user(&mut self, raw: &RawWorker, local: bool) -> Option<String> {
        let name = raw.name.get_ref();
        let user = raw.user.as_ref()?;
        if !local {
            self.report(
                &user.span(),
                format!(
                    "worker `{name}`: `user` applies to local workers only \
                     (a remote worker runs as whoever starts bbworker)"
                ),
            );
            return None;
        }
        match nix::unistd::User::from_name(user.get_ref()) {
            Ok(Some(_)) => Some(user.get_ref().clone()),
            Ok(None) => {
                self.report(
                    &user.span(),
                    format!(
                        "worker `{name}`: there is no user `{}` on this machine \
                         (create it, e.g. `useradd --system {}`)",
                        user.get_ref(),
                        user.get_ref()
                    ),
                );
                None
            }
            Err(e) => {
                self.report(
                    &user.span(),
                    format!(
                        "worker `{name}`: cannot look up user `{}`: {e}",
                        user.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// Refuses a secret shorter than [`MIN_SECRET_LEN`] bytes: guessable
    /// (issue 20; failed logins are slowed, but a short secret still falls).
    fn short_secret(&mut self, name: &str, at: &std::ops::Range<usize>, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            self.report(
                at,
                format!(
                    "worker `{name}`: the secret is only {} bytes; use {MIN_SECRET_LEN} or more \
                     (`head -c 32 /dev/urandom | base64` makes one)",
                    secret.len()
                ),
            );
        }
    }

    /// The secret of a non-local worker: exactly one of `secret`, `secret_file`.
    fn remote_secret(&mut self, raw: &RawWorker) -> Option<Secret> {
        let name = raw.name.get_ref();
        match (&raw.secret, &raw.secret_file) {
            (Some(_), Some(file)) => {
                self.report(
                    &file.span(),
                    format!("worker `{name}` has both `secret` and `secret_file`; keep one"),
                );
                None
            }
            (None, None) => {
                self.report(
                    &raw.name.span(),
                    format!("worker `{name}` needs `secret` or `secret_file`"),
                );
                None
            }
            (Some(secret), None) => {
                if secret.get_ref().is_empty() {
                    self.report(
                        &secret.span(),
                        format!("worker `{name}`: `secret` must not be empty"),
                    );
                } else {
                    self.short_secret(name, &secret.span(), secret.get_ref());
                }
                Some(Secret(secret.get_ref().clone()))
            }
            (None, Some(file)) => {
                let path = self.base_dir.join(file.get_ref());
                match super::files::read_small_file(&path).and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "stream did not contain valid UTF-8",
                        )
                    })
                }) {
                    Err(e) => {
                        self.report(
                            &file.span(),
                            format!(
                                "worker `{name}`: cannot read secret_file {}: {e}",
                                path.display()
                            ),
                        );
                        None
                    }
                    Ok(text) => {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode());
                        if let Ok(m) = mode.map(|m| m & 0o777)
                            && m & 0o044 != 0
                        {
                            let who = if m & 0o004 != 0 {
                                "every user"
                            } else {
                                "its group"
                            };
                            self.warn(
                                &file.span(),
                                format!(
                                    "worker `{name}`: secret_file {} is readable by {who} (mode {m:o}); `chmod 600` it",
                                    path.display()
                                ),
                            );
                        }
                        let secret = text.trim_end();
                        if secret.is_empty() {
                            self.report(
                                &file.span(),
                                format!("worker `{name}`: secret_file {} is empty", path.display()),
                            );
                        } else {
                            self.short_secret(name, &file.span(), secret);
                        }
                        Some(Secret(secret.to_owned()))
                    }
                }
            }
        }
    }
}
