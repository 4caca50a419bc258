//! Checks of `[[builder.step]]` entries: the action, timeout and env.

use std::time::Duration;

use toml::Spanned;

use super::super::model::{StepAction, StepDef};
use super::super::raw::{RawAction, RawStep};
use super::Checker;

impl Checker<'_> {
    /// One step of builder `builder`.
    pub(super) fn step(&mut self, builder: &str, raw: &RawStep) -> StepDef {
        self.name("step", &raw.name);
        let owner = format!("builder `{builder}`, step `{}`", raw.name.get_ref());
        let action = self.action(&owner, raw);
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| self.duration(&owner, "timeout", t));
        let env = self.env(&owner, &raw.env);
        StepDef {
            name: raw.name.get_ref().clone(),
            action,
            timeout,
            env,
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
