//! The walk over the parsed document that reports and removes what does not fit the tables.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeString, DeTable, DeValue};

use super::fields::{Field, Kind, ROOT};
use super::messages::{describe, expected, hint, prefix, unknown_key};
use crate::config::error::Problem;
use crate::config::position::line_col;

/// What the walk found: problems, and where placeholder names stand.
pub(in crate::config) struct Walked {
    /// Unknown keys, wrong types and missing names, in walk order.
    pub problems: Vec<Problem>,
    /// Byte offsets of placeholder names; checks of names skip them.
    pub placeholders: HashSet<usize>,
}

/// Checks `doc` against [`ROOT`], removing what does not fit.
pub(in crate::config) fn walk(doc: &mut Spanned<DeTable<'_>>, text: &str, origin: &str) -> Walked {
    let mut w = Walker {
        text,
        origin,
        out: Walked {
            problems: Vec::new(),
            placeholders: HashSet::new(),
        },
    };
    w.table("", doc.get_mut(), ROOT);
    w.out
}

struct Walker<'t> {
    text: &'t str,
    origin: &'t str,
    out: Walked,
}

impl Walker<'_> {
    fn report(&mut self, at: &Range<usize>, message: String) {
        let (line, column) = line_col(self.text, at.start);
        self.out
            .problems
            .push(Problem::at(self.origin, line, column, message));
    }

    /// Checks every key of `table`; `owner` prefixes messages (empty at the top).
    fn table(&mut self, owner: &str, table: &mut DeTable<'_>, fields: &'static [Field]) {
        let keys: Vec<Spanned<DeString<'_>>> = table.keys().cloned().collect();
        for key in keys {
            let name = key.get_ref().as_ref();
            let Some(field) = fields.iter().find(|f| f.key == name) else {
                let message = unknown_key(owner, name, fields);
                self.report(&key.span(), message);
                table.remove(name);
                continue;
            };
            let Some(value) = table.get_mut(name) else {
                continue;
            };
            if !self.value(owner, field, value) {
                table.remove(name);
            }
        }
    }

    /// Checks one value; `false` when it must go.
    fn value(&mut self, owner: &str, field: &Field, value: &mut Spanned<DeValue<'_>>) -> bool {
        let span = value.span();
        let key = field.key;
        let fits = match (field.kind, value.get_mut()) {
            (Kind::Str(_), DeValue::String(_))
            | (Kind::Int, DeValue::Integer(_))
            | (Kind::Bool, DeValue::Boolean(_))
            | (Kind::Scalar, DeValue::String(_) | DeValue::Integer(_) | DeValue::Boolean(_)) => {
                true
            }
            (Kind::StrList | Kind::IntList, DeValue::Array(items)) => {
                self.list(owner, key, field.kind, items);
                true
            }
            (Kind::Env, DeValue::Table(env)) => {
                self.env(owner, key, env);
                true
            }
            (Kind::IntMap, DeValue::Table(map)) => {
                self.int_map(owner, key, map);
                true
            }
            (Kind::StrOrTable(_), DeValue::String(_)) => true,
            (Kind::Table(fields) | Kind::StrOrTable(fields), DeValue::Table(inner)) => {
                let inner_owner = if owner.is_empty() {
                    key.to_owned()
                } else {
                    format!("{owner}, `{key}`")
                };
                self.table(&inner_owner, inner, fields);
                true
            }
            (Kind::Tables(fields), DeValue::Array(items))
                if items.iter().all(|i| i.get_ref().is_table()) =>
            {
                self.entries(owner, key, fields, items);
                true
            }
            _ => false,
        };
        if !fits {
            let message = format!(
                "{}`{key}` must be {}, not {}{}",
                prefix(owner),
                expected(field.kind, key),
                describe(value.get_ref()),
                hint(field.kind, value.get_ref())
            );
            self.report(&span, message);
            // A boolean written as a word keeps its meaning, so that a
            // quoted `local = "yes"` is not also taken for a remote worker.
            if let (Kind::Bool, DeValue::String(s)) = (field.kind, value.get_ref()) {
                let word = match s.trim() {
                    "true" | "yes" | "on" => Some(true),
                    "false" | "no" | "off" => Some(false),
                    _ => None,
                };
                if let Some(b) = word {
                    *value.get_mut() = DeValue::Boolean(b);
                    return true;
                }
            }
        }
        fits
    }

    /// The items of a list of strings or integers; mistyped ones go.
    fn list(&mut self, owner: &str, key: &str, kind: Kind, items: &mut DeArray<'_>) {
        let want_str = matches!(kind, Kind::StrList);
        let mut kept = DeArray::new();
        let old: Vec<_> = items.iter().cloned().collect();
        for (i, item) in old.into_iter().enumerate() {
            let fits = if want_str {
                item.get_ref().is_str()
            } else {
                item.get_ref().is_integer()
            };
            if fits {
                kept.push(item);
            } else {
                let message = format!(
                    "{}`{key}` holds {}, but item {} is {}",
                    prefix(owner),
                    if want_str { "strings" } else { "integers" },
                    i + 1,
                    describe(item.get_ref())
                );
                self.report(&item.span(), message);
            }
        }
        *items = kept;
    }

    /// An `env` (or `properties`) table: every value must be a string;
    /// others go.
    fn env(&mut self, owner: &str, table_key: &str, env: &mut DeTable<'_>) {
        let keys: Vec<Spanned<DeString<'_>>> = env.keys().cloned().collect();
        for key in keys {
            let name = key.get_ref().as_ref();
            let Some(value) = env.get(name) else {
                continue;
            };
            if value.get_ref().is_str() {
                continue;
            }
            let quoted = match value.get_ref() {
                DeValue::Integer(n) => format!("; quote it: {name} = \"{}\"", n.as_str()),
                DeValue::Boolean(b) => format!("; quote it: {name} = \"{b}\""),
                _ => String::new(),
            };
            let message = format!(
                "{}{} `{name}` must be a string, not {}{quoted}",
                prefix(owner),
                if table_key == "env" {
                    "env"
                } else {
                    "property"
                },
                describe(value.get_ref())
            );
            let span = value.span();
            self.report(&span, message);
            env.remove(name);
        }
    }

    /// A table of integers: every value must be one; others go.
    fn int_map(&mut self, owner: &str, key: &str, map: &mut DeTable<'_>) {
        let keys: Vec<Spanned<DeString<'_>>> = map.keys().cloned().collect();
        for k in keys {
            let name = k.get_ref().as_ref();
            let Some(value) = map.get(name) else {
                continue;
            };
            if value.get_ref().is_integer() {
                continue;
            }
            let message = format!(
                "{}`{key}` entry `{name}` must be an integer, not {}",
                prefix(owner),
                describe(value.get_ref())
            );
            let span = value.span();
            self.report(&span, message);
            map.remove(name);
        }
    }

    /// The entries of an array of tables, each named by its `name`.
    fn entries(
        &mut self,
        owner: &str,
        key: &str,
        fields: &'static [Field],
        items: &mut DeArray<'_>,
    ) {
        let what = if owner.is_empty() {
            key.to_owned()
        } else {
            format!("{owner}, {key}")
        };
        for (i, item) in items.iter_mut().enumerate() {
            let span = item.span();
            let DeValue::Table(table) = item.get_mut() else {
                continue;
            };
            let placeholder = format!("#{}", i + 1);
            let entry_owner = match table.get("name").map(|n| n.get_ref()) {
                Some(DeValue::String(name)) => format!("{what} `{name}`"),
                _ => format!("{what} {placeholder}"),
            };
            let had_name = table.contains_key("name");
            self.table(&entry_owner, table, fields);
            if !table.contains_key("name") {
                // A mistyped name was reported and removed by `table`.
                if !had_name {
                    self.report(&span, format!("{entry_owner} needs `name`"));
                }
                self.out.placeholders.insert(span.start);
                table.insert(
                    Spanned::new(span.clone(), DeString::Borrowed("name")),
                    Spanned::new(span.clone(), DeValue::String(placeholder.into())),
                );
            }
        }
    }
}
