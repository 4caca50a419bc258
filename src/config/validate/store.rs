//! `[master] store`: `"sqlite"` (the default) or a PostgreSQL database
//! with the directory for logs and artifacts every master reaches
//! (docs/postgres.md), and what such a store rules out (local workers).

use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use toml::Spanned;

use super::super::model::{PostgresSettings, StoreSettings};
use super::super::raw::{RawStore, RawStoreValue, RawWorker};
use super::Checker;
use super::files::read_small_file;

/// A leader's lease when `lease` is not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The shortest lease: renewals every lease/3 must fit round trips.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

impl Checker<'_> {
    /// `store`; problems are reported at the value (its inner keys carry
    /// no positions) and name the key (`master.store.shared_dir: ...`).
    pub(super) fn store(&mut self, raw: &Option<Spanned<RawStoreValue>>) -> StoreSettings {
        let Some(raw) = raw else {
            return StoreSettings::Sqlite;
        };
        let span = raw.span();
        match raw.get_ref() {
            RawStoreValue::Name(name) if name == "sqlite" => StoreSettings::Sqlite,
            RawStoreValue::Name(name) => {
                self.report(
                    &span,
                    format!(
                        "master.store: {name:?} is not a store; write \"sqlite\" (the default) or \
                         {{ postgres = \"host=... dbname=... user=...\", shared_dir = \"...\" }} \
                         (docs/postgres.md)"
                    ),
                );
                StoreSettings::Sqlite
            }
            RawStoreValue::Table(table) => match self.postgres(table, &span) {
                Some(settings) => StoreSettings::Postgres(settings),
                None => StoreSettings::Sqlite,
            },
        }
    }

    /// `store = { postgres = ... }`; `None` when it has problems (reported).
    fn postgres(&mut self, raw: &RawStore, span: &Range<usize>) -> Option<PostgresSettings> {
        let conninfo = match &raw.postgres {
            None => {
                self.report(
                    span,
                    "master.store.postgres: the connection string is required (like \
                     \"host=db.example port=5432 user=bb dbname=bb\"), or write store = \"sqlite\""
                        .into(),
                );
                None
            }
            Some(c) => self.conninfo(c, span),
        };
        let password_file = raw.password_file.as_ref().and_then(|file| {
            if file.is_empty() {
                self.report(span, "master.store.password_file: must not be empty".into());
                return None;
            }
            let path = self.base_dir.join(file);
            match read_small_file(&path) {
                Ok(bytes)
                    if String::from_utf8_lossy(&bytes)
                        .lines()
                        .next()
                        .is_some_and(|l| !l.is_empty()) =>
                {
                    if let Ok(meta) = std::fs::metadata(&path)
                        && meta.permissions().mode() & 0o077 != 0
                    {
                        self.warn(
                            span,
                            format!(
                                "master.store.password_file {}: readable by others than its \
                                 owner; chmod 600 it",
                                path.display()
                            ),
                        );
                    }
                    Some(path)
                }
                Ok(_) => {
                    self.report(
                        span,
                        format!(
                            "master.store.password_file {}: the first line (the password) is empty",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.report(
                        span,
                        format!("master.store.password_file {}: {e}", path.display()),
                    );
                    None
                }
            }
        });
        let shared_dir = match &raw.shared_dir {
            Some(dir) if !dir.is_empty() => Some(self.base_dir.join(dir)),
            _ => {
                self.report(
                    span,
                    "master.store.shared_dir: required with postgres: the directory on storage \
                     every master reaches, where logs and artifacts live (docs/postgres.md)"
                        .into(),
                );
                None
            }
        };
        let lease = match &raw.lease {
            None => Some(DEFAULT_LEASE),
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d >= MIN_LEASE => Some(d),
                Ok(_) => {
                    self.report(
                        span,
                        format!(
                            "master.store.lease: must be at least {}, not {text:?}",
                            humantime::format_duration(MIN_LEASE)
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.report(
                        span,
                        format!(
                            "master.store.lease: bad duration {text:?}: {e}; write it like \"10s\""
                        ),
                    );
                    None
                }
            },
        };
        let ca_file = raw.ca_file.as_ref().and_then(|file| {
            let path = self.base_dir.join(file);
            match read_small_file(&path) {
                Ok(bytes) if String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") => {
                    Some(path)
                }
                Ok(_) => {
                    self.report(
                        span,
                        format!(
                            "master.store.ca_file {}: holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.report(span, format!("master.store.ca_file {}: {e}", path.display()));
                    None
                }
            }
        });
        if (raw.password_file.is_some() && password_file.is_none())
            || (raw.ca_file.is_some() && ca_file.is_none())
        {
            return None;
        }
        Some(PostgresSettings {
            conninfo: conninfo?,
            password_file,
            shared_dir: shared_dir?,
            lease: lease?,
            ca_file,
        })
    }

    /// The connection string: readable by the driver, and without a
    /// password (that goes in `password_file`).
    fn conninfo(&mut self, text: &str, span: &Range<usize>) -> Option<String> {
        match text.parse::<tokio_postgres::Config>() {
            Err(e) => {
                let why = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |cause| format!("{e}: {cause}"));
                self.report(
                    span,
                    format!(
                        "master.store.postgres: {why}; write it like \"host=db.example port=5432 \
                         user=bb dbname=bb\""
                    ),
                );
                None
            }
            Ok(config) if config.get_password().is_some() => {
                self.report(
                    span,
                    "master.store.postgres: the connection string holds a password; put it in a \
                     file named by `password_file` instead (master.toml is no place for secrets)"
                        .into(),
                );
                None
            }
            Ok(_) => Some(text.to_string()),
        }
    }

    /// With PostgreSQL, local workers are refused: they run on this
    /// master's host and cannot follow a takeover to another one.
    /// Checked on the raw value: a `store = { ... }` with problems of
    /// its own still rules them out.
    pub(super) fn no_local_workers_with_postgres(
        &mut self,
        store: &Option<Spanned<RawStoreValue>>,
        workers: &[RawWorker],
    ) {
        if !store
            .as_ref()
            .is_some_and(|s| matches!(s.get_ref(), RawStoreValue::Table(_)))
        {
            return;
        }
        for w in workers {
            if let Some(local) = &w.local
                && *local.get_ref()
            {
                self.report(
                    &local.span(),
                    format!(
                        "worker `{}`: `local = true` cannot be used with master.store = {{ postgres \
                         ... }}: a local worker runs on one master's host and cannot follow a \
                         takeover to another; use bbworker with --master for each master \
                         (docs/standby.md)",
                        w.name.get_ref()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_str;

    const REST: &str = r#"
[[worker]]
name = "w1"
secret = "a-secret-of-enough-length"

[[builder]]
name = "b"
workers = ["w1"]

  [[builder.step]]
  name = "s"
  shell = "true"
"#;

    #[test]
    fn a_postgres_store_is_read_with_its_paths_resolved_and_the_default_lease() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pgpass"), "pw\n").unwrap();
        let text = format!(
            "[master]\nstore = {{ postgres = \"host=db dbname=bb\", password_file = \"pgpass\", \
             shared_dir = \"shared\" }}\n{REST}"
        );
        let config = parse_str(&text, "m.toml", dir.path()).unwrap();
        assert_eq!(
            config.master.store,
            StoreSettings::Postgres(PostgresSettings {
                conninfo: "host=db dbname=bb".into(),
                password_file: Some(dir.path().join("pgpass")),
                shared_dir: dir.path().join("shared"),
                lease: DEFAULT_LEASE,
                ca_file: None,
            })
        );
        let sqlite = parse_str(
            &format!("[master]\nstore = \"sqlite\"\n{REST}"),
            "m.toml",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(sqlite.master.store, StoreSettings::Sqlite);
        // As a table of its own, with a lease.
        let table = parse_str(
            &format!(
                "[master.store]\npostgres = \"host=db\"\nshared_dir = \"/s\"\nlease = \"30s\"\n{REST}"
            ),
            "m.toml",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            table.master.store.postgres().map(|p| p.lease),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn changing_the_store_waits_for_a_restart() {
        let old = crate::config::MasterSettings::default();
        let mut new = old.clone();
        new.store = StoreSettings::Postgres(PostgresSettings {
            conninfo: "host=db".into(),
            password_file: None,
            shared_dir: "/s".into(),
            lease: DEFAULT_LEASE,
            ca_file: None,
        });
        assert_eq!(
            crate::daemon::core::restart_only_changes(&old, &new),
            vec!["master.store".to_string()]
        );
    }
}
