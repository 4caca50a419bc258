//! The wording of the walk's messages: unknown keys, expected types and hints.

use toml::de::DeValue;

use super::fields::{Field, Hint, Kind};

/// `owner: ` or nothing at the top level.
pub(super) fn prefix(owner: &str) -> String {
    if owner.is_empty() {
        String::new()
    } else {
        format!("{owner}: ")
    }
}

/// An unknown key, with the closest known one or the list of known keys.
pub(super) fn unknown_key(owner: &str, key: &str, fields: &[Field]) -> String {
    let what = if owner.is_empty() {
        "unknown top-level key".to_owned()
    } else {
        format!("{owner}: unknown key")
    };
    let hint = crate::suggest::did_you_mean(key, fields.iter().map(|f| f.key));
    if hint.is_empty() {
        let known: Vec<String> = fields.iter().map(|f| format!("`{}`", f.key)).collect();
        format!("{what} `{key}`; known keys: {}", known.join(", "))
    } else {
        format!("{what} `{key}`{hint}")
    }
}

/// What a key of `kind` must be, in words.
pub(super) fn expected(kind: Kind, key: &str) -> String {
    match kind {
        Kind::Str(Hint::Text) => "a string".into(),
        Kind::Str(Hint::Duration) => "a duration string".into(),
        Kind::Str(Hint::Size) => "a size string".into(),
        Kind::Str(Hint::Mode) => "an octal string".into(),
        Kind::Int => "an integer".into(),
        Kind::Bool => "true or false".into(),
        Kind::Scalar => "a string, an integer or true/false".into(),
        Kind::StrList => "an array of strings".into(),
        Kind::IntList => "an array of integers".into(),
        Kind::Env => "a table of strings".into(),
        Kind::IntMap => "a table of integers".into(),
        Kind::Table(_) => format!("a table (`[{key}]` or `{key} = {{ ... }}`)"),
        Kind::Tables(_) => format!("an array of tables (`[[{key}]]`)"),
        Kind::StrOrTable(_) => format!("a string or a table (`{key} = {{ ... }}`)"),
    }
}

/// How to write a value of `kind`, given what was written instead.
pub(super) fn hint(kind: Kind, found: &DeValue<'_>) -> String {
    match (kind, found) {
        (Kind::Str(Hint::Duration), DeValue::Integer(n)) => {
            format!("; write it like \"{}s\"", n.as_str())
        }
        (Kind::Str(Hint::Duration), _) => "; write it like \"30s\", \"5m\" or \"1h 30m\"".into(),
        (Kind::Str(Hint::Size), _) => "; write it like \"64KiB\", \"16MiB\" or \"1GiB\"".into(),
        (Kind::Str(Hint::Mode), _) => "; write it like \"0644\" or \"0755\"".into(),
        (Kind::Str(Hint::Text), DeValue::Integer(_) | DeValue::Boolean(_)) => {
            "; put it in quotes".into()
        }
        (Kind::Int, DeValue::String(s)) if s.trim().parse::<i64>().is_ok() => {
            format!("; write it without quotes: {}", s.trim())
        }
        (Kind::Bool, DeValue::String(s)) if matches!(s.trim(), "true" | "false") => {
            format!("; write it without quotes: {}", s.trim())
        }
        (Kind::StrList, DeValue::String(s)) => format!("; write it like [\"{s}\"]"),
        _ => String::new(),
    }
}

/// A value as messages show it: `the integer 30`, `the string "2"`.
pub(super) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(n) => format!("the integer {}", n.as_str()),
        DeValue::Float(x) => format!("the float {}", x.as_str()),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}
