//! A builder's force parameters (`force_properties`): what `bbctl
//! force-build` may set, checked and completed with defaults before the
//! request is queued. A builder that declares none takes any property, as
//! before the key existed. Only forces are checked: requests a scheduler
//! makes carry what the scheduler says.

use std::collections::BTreeMap;

use crate::config::{BuilderDef, ForceProperty};

use super::{Core, CoreError};

/// Why a force's properties do not fit its builder's `force_properties`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForcePropertyError {
    /// A property the builder does not declare.
    #[error("builder `{builder}` takes no force property `{name}`; it takes {}", list(.declared))]
    Unknown {
        /// The builder.
        builder: String,
        /// The property given.
        name: String,
        /// What it declares, with their types.
        declared: Vec<String>,
        /// The names it declares (for a "did you mean").
        names: Vec<String>,
    },
    /// A required property not given.
    #[error(
        "builder `{builder}` needs force property `{name}` ({kind}): add `--property {name}=...`"
    )]
    Missing {
        /// The builder.
        builder: String,
        /// The property.
        name: String,
        /// Its type, as the config writes it (`choice of "a", "b"`).
        kind: String,
    },
    /// A value that is not of the property's type.
    #[error("force property `{name}` of builder `{builder}`: {why}")]
    Invalid {
        /// The builder.
        builder: String,
        /// The property.
        name: String,
        /// What is wrong with the value.
        why: String,
    },
}

fn list(declared: &[String]) -> String {
    declared.join(", ")
}

/// A property's type in words: `int`, `choice of "a", "b"`.
fn kind_of(p: &ForceProperty) -> String {
    match &p.kind {
        crate::config::ForceKind::Choice(choices) => format!(
            "choice of {}",
            choices
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.name().to_owned(),
    }
}

/// `properties` checked against `def`'s force properties: each known and
/// of its type (in its normal form: `" 3"` becomes `"3"`), the required
/// ones present, the defaults of the absent ones added.
pub fn check_force(
    def: &BuilderDef,
    mut properties: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ForcePropertyError> {
    if def.force_properties.is_empty() {
        return Ok(properties);
    }
    for (name, value) in properties.iter_mut() {
        let Some(declared) = def.force_properties.iter().find(|p| &p.name == name) else {
            return Err(ForcePropertyError::Unknown {
                builder: def.name.clone(),
                name: name.clone(),
                declared: def
                    .force_properties
                    .iter()
                    .map(|p| format!("`{}` ({})", p.name, kind_of(p)))
                    .collect(),
                names: def
                    .force_properties
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
            });
        };
        *value = declared
            .kind
            .normalize(value)
            .map_err(|why| ForcePropertyError::Invalid {
                builder: def.name.clone(),
                name: name.clone(),
                why,
            })?;
    }
    for p in &def.force_properties {
        if properties.contains_key(&p.name) {
            continue;
        }
        match &p.default {
            Some(value) => {
                properties.insert(p.name.clone(), value.clone());
            }
            None if p.required => {
                return Err(ForcePropertyError::Missing {
                    builder: def.name.clone(),
                    name: p.name.clone(),
                    kind: kind_of(p),
                });
            }
            None => {}
        }
    }
    Ok(properties)
}

impl Core {
    /// The properties of a force of `builder`, checked against its
    /// `force_properties` and completed with their defaults. A builder
    /// the config does not know is left to the force itself to refuse.
    pub fn force_properties(
        &self,
        builder: &str,
        properties: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, CoreError> {
        match self.config.builder(builder) {
            Some(def) => Ok(check_force(def, properties)?),
            None => Ok(properties),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ForceKind;

    fn def() -> BuilderDef {
        let p = |name: &str, kind, default: Option<&str>, required| ForceProperty {
            name: name.into(),
            kind,
            default: default.map(str::to_owned),
            required,
        };
        BuilderDef {
            name: "b".into(),
            force_properties: vec![
                p("jobs", ForceKind::Int, Some("4"), false),
                p("debug", ForceKind::Bool, None, false),
                p(
                    "arch",
                    ForceKind::Choice(vec!["x86".into(), "arm".into()]),
                    None,
                    true,
                ),
                p("note", ForceKind::String, None, false),
            ],
            ..BuilderDef::default()
        }
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_added_and_values_normalized() {
        let got = check_force(&def(), props(&[("arch", "arm"), ("jobs", " 8")])).unwrap();
        assert_eq!(got, props(&[("arch", "arm"), ("jobs", "8")]));
        let got = check_force(&def(), props(&[("arch", "x86"), ("debug", "true")])).unwrap();
        assert_eq!(
            got,
            props(&[("arch", "x86"), ("debug", "true"), ("jobs", "4")])
        );
    }

    #[test]
    fn each_wrong_property_is_named_with_why() {
        let err =
            |pairs: &[(&str, &str)]| check_force(&def(), props(pairs)).unwrap_err().to_string();
        assert_eq!(
            err(&[("jobs", "8")]),
            "builder `b` needs force property `arch` (choice of \"x86\", \"arm\"): add `--property arch=...`"
        );
        assert_eq!(
            err(&[("arch", "mips")]),
            "force property `arch` of builder `b`: \"mips\" is not one of \"x86\", \"arm\""
        );
        assert_eq!(
            err(&[("arch", "arm"), ("jobs", "many")]),
            "force property `jobs` of builder `b`: \"many\" is not a whole number"
        );
        assert_eq!(
            err(&[("arch", "arm"), ("debug", "yes")]),
            "force property `debug` of builder `b`: \"yes\" is not `true` or `false`"
        );
        assert_eq!(
            err(&[("arch", "arm"), ("job", "1")]),
            "builder `b` takes no force property `job`; it takes `jobs` (int), `debug` (bool), \
             `arch` (choice of \"x86\", \"arm\"), `note` (string)"
        );
    }

    #[test]
    fn a_builder_without_declarations_takes_anything() {
        let def = BuilderDef::default();
        let any = props(&[("whatever", "x")]);
        assert_eq!(check_force(&def, any.clone()).unwrap(), any);
    }
}
