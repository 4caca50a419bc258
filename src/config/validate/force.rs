//! Checks of a builder's `force_properties`: what `bbctl force-build` may
//! set, of which type, with which default.

use super::super::model::{ForceKind, ForceProperty};
use super::super::raw::RawForceProperty;
use super::Checker;

impl Checker<'_> {
    /// The `force_properties` of builder `builder`.
    pub(super) fn force_properties(
        &mut self,
        builder: &str,
        raw: &[RawForceProperty],
    ) -> Vec<ForceProperty> {
        let props = raw
            .iter()
            .map(|p| self.force_property(builder, p))
            .collect();
        self.duplicates(raw.iter().map(|p| &p.name), |n| {
            format!("builder `{builder}`: force property `{n}` is declared twice")
        });
        props
    }

    fn force_property(&mut self, builder: &str, raw: &RawForceProperty) -> ForceProperty {
        let name = raw.name.get_ref();
        let owner = format!("builder `{builder}`, force property `{name}`");
        if !self.placeholders.contains(&raw.name.span().start) && !super::is_env_name(name) {
            self.report(
                &raw.name.span(),
                format!(
                    "{owner}: the name is not a valid property name (letters, digits and '_', \
                     not starting with a digit)"
                ),
            );
        }
        let kind = self.force_kind(&owner, raw);
        let default = raw.default.as_ref().and_then(|d| {
            let text = match d.get_ref() {
                toml::Value::String(s) if !matches!(kind, ForceKind::Int | ForceKind::Bool) => {
                    s.clone()
                }
                toml::Value::Integer(n) if kind == ForceKind::Int => n.to_string(),
                toml::Value::Boolean(b) if kind == ForceKind::Bool => b.to_string(),
                other => {
                    let want = match kind {
                        ForceKind::Int => "an integer, like `default = 3`",
                        ForceKind::Bool => "true or false, without quotes",
                        _ => "a string, in quotes",
                    };
                    self.report(
                        &d.span(),
                        format!(
                            "{owner}: `default` must be {want} (the type is `{}`), not {}",
                            kind.name(),
                            describe(other)
                        ),
                    );
                    return None;
                }
            };
            match kind.normalize(&text) {
                Ok(value) => Some(value),
                Err(why) => {
                    self.report(&d.span(), format!("{owner}: bad `default`: {why}"));
                    None
                }
            }
        });
        let required = raw.required.as_ref().is_some_and(|r| *r.get_ref());
        if let (Some(r), Some(_)) = (&raw.required, &raw.default)
            && *r.get_ref()
        {
            self.report(
                &r.span(),
                format!(
                    "{owner}: `required = true` with a `default` can never be missing; \
                     drop one of them"
                ),
            );
        }
        ForceProperty {
            name: name.clone(),
            kind,
            default,
            required,
        }
    }

    /// `type` (default `"string"`) and, for `choice`, its `choices`.
    fn force_kind(&mut self, owner: &str, raw: &RawForceProperty) -> ForceKind {
        let kind = match &raw.r#type {
            None => ForceKind::String,
            Some(k) => match k.get_ref().as_str() {
                "string" => ForceKind::String,
                "int" => ForceKind::Int,
                "bool" => ForceKind::Bool,
                "choice" => ForceKind::Choice(Vec::new()),
                other => {
                    let hint =
                        crate::suggest::did_you_mean(other, ["string", "int", "bool", "choice"]);
                    let hint = if hint.is_empty() {
                        "; use \"string\", \"int\", \"bool\" or \"choice\"".to_owned()
                    } else {
                        hint
                    };
                    self.report(
                        &k.span(),
                        format!("{owner}: unknown `type` {other:?}{hint}"),
                    );
                    ForceKind::String
                }
            },
        };
        match (kind, &raw.choices) {
            (ForceKind::Choice(_), None) => {
                let at = raw.r#type.as_ref().map_or(raw.name.span(), |k| k.span());
                self.report(
                    &at,
                    format!("{owner}: a `choice` property needs `choices = [\"...\", ...]`"),
                );
                ForceKind::Choice(Vec::new())
            }
            (ForceKind::Choice(_), Some(list)) => {
                if list.get_ref().is_empty() {
                    self.report(
                        &list.span(),
                        format!("{owner}: `choices` must not be empty"),
                    );
                }
                self.duplicates(list.get_ref().iter(), |c| {
                    format!("{owner}: choice {c:?} is listed twice")
                });
                ForceKind::Choice(list.get_ref().iter().map(|c| c.get_ref().clone()).collect())
            }
            (other, Some(list)) => {
                self.report(
                    &list.span(),
                    format!(
                        "{owner}: `choices` is only for `type = \"choice\"`, and this property \
                         is a {}",
                        other.name()
                    ),
                );
                other
            }
            (other, None) => other,
        }
    }
}

/// A TOML value in words, for messages.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => format!("the integer {n}"),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}
