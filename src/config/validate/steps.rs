//! Checks of `[[builder.step]]` entries: the action, timeout and env.

use std::time::Duration;

use toml::Spanned;

use super::super::model::{
    DownloadSpec, GIT_STEP_TIMEOUT, GitMode, GitSpec, StepAction, StepDef, UploadSpec,
};
use super::super::raw::{RawAction, RawDownload, RawGit, RawStep, RawUpload};
use super::Checker;
use crate::config::units::{parse_mode, parse_size};

impl Checker<'_> {
    /// One step of builder `builder`.
    pub(super) fn step(&mut self, builder: &str, raw: &RawStep) -> StepDef {
        self.name("step", &raw.name);
        let owner = format!("builder `{builder}`, step `{}`", raw.name.get_ref());
        let action = self.action(&owner, raw);
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(&owner, "timeout", t))
            // A fetch that hangs must end even when nobody set a limit.
            .or(matches!(action, StepAction::Git(_)).then_some(GIT_STEP_TIMEOUT));
        let env = self.env(&owner, &raw.env);
        let locks = self.locks.clone();
        let locks = self.claims(&owner, &raw.locks, &locks);
        if let (StepAction::Trigger(_), Some(t)) = (&action, &raw.timeout) {
            self.report(
                &t.span(),
                format!("{owner}: a `trigger` step takes no `timeout` (it runs no command)"),
            );
        }
        StepDef {
            name: raw.name.get_ref().clone(),
            action,
            timeout,
            env,
            locks,
        }
    }

    /// The step's one action: exactly one action key must be set.
    fn action(&mut self, owner: &str, raw: &RawStep) -> StepAction {
        let placeholder = StepAction::Command(Vec::new());
        match RawAction::present(raw).as_slice() {
            [] => {
                let keys = RawAction::KEYS.map(|k| format!("`{k}`")).join(" or ");
                self.report(&raw.name.span(), format!("{owner} needs {keys}"));
                placeholder
            }
            [first, second, ..] => {
                self.report(
                    &second.span(),
                    format!(
                        "{owner} has both `{}` and `{}`; keep one",
                        first.key(),
                        second.key()
                    ),
                );
                placeholder
            }
            [RawAction::Shell(shell)] => {
                if shell.get_ref().trim().is_empty() {
                    self.report(&shell.span(), format!("{owner}: `shell` must not be empty"));
                }
                StepAction::Shell(shell.get_ref().clone())
            }
            [RawAction::Command(command)] => {
                match command.get_ref().first() {
                    None => self.report(
                        &command.span(),
                        format!("{owner}: `command` must not be empty"),
                    ),
                    Some(program) if program.get_ref().is_empty() => self.report(
                        &program.span(),
                        format!("{owner}: `command` must start with a program name"),
                    ),
                    Some(_) => {}
                }
                let argv = command.get_ref().iter().map(|a| a.get_ref().clone());
                StepAction::Command(argv.collect())
            }
            [RawAction::Upload(upload)] => StepAction::Upload(self.upload(owner, upload)),
            [RawAction::Download(download)] => StepAction::Download(self.download(owner, download)),
            [RawAction::Git(git)] => StepAction::Git(self.git(owner, git)),
            [RawAction::Trigger(trigger)] => StepAction::Trigger(self.trigger(owner, trigger)),
        }
    }

    /// `git = { repository, mode, submodules }`.
    fn git(&mut self, owner: &str, raw: &Spanned<RawGit>) -> GitSpec {
        let table = raw.get_ref();
        let repository = match &table.repository {
            None => {
                self.report(&raw.span(), format!("{owner}: `git` needs `repository`"));
                String::new()
            }
            Some(r) => {
                self.repository(owner, "git.repository", r);
                r.get_ref().clone()
            }
        };
        let mode = match &table.mode {
            None => GitMode::Incremental,
            Some(m) => match m.get_ref().as_str() {
                "incremental" => GitMode::Incremental,
                "full" => GitMode::Full,
                other => {
                    self.report(
                        &m.span(),
                        format!(
                            "{owner}: bad `git.mode` {other:?}; use \"incremental\" (keep \
                             untracked files) or \"full\" (a clean tree)"
                        ),
                    );
                    GitMode::Incremental
                }
            },
        };
        GitSpec {
            repository,
            mode,
            submodules: table.submodules.as_ref().is_some_and(|s| *s.get_ref()),
        }
    }

    /// A repository git is given: a URL or a path, never something git
    /// would read as an option, nor a transport that runs commands.
    pub(super) fn repository(&mut self, owner: &str, key: &str, raw: &Spanned<String>) {
        let text = raw.get_ref();
        let why = if text.trim().is_empty() {
            "must not be empty"
        } else if text.starts_with('-') {
            "starts with `-`, which git would take for an option"
        } else if text.contains('\0') || text.contains('\n') {
            "contains a NUL byte or a line break"
        } else if text.starts_with("ext::") || text.starts_with("fd::") {
            "uses a transport that runs commands (`ext::`, `fd::`); these are refused"
        } else {
            return;
        };
        self.report(&raw.span(), format!("{owner}: `{key}` {text:?} {why}"));
    }

    /// `upload = { from, max_size, mode }`.
    fn upload(&mut self, owner: &str, raw: &Spanned<RawUpload>) -> UploadSpec {
        let table = raw.get_ref();
        UploadSpec {
            from: self
                .transfer_path(
                    owner,
                    "upload",
                    "from",
                    &raw.span(),
                    &table.from,
                    "the work dir",
                )
                .unwrap_or_default(),
            max_size: self.transfer_size(owner, "upload", &table.max_size),
            mode: self.transfer_mode(owner, "upload", &table.mode),
        }
    }

    /// `download = { from, to, max_size, mode }`.
    fn download(&mut self, owner: &str, raw: &Spanned<RawDownload>) -> DownloadSpec {
        let table = raw.get_ref();
        let from = self.transfer_path(
            owner,
            "download",
            "from",
            &raw.span(),
            &table.from,
            "the transfer dir",
        );
        let to = self.transfer_path(
            owner,
            "download",
            "to",
            &raw.span(),
            &table.to,
            "the work dir",
        );
        DownloadSpec {
            from: from.unwrap_or_default(),
            to: to.unwrap_or_default(),
            max_size: self.transfer_size(owner, "download", &table.max_size),
            mode: self.transfer_mode(owner, "download", &table.mode),
        }
    }

    /// A required path of a transfer table that must stay inside `base`.
    fn transfer_path(
        &mut self,
        owner: &str,
        kind: &str,
        key: &str,
        table: &std::ops::Range<usize>,
        raw: &Option<Spanned<String>>,
        base: &str,
    ) -> Option<String> {
        let Some(raw) = raw else {
            self.report(table, format!("{owner}: `{kind}` needs `{key}`"));
            return None;
        };
        if let Some(why) = relative_path_problem(raw.get_ref()) {
            self.report(
                &raw.span(),
                format!(
                    "{owner}: `{kind}.{key}` {:?} {why}; it must stay inside {base}",
                    raw.get_ref()
                ),
            );
            return None;
        }
        Some(raw.get_ref().clone())
    }

    /// An optional `max_size` of a transfer table.
    fn transfer_size(
        &mut self,
        owner: &str,
        kind: &str,
        raw: &Option<Spanned<String>>,
    ) -> Option<u64> {
        let raw = raw.as_ref()?;
        match parse_size(raw.get_ref()) {
            Ok(0) => {
                self.report(
                    &raw.span(),
                    format!("{owner}: `{kind}.max_size` must be greater than zero"),
                );
                None
            }
            Ok(n) => Some(n),
            Err(why) => {
                self.report(
                    &raw.span(),
                    format!(
                        "{owner}: bad `{kind}.max_size` {:?}: {why}; write it like \"64KiB\", \"16MiB\" or \"1GiB\"",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// An optional `mode` of a transfer table: octal permission bits.
    fn transfer_mode(&mut self, owner: &str, kind: &str, raw: &Option<Spanned<String>>) -> u32 {
        let default = super::super::defaults::mode(&format!("builder.step.{kind}.mode"));
        let Some(raw) = raw else {
            return default;
        };
        match parse_mode(raw.get_ref()) {
            Some(mode) => mode,
            None => {
                self.report(
                    &raw.span(),
                    format!(
                        "{owner}: bad `{kind}.mode` {:?}: write permission bits in octal, like \"0644\" or \"0755\"",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A humantime duration, greater than zero; `key` names the setting.
    pub(super) fn duration(
        &mut self,
        owner: &str,
        key: &str,
        raw: &Spanned<String>,
    ) -> Option<Duration> {
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.report(
                    &raw.span(),
                    format!("{owner}: `{key}` must be greater than zero"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let reason = match e {
                    humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                        "the number needs a unit".to_owned()
                    }
                    humantime::DurationError::UnknownUnit { unit, .. } => {
                        format!("unknown unit {unit:?}")
                    }
                    other => other.to_string(),
                };
                self.report(
                    &raw.span(),
                    format!(
                        "{owner}: bad `{key}` {:?}: {reason}; write it like \"30s\", \"5m\" or \"1h 30m\"",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// Why `path` may not name something inside a base directory, if it may
/// not: empty, absolute, or with a `..` component. Symlinks are checked
/// where the files are, at run time.
pub fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        Some("is empty")
    } else if path.starts_with('/') {
        Some("is an absolute path")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else if path.split('/').any(|c| c == "..") {
        Some("goes up with `..`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_mode, relative_path_problem};

    #[test]
    fn transfer_paths_must_stay_inside() {
        assert_eq!(relative_path_problem("out/*.tar.gz"), None);
        assert_eq!(relative_path_problem("a/..b/c"), None);
        assert_eq!(relative_path_problem("./x"), None);
        assert!(relative_path_problem("").is_some());
        assert!(relative_path_problem("/etc/passwd").is_some());
        assert!(relative_path_problem("..").is_some());
        assert!(relative_path_problem("a/../../b").is_some());
        assert!(relative_path_problem("a/..").is_some());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("0888"), None);
        assert_eq!(parse_mode("4755"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("rw-r--r--"), None);
    }
}
